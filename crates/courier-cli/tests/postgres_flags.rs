//! The PostgreSQL flags of `courier migrate` and `courier serve`: migrate creates the schema
//! chosen by flag or by `COURIER_DATABASE` and `COURIER_SCHEMA` at this build's version (and
//! running it again changes nothing); serve keeps to the connection limit it is given.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{courier, Server};
use courier_testkit::postgres::{url, TestSchema};
use serde_json::json;
use sqlx::{Connection, PgConnection};

/// Runs `cmd`, which must succeed, and returns its one line of output.
fn one_line(cmd: &mut Command) -> String {
    let output = cmd.output().expect("run courier migrate");
    assert!(
        output.status.success(),
        "courier migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The version recorded in `schema` and whether the queue's table is there.
async fn recorded(schema: &TestSchema) -> (i64, bool) {
    let mut conn = schema.connect().await;
    sqlx::query_as("SELECT (SELECT max(version) FROM courier_migrations), to_regclass('messages') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .expect("read the migrated schema")
}

#[tokio::test]
async fn migrate_creates_the_schema_chosen_by_flag_or_environment() {
    let (by_flag, by_env) = (TestSchema::new(), TestSchema::new());
    let flagged = || {
        let mut cmd = courier();
        cmd.args(["migrate", "--database", &url(), "--schema", &by_flag.name]);
        cmd
    };
    let from_env = || {
        let mut cmd = courier();
        cmd.arg("migrate")
            .env("COURIER_DATABASE", url())
            .env("COURIER_SCHEMA", &by_env.name);
        cmd
    };
    for (schema, line) in [
        (&by_flag, one_line(&mut flagged())),
        (&by_env, one_line(&mut from_env())),
    ] {
        let (version, has_messages) = recorded(schema).await;
        assert!(has_messages, "{} has no messages table", schema.name);
        assert!(
            line.contains(&format!("(schema {})", schema.name)) && line.ends_with(&format!("schema version {version}")),
            "{line}"
        );
    }
    // Again: nothing to do, same version.
    let again = one_line(&mut from_env());
    assert!(
        again.ends_with(&format!("schema version {}", recorded(&by_env).await.0)),
        "{again}"
    );
}

/// Connections the server under test may open, its wake-up listener's and bulk-call
/// watcher's included: an engine pool of one.
const CONNECTIONS_MAX: usize = 3;
/// Queues loaded at once: each has its own enqueue, receive and ack statements in flight, so
/// a node left to its default pool (16) opens well over [`CONNECTIONS_MAX`] connections.
const QUEUES: usize = 6;
const MESSAGES_PER_QUEUE: usize = 60;

/// POSTs `body` to `url`; the answer must be `expected`. Returns the answer's JSON body.
async fn post(client: &reqwest::Client, url: String, body: serde_json::Value, expected: u16) -> serde_json::Value {
    let response = client.post(&url).json(&body).send().await.expect("the node answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, expected, "POST {url}: {text}");
    serde_json::from_str(&text).unwrap_or_default()
}

/// Enqueues [`MESSAGES_PER_QUEUE`] messages one by one into queue `q`, then receives and acks
/// them all; every call must succeed.
async fn churn_queue(base: String, q: usize) {
    let client = reqwest::Client::new();
    let queue = format!("{base}/v1/queues/pool/q{q}");
    for i in 0..MESSAGES_PER_QUEUE {
        post(
            &client,
            format!("{queue}/messages"),
            json!({ "payload": format!("m{i}") }),
            201,
        )
        .await;
    }
    let mut settled = 0;
    while settled < MESSAGES_PER_QUEUE {
        let receive = json!({"max_messages": 7, "wait_ms": 200});
        let batch = post(&client, format!("{queue}/receive"), receive, 200).await;
        for m in batch["messages"].as_array().expect("messages") {
            let id = m["id"].as_str().expect("message id");
            let lease = json!({"lease_id": m["lease"]["lease_id"]});
            post(&client, format!("{queue}/messages/{id}/ack"), lease, 200).await;
            settled += 1;
        }
    }
}

/// The most connections named `application` seen open while `running` holds.
async fn peak_connections(application: String, running: Arc<AtomicBool>) -> usize {
    let mut conn = PgConnection::connect(&url())
        .await
        .expect("connect to count connections");
    let mut peak = 0;
    while running.load(Ordering::Relaxed) {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&application)
            .fetch_one(&mut conn)
            .await
            .expect("count connections");
        peak = peak.max(usize::try_from(open).unwrap_or(usize::MAX));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_to_the_connection_limit_it_is_given() {
    let schema = TestSchema::new();
    let application = format!("courier_test_{}", schema.name);
    let separator = if url().contains('?') { '&' } else { '?' };
    let database = format!("{}{separator}application_name={application}", url());
    let scratch = tempfile::tempdir().expect("tempdir");
    let limit = CONNECTIONS_MAX.to_string();
    let server = Server::start_with(
        &scratch.path().join("node"),
        &[
            "--database",
            &database,
            "--schema",
            &schema.name,
            "--connections-max",
            &limit,
            // Calls queue for the few connections: wait for one rather than fail the test.
            "--acquire-timeout-ms",
            "9000",
        ],
    );
    let running = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn(peak_connections(application, running.clone()));
    let load: Vec<_> = (0..QUEUES)
        .map(|q| tokio::spawn(churn_queue(server.url.clone(), q)))
        .collect();
    for task in load {
        task.await.expect("every call on the small pool succeeds");
    }
    running.store(false, Ordering::Relaxed);
    let peak = watcher.await.expect("watcher");
    assert!(
        (2..=CONNECTIONS_MAX).contains(&peak),
        "the node held {peak} connections at once with --connections-max {CONNECTIONS_MAX}"
    );
}
