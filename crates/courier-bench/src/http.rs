//! End-to-end run through the HTTP API: a real server on a loopback port, half the clients
//! sending single messages, half receiving one message at a time and acking it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use courier_core::QueueEngine;
use courier_server::{AppState, ServerConfig};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::latency::{age_of, histogram, stamped_payload, Percentiles};
use crate::{BenchError, Throughput};

#[derive(Deserialize)]
struct Received {
    messages: Vec<ReceivedMessage>,
}

#[derive(Deserialize)]
struct ReceivedMessage {
    id: String,
    payload: String,
    lease: ReceivedLease,
}

#[derive(Deserialize)]
struct ReceivedLease {
    lease_id: String,
}

fn task_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Task(e.to_string())
}

/// Runs `messages` through a server over `engine` with `clients` concurrent HTTP clients.
pub(crate) async fn single_message(
    engine: Arc<dyn QueueEngine>,
    messages: usize,
    clients: usize,
    payload_bytes: usize,
) -> Result<Throughput, BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/v1/queues/bench/http", listener.local_addr()?);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let state = AppState::new(engine.clone(), ServerConfig::default());
    let server = tokio::spawn(courier_server::serve(listener, state, async {
        let _ = stop_rx.await;
    }));

    let started = Instant::now();
    let producers = (clients / 2).max(1);
    let consumers = clients.saturating_sub(producers).max(1);
    let received = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for p in 0..producers {
        let count = messages / producers + usize::from(p < messages % producers);
        tasks.spawn(produce(base.clone(), count, payload_bytes));
    }
    for _ in 0..consumers {
        tasks.spawn(consume(base.clone(), messages, received.clone()));
    }
    let mut latencies = histogram();
    while let Some(joined) = tasks.join_next().await {
        let h = joined.map_err(task_error)??;
        latencies.add(&h).map_err(task_error)?;
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    server.await.map_err(task_error)??;
    Ok(Throughput {
        messages,
        seconds: elapsed.as_secs_f64(),
        msgs_per_sec: messages as f64 / elapsed.as_secs_f64(),
        latency: Percentiles::of(&latencies),
    })
}

async fn produce(base: String, count: usize, payload_bytes: usize) -> Result<Histogram<u64>, BenchError> {
    let client = reqwest::Client::new();
    let url = format!("{base}/messages/raw");
    for _ in 0..count {
        let response = client
            .post(&url)
            .header("content-type", "text/plain")
            .body(stamped_payload(payload_bytes))
            .send()
            .await
            .map_err(task_error)?;
        if !response.status().is_success() {
            return Err(task_error(format!("enqueue answered {}", response.status())));
        }
    }
    Ok(histogram())
}

async fn consume(base: String, total: usize, received: Arc<AtomicUsize>) -> Result<Histogram<u64>, BenchError> {
    let client = reqwest::Client::new();
    let mut latencies = histogram();
    let body = serde_json::json!({"max_messages": 1, "wait_ms": 100, "payload_encoding": "utf8"});
    while received.load(Ordering::Relaxed) < total {
        let response = client
            .post(format!("{base}/receive"))
            .json(&body)
            .send()
            .await
            .map_err(task_error)?;
        if !response.status().is_success() {
            return Err(task_error(format!("receive answered {}", response.status())));
        }
        let batch: Received = response.json().await.map_err(task_error)?;
        for m in batch.messages {
            if let Some(age) = age_of(m.payload.as_bytes()) {
                latencies.saturating_record(u64::try_from(age.as_micros()).unwrap_or(u64::MAX));
            }
            let ack = client
                .post(format!("{base}/messages/{}/ack", m.id))
                .json(&serde_json::json!({"lease_id": m.lease.lease_id}))
                .send()
                .await
                .map_err(task_error)?;
            if !ack.status().is_success() {
                return Err(task_error(format!("ack answered {}", ack.status())));
            }
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(latencies)
}
