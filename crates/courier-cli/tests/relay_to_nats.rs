//! `courier relay` as a process, from a PostgreSQL outbox written with plain SQL (the SQL
//! contract) to a real JetStream: a relay SIGKILLed mid-run is finished by a second relay, no
//! message is lost, none is stored twice (JetStream drops re-publishes by `Nats-Msg-Id`), and
//! every key's messages arrive in write order.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Child;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::{courier, spawn_until_banner, terminate};
use courier_testkit::postgres::TestSchema;

const MESSAGES: usize = 3_000;
const KEYS: usize = 10;
const ROWS_PER_TRANSACTION: usize = 100;

fn nats_url() -> String {
    std::env::var("COURIER_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A JetStream stream of its own capturing `<prefix>.>`.
async fn test_stream() -> (jetstream::Context, String, String) {
    let url = nats_url();
    let client = async_nats::connect(url.as_str())
        .await
        .unwrap_or_else(|e| panic!("NATS (JetStream) is not reachable at {url}: {e}; start `nats-server -js`"));
    let js = jetstream::new(client);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (name, prefix) = (format!("courier_relay_test_{id}"), format!("courier-relay-test.{id}"));
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .expect("create a JetStream stream");
    (js, name, prefix)
}

async fn stored(js: &jetstream::Context, name: &str) -> u64 {
    let mut stream = js.get_stream(name).await.expect("stream");
    stream.info().await.expect("stream info").state.messages
}

/// Writes the messages as an application in another language would: plain INSERTs into the
/// outbox table, committed in transactions of 100. Payload `<key>:<n>`, n counting per key.
async fn write_with_plain_sql(schema: &TestSchema, prefix: &str) {
    let mut conn = schema.connect().await;
    let mut next = [0usize; KEYS];
    for chunk in 0..MESSAGES / ROWS_PER_TRANSACTION {
        let mut tx = sqlx::Connection::begin(&mut conn).await.expect("begin");
        for i in 0..ROWS_PER_TRANSACTION {
            let key = (chunk * ROWS_PER_TRANSACTION + i) % KEYS;
            let n = next[key];
            next[key] += 1;
            sqlx::query(&format!(
                "INSERT INTO \"{}\".outbox (destination, key, payload) VALUES ($1, $2, $3)",
                schema.name
            ))
            .bind(format!("{prefix}.orders"))
            .bind(format!("k{key}"))
            .bind(format!("k{key}:{n}").into_bytes())
            .execute(&mut *tx)
            .await
            .expect("insert an outbox row");
        }
        tx.commit().await.expect("commit");
    }
}

fn start_relay(schema: &TestSchema, id: &str, log: &std::path::Path) -> Child {
    let url = courier_testkit::postgres::url();
    let nats = nats_url();
    let args = [
        "relay",
        "--database",
        &url,
        "--schema",
        &schema.name,
        "--to",
        &nats,
        "--relay-id",
        id,
        "--batch-size",
        "50",
        "--claim-ms",
        "1000",
    ];
    let (child, banner) = spawn_until_banner(&args, log);
    assert!(
        banner.starts_with(&format!("courier relay {id} publishing")),
        "{banner}"
    );
    child
}

async fn unpublished_rows(conn: &mut sqlx::PgConnection, schema: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema}\".outbox WHERE status <> 'published'"
    ))
    .fetch_one(conn)
    .await
    .expect("count pending")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_run_is_finished_by_another_and_nothing_is_lost_or_reordered() {
    let schema = TestSchema::new();
    let scratch = tempfile::tempdir().expect("temp dir");
    let url = courier_testkit::postgres::url();
    let migrated = courier()
        .args(["migrate", "--outbox", "--database", &url, "--schema", &schema.name])
        .output()
        .expect("run migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let (js, stream_name, prefix) = test_stream().await;
    write_with_plain_sql(&schema, &prefix).await;

    let mut first = start_relay(&schema, "relay-a", &scratch.path().join("a.log"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored(&js, &stream_name).await < (MESSAGES / 10) as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "relay A published too little in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().expect("SIGKILL relay A");
    first.wait().expect("reap relay A");
    let at_kill = stored(&js, &stream_name).await;
    assert!(
        at_kill < MESSAGES as u64,
        "relay A was killed mid-run ({at_kill} published)"
    );

    let mut second = start_relay(&schema, "relay-b", &scratch.path().join("b.log"));
    let mut conn = schema.connect().await;
    let mut done = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done {
        assert!(std::time::Instant::now() < deadline, "relay B did not finish in 60 s");
        done = unpublished_rows(&mut conn, &schema.name).await == 0;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(terminate(&mut second), Some(0), "relay B exits 0 on SIGTERM");

    let messages = read_all(&js, &stream_name).await;
    assert_eq!(messages.len(), MESSAGES, "every row stored once");
    let ids: HashSet<String> = messages.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), MESSAGES, "no id stored twice");
    let mut last_of_key: HashMap<String, i64> = HashMap::new();
    for (_, payload) in &messages {
        let (key, n) = payload.split_once(':').expect("payload key:n");
        let n: i64 = n.parse().expect("n");
        let last = last_of_key.entry(key.to_owned()).or_insert(-1);
        assert_eq!(n, *last + 1, "key {key}: message {n} came after {last}");
        *last = n;
    }
    js.delete_stream(&stream_name).await.expect("delete test stream");
}

/// Every stored message's `Nats-Msg-Id` and payload, in stream order.
async fn read_all(js: &jetstream::Context, name: &str) -> Vec<(String, String)> {
    let mut stream = js.get_stream(name).await.expect("stream");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut out = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        let m = stream.get_raw_message(sequence).await.expect("stored message");
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .expect("Nats-Msg-Id header");
        out.push((id, String::from_utf8_lossy(&m.payload).into_owned()));
    }
    out
}
