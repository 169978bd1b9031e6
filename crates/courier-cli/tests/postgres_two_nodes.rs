//! Two `courier serve` processes on one PostgreSQL schema, as a scaled-out deployment runs:
//! producers on one node, consumers on both. Every message is delivered, no message is leased
//! by both nodes at once, and a node killed mid-load loses nothing: its leases expire and the
//! other node delivers those messages.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_until, Server};
use courier_testkit::postgres::TestSchema;
use serde_json::{json, Value};

const QUEUE: &str = "/v1/queues/multi/orders";

/// One delivery as a consumer saw it.
#[derive(Debug, Clone)]
struct Delivery {
    payload: String,
    id: String,
    lease_id: String,
    fencing_token: u64,
    attempt: u64,
}

fn deliveries(batch: &Value) -> Vec<Delivery> {
    let messages = batch["messages"].as_array().expect("messages array");
    messages
        .iter()
        .map(|m| Delivery {
            payload: m["payload"].as_str().expect("utf8 payload").to_owned(),
            id: m["id"].as_str().expect("id").to_owned(),
            lease_id: m["lease"]["lease_id"].as_str().expect("lease id").to_owned(),
            fencing_token: m["lease"]["fencing_token"].as_u64().expect("fencing token"),
            attempt: m["lease"]["attempt"].as_u64().expect("attempt"),
        })
        .collect()
}

/// How long a test client waits before repeating a call the node answered 503: a loaded
/// 2-core machine may take longer than the 2 s acquire timeout to hand out a connection.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// Receives up to `max` messages from the node at `base`; `None` once the node is unreachable.
async fn receive(client: &reqwest::Client, base: &str, max: usize, lease_ms: u64) -> Option<Vec<Delivery>> {
    let body = json!({"max_messages": max, "wait_ms": 500, "lease_ms": lease_ms, "payload_encoding": "utf8"});
    loop {
        let response = client
            .post(format!("{base}{QUEUE}/receive"))
            .json(&body)
            .send()
            .await
            .ok()?;
        match response.status().as_u16() {
            200 => return Some(deliveries(&response.json().await.ok()?)),
            503 => tokio::time::sleep(RETRY_AFTER).await,
            other => panic!("receive on {base} answered {other}"),
        }
    }
}

