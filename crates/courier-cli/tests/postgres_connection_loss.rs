//! `courier serve` on PostgreSQL when the database goes away mid-load: requests fail fast with
//! 503 and a JSON error naming the problem, the node keeps running (healthz 200, readyz 503),
//! and it serves again by itself once the database is back, with nothing acknowledged lost.
//! The database is a throwaway cluster this test starts and stops, never the shared server; it
//! runs with fsync off, so "nothing lost" here means across a server restart, not power loss.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_until, Server};
use courier_testkit::process::ThrowawayPostgres;
use serde_json::{json, Value};

const MESSAGES: &str = "/v1/queues/outage/orders/messages";
/// A request while the database is down must be answered within this.
const FAIL_FAST: Duration = Duration::from_secs(5);
/// How long the node may take to serve again once the database is back.
const RECOVERY_MAX: Duration = Duration::from_secs(30);

/// Replies the producer saw, by kind.
#[derive(Default)]
struct Outcomes {
    enqueued: Mutex<HashSet<String>>,
    unavailable: Mutex<Vec<Duration>>,
}

/// Sends numbered messages until `stop`; any reply but 201 or 503 fails the test.
async fn produce(base: String, outcomes: Arc<Outcomes>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::new();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let payload = format!("m{i}");
        let started = Instant::now();
        let response = client
            .post(format!("{base}{MESSAGES}"))
            .json(&json!({ "payload": payload }))
            .send()
            .await
            .expect("the node keeps answering while its database is down");
        match response.status().as_u16() {
            201 => {
                outcomes.enqueued.lock().expect("outcomes").insert(payload);
            }
            503 => {
                outcomes.unavailable.lock().expect("outcomes").push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!(
                "enqueue answered {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
}

async fn status_of(client: &reqwest::Client, url: String) -> (u16, Value) {
    let response = client.get(url).send().await.expect("the node answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Runs a pg_ctl step off the runtime's workers, so the node's clients keep being polled.
async fn blocking(pg: &Arc<ThrowawayPostgres>, step: fn(&ThrowawayPostgres)) {
    let pg = pg.clone();
    tokio::task::spawn_blocking(move || step(&pg))
        .await
        .expect("pg_ctl step");
}

/// Receives and acks everything; returns the payloads seen.
async fn drain(client: &reqwest::Client, base: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    loop {
        let body = json!({"max_messages": 500, "wait_ms": 0, "payload_encoding": "utf8"});
        let response = client
            .post(format!("{base}/v1/queues/outage/orders/receive"))
            .json(&body)
            .send()
            .await
            .expect("receive");
        assert_eq!(response.status().as_u16(), 200);
        let batch: Value = response.json().await.expect("receive JSON");
        let messages = batch["messages"].as_array().expect("messages").clone();
        if messages.is_empty() {
            return seen;
        }
        let receipts: Vec<_> = messages
            .iter()
            .map(|m| json!({"message_id": m["id"], "lease_id": m["lease"]["lease_id"]}))
            .collect();
        seen.extend(
            messages
                .iter()
                .map(|m| m["payload"].as_str().expect("payload").to_owned()),
        );
        let acked = client
            .post(format!("{base}{MESSAGES}/ack"))
            .json(&json!({ "receipts": receipts }))
            .send()
            .await
            .expect("ack");
        assert!(acked.status().is_success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_gives_503_then_the_node_recovers_by_itself() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(ThrowawayPostgres::start)
            .await
            .expect("start cluster"),
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(&scratch.path().join("node"), &["--database", &pg.url()]);
    let client = reqwest::Client::new();

    let outcomes = Arc::new(Outcomes::default());
    let stop = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn(produce(server.url.clone(), outcomes.clone(), stop.clone()));
    wait_until("load builds up", Duration::from_secs(20), || {
        outcomes.enqueued.lock().expect("outcomes").len() >= 200
    })
    .await;

    blocking(&pg, ThrowawayPostgres::stop).await;
    wait_until("the producer sees 503s", Duration::from_secs(20), || {
        outcomes.unavailable.lock().expect("outcomes").len() >= 3
    })
    .await;
    let (status, body) = status_of(&client, format!("{}/v1/queues/outage/orders/stats", server.url)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("postgres"), "the error names the database: {message}");
    assert_eq!(status_of(&client, format!("{}/healthz", server.url)).await.0, 200);
    assert_eq!(status_of(&client, format!("{}/readyz", server.url)).await.0, 503);
    let enqueued_before_restart = outcomes.enqueued.lock().expect("outcomes").len();

    blocking(&pg, ThrowawayPostgres::start_again).await;
    wait_until("enqueues succeed again", RECOVERY_MAX, || {
        outcomes.enqueued.lock().expect("outcomes").len() >= enqueued_before_restart + 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    producer.await.expect("producer");
    assert_eq!(status_of(&client, format!("{}/readyz", server.url)).await.0, 200);

    let seen = drain(&client, &server.url).await;
    let enqueued = outcomes.enqueued.lock().expect("outcomes").clone();
    let lost: Vec<_> = enqueued.difference(&seen).collect();
    let failures = outcomes.unavailable.lock().expect("outcomes").clone();
    let slowest = failures.iter().max().copied().unwrap_or_default();
    println!(
        "outage: {} enqueued, {} answered 503 (slowest {slowest:?}), {} lost",
        enqueued.len(),
        failures.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged enqueues lost: {lost:?}");
    assert!(slowest < FAIL_FAST, "a 503 took {slowest:?}");
}
