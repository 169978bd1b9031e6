//! Crash test: SIGKILL `courier serve` while several clients enqueue, restart it on the same
//! data dir, and check that every enqueue that got a success reply is delivered.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CLIENTS: usize = 8;

fn start_server(data_dir: &Path, port: u16) -> Child {
    // No COURIER_* settings from the developer's shell.
    common::courier()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn courier serve")
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} did not become healthy");
}

/// Sends unique payloads until told to stop; returns the payloads the server acknowledged.
async fn producer(base: String, client_no: usize, stop: Arc<AtomicBool>, acked: Arc<Mutex<HashSet<String>>>) {
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/queues/crash/orders/messages");
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let payload = format!("c{client_no}-{i}");
        i += 1;
        let sent = client.post(&url).json(&json!({ "payload": payload })).send().await;
        match sent {
            Ok(r) if r.status().as_u16() == 201 => {
                acked.lock().unwrap().insert(payload);
            }
            Ok(r) => panic!("enqueue refused with {} before the crash", r.status()),
            // The server is gone: this enqueue's fate is unknown, and so are later ones.
            Err(_) => return,
        }
    }
}

async fn drain(client: &reqwest::Client, base: &str) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    loop {
        let batch: Value = client
            .post(format!("{base}/v1/queues/crash/orders/receive"))
            .json(&json!({"max_messages": 1000, "wait_ms": 0, "payload_encoding": "utf8"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let messages = batch["messages"].as_array().unwrap().clone();
        if messages.is_empty() {
            return seen;
        }
        let mut receipts = Vec::new();
        for m in &messages {
            *seen.entry(m["payload"].as_str().unwrap().to_owned()).or_default() += 1;
            receipts.push(json!({"message_id": m["id"], "lease_id": m["lease"]["lease_id"]}));
        }
        let acked = client
            .post(format!("{base}/v1/queues/crash/orders/messages/ack"))
            .json(&json!({ "receipts": receipts }))
            .send()
            .await
            .unwrap();
        assert!(acked.status().is_success(), "batch ack failed: {}", acked.status());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let port = courier_testkit::process::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = start_server(dir.path(), port);
    wait_healthy(&client, &base).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let producers: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(producer(base.clone(), n, stop.clone(), acked.clone())))
        .collect();
    // Let the stream build up, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().unwrap().len() < 2_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().expect("SIGKILL the server");
    server.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "too few enqueues before the crash to mean anything: {}",
        acked.len()
    );

    let mut server = start_server(dir.path(), port);
    wait_healthy(&client, &base).await;
    let seen = drain(&client, &base).await;
    server.kill().unwrap();
    server.wait().unwrap();

    let lost: Vec<_> = acked.iter().filter(|p| !seen.contains_key(*p)).collect();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let unacknowledged_but_kept = seen.keys().filter(|p| !acked.contains(*p)).count();
    println!(
        "crash test: {} acknowledged enqueues, {} delivered after restart, {} lost, {} duplicates, \
         {} kept whose reply was cut off by the crash",
        acked.len(),
        seen.len(),
        lost.len(),
        duplicates,
        unacknowledged_but_kept
    );
    assert!(
        lost.is_empty(),
        "acknowledged enqueues lost in the crash: {:?}",
        &lost[..lost.len().min(10)]
    );
    assert!(
        unacknowledged_but_kept <= CLIENTS,
        "at most one in-flight enqueue per client can survive unreplied"
    );
}