/// Acks one delivery; returns the HTTP status, or `None` once the node is unreachable.
async fn ack(client: &reqwest::Client, base: &str, d: &Delivery) -> Option<u16> {
    let url = format!("{base}{QUEUE}/messages/{}/ack", d.id);
    let response = client
        .post(url)
        .json(&json!({"lease_id": d.lease_id}))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// Enqueues one message, repeating it while the node answers 503; `true` once it replied 201.
async fn send(client: &reqwest::Client, base: &str, payload: &str) -> bool {
    loop {
        let sent = client
            .post(format!("{base}{QUEUE}/messages"))
            .json(&json!({ "payload": payload }))
            .send()
            .await;
        match sent.map(|r| r.status().as_u16()) {
            Ok(201) => return true,
            Ok(503) => tokio::time::sleep(RETRY_AFTER).await,
            _ => return false,
        }
    }
}

/// Whether the queue on `base` has nothing left: no ready, delayed, in-flight or blocked message,
/// and none dead-lettered (a message that ran out of attempts is not delivered, it is lost to
/// these tests).
async fn drained(client: &reqwest::Client, base: &str) -> bool {
    let Ok(response) = client.get(format!("{base}{QUEUE}/stats")).send().await else {
        return false;
    };
    let Ok(stats) = response.json::<Value>().await else {
        return false;
    };
    ["ready", "delayed", "in_flight", "blocked", "dead_lettered"]
        .iter()
        .all(|field| stats[*field].as_u64() == Some(0))
}

/// Waits until every payload in `expected` was acked, or its ack's outcome is unknown (the node
/// died or answered 503 mid-ack) and the queue holds nothing any more: an ack that did not
/// commit leaves its message to come back when the lease runs out, and be acked then.
async fn wait_all_settled(client: &reqwest::Client, base: &str, ledger: &Ledger, expected: &HashSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let settled = {
            let acked = ledger.acked.lock().expect("ledger");
            let unknown = ledger.unknown.lock().expect("ledger");
            expected.iter().all(|p| acked.contains(p) || unknown.contains(p))
        };
        if settled && drained(client, base).await {
            return;
        }
        if Instant::now() >= deadline {
            let acked = ledger.acked.lock().expect("ledger");
            let missing: Vec<_> = expected.iter().filter(|p| !acked.contains(*p)).take(5).collect();
            panic!("messages never settled (lost?): {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the consumers saw, shared between their tasks.
#[derive(Default)]
struct Ledger {
    /// Payload → the deliveries of it, with the node that made each.
    delivered: Mutex<HashMap<String, Vec<(String, Delivery)>>>,
    /// Payloads whose ack returned success.
    acked: Mutex<HashSet<String>>,
    /// Payloads whose ack got no answer or a 503: it may or may not have committed.
    unknown: Mutex<HashSet<String>>,
}

impl Ledger {
    fn acked_count(&self) -> usize {
        self.acked.lock().expect("ledger").len()
    }
}

/// Receives and acks on `base` until `done` is set or the node goes away. Every ack must succeed:
/// a 409 would mean another node took the lease while this one still held it.
async fn consume(base: String, lease_ms: u64, ledger: Arc<Ledger>, done: Arc<AtomicBool>) {
    let client = reqwest::Client::new();
    while !done.load(Ordering::Relaxed) {
        let Some(batch) = receive(&client, &base, 10, lease_ms).await else {
            return;
        };
        for d in batch {
            ledger
                .delivered
                .lock()
                .expect("ledger")
                .entry(d.payload.clone())
                .or_default()
                .push((base.clone(), d.clone()));
            match ack(&client, &base, &d).await {
                Some(200) => {
                    ledger.acked.lock().expect("ledger").insert(d.payload.clone());
                }
                Some(503) => {
                    ledger.unknown.lock().expect("ledger").insert(d.payload.clone());
                }
                Some(status) => panic!("ack of {} on {base} refused with {status}: a lease was lost", d.id),
                None => {
                    ledger.unknown.lock().expect("ledger").insert(d.payload.clone());
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_on_one_node_consumers_on_both_every_message_once() {
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 250;
    let schema = TestSchema::new();
    let scratch = tempfile::tempdir().expect("tempdir");
    let a = Server::start_postgres(&scratch.path().join("a"), &schema.name);
    let b = Server::start_postgres(&scratch.path().join("b"), &schema.name);

    let ledger = Arc::new(Ledger::default());
    let done = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = [&a.url, &a.url, &b.url, &b.url]
        .into_iter()
        .map(|base| tokio::spawn(consume(base.clone(), 60_000, ledger.clone(), done.clone())))
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let base = a.url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for i in 0..PER_PRODUCER {
                    assert!(
                        send(&client, &base, &format!("p{p}-{i}")).await,
                        "enqueue on node A failed"
                    );
                }
            })
        })
        .collect();
    for p in producers {
        p.await.expect("producer");
    }
    let total = PRODUCERS * PER_PRODUCER;
    let expected: HashSet<String> = (0..PRODUCERS)
        .flat_map(|p| (0..PER_PRODUCER).map(move |i| format!("p{p}-{i}")))
        .collect();
    wait_all_settled(&reqwest::Client::new(), &b.url, &ledger, &expected).await;
    done.store(true, Ordering::Relaxed);
    for c in consumers {
        c.await.expect("consumer");
    }

    let delivered = ledger.delivered.lock().expect("ledger");
    let unknown = ledger.unknown.lock().expect("ledger").clone();
    // An ack answered 503 may not have committed; its message then came back, rightly.
    let twice: Vec<_> = delivered
        .iter()
        .filter(|(payload, ds)| ds.len() > 1 && !unknown.contains(*payload))
        .collect();
    assert!(
        twice.is_empty(),
        "with 60 s leases and no crash no message may be delivered twice: {:?}",
        twice.first()
    );
    let on_b = delivered.values().flatten().filter(|(node, _)| *node == b.url).count();
    println!(
        "two nodes: {total} sent to A, {} delivered by A, {on_b} by B, 0 twice",
        total - on_b
    );
    assert_eq!(delivered.len(), total, "every message delivered");
    assert!(
        on_b > 0 && on_b < total,
        "both nodes' consumers took part ({on_b} on B)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_node_mid_load_loses_nothing() {
    const HELD_LEASE_MS: u64 = 2_000;
    let started = Instant::now();
    let schema = TestSchema::new();
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut a = Server::start_postgres(&scratch.path().join("a"), &schema.name);
    let b = Server::start_postgres(&scratch.path().join("b"), &schema.name);
    let client = reqwest::Client::new();

    // Producers spread over both nodes, as behind a load balancer; once A is gone they use B.
    let enqueued = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (nodes, enqueued, stop) = ([a.url.clone(), b.url.clone()], enqueued.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut a_alive = true;
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let payload = format!("p{p}-{i}");
                    let node = if a_alive && i % 2 == 0 { &nodes[0] } else { &nodes[1] };
                    if send(&client, node, &payload).await {
                        enqueued.lock().expect("enqueued").insert(payload);
                    } else if node == &nodes[0] {
                        // A died mid-request: that enqueue's fate is unknown; it is not counted.
                        a_alive = false;
                    } else {
                        panic!("enqueue on the surviving node B failed");
                    }
                }
            })
        })
        .collect();
    let ledger = Arc::new(Ledger::default());
    let done = Arc::new(AtomicBool::new(false));
    // Short leases, so what A's own consumer held when it died comes back soon; long enough
    // that a live consumer always acks within its lease.
    let consumers: Vec<_> = [&a.url, &b.url]
        .into_iter()
        .map(|base| tokio::spawn(consume(base.clone(), 5_000, ledger.clone(), done.clone())))
        .collect();

    wait_until("load builds up", Duration::from_secs(30), || {
        ledger.acked_count() >= 300
    })
    .await;
    // A consumer on A is mid-work on these when A dies: nobody will ack them on A.
    let held = receive(&client, &a.url, 20, HELD_LEASE_MS).await.expect("A is up");
    assert!(!held.is_empty(), "node A leased nothing to hold");
    a.kill();
    wait_until("producers run on B alone for a while", Duration::from_secs(30), || {
        enqueued.lock().expect("enqueued").len() >= 1_000
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.expect("producer");
    }
    let enqueued = enqueued.lock().expect("enqueued").clone();
    wait_all_settled(&client, &b.url, &ledger, &enqueued).await;
    done.store(true, Ordering::Relaxed);
    for c in consumers {
        c.await.expect("consumer");
    }

    let delivered = ledger.delivered.lock().expect("ledger").clone();
    let undelivered: Vec<_> = enqueued
        .iter()
        .filter(|p| !delivered.contains_key(*p))
        .take(5)
        .collect();
    assert!(undelivered.is_empty(), "accepted but never delivered: {undelivered:?}");
    for h in &held {
        let later = delivered
            .get(&h.payload)
            .and_then(|ds| ds.iter().find(|(node, _)| *node == b.url))
            .map(|(_, d)| d)
            .unwrap_or_else(|| panic!("message {} held by the dead node was never delivered by B", h.id));
        assert!(later.fencing_token > h.fencing_token, "B's lease must fence A's");
        assert!(later.attempt > h.attempt, "the expired lease counts as an attempt");
        // A's lease is dead: an ack presenting it is refused, as stale while the message lives
        // (409) or as unknown once B's consumer has acked it (404); never accepted.
        let status = ack(&client, &b.url, h).await;
        assert!(
            matches!(status, Some(404 | 409)),
            "ack with the dead node's lease gave {status:?}"
        );
    }
    let duplicates: usize = delivered.values().map(|ds| ds.len() - 1).sum();
    println!(
        "node crash: {} enqueued (success replies), {} held by A when killed, 0 lost, {duplicates} delivered twice, \
         {:.1} s",
        enqueued.len(),
        held.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        a.log_text().contains("serving"),
        "node A really served before it was killed"
    );
}
