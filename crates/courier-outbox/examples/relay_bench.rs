//! Measures the relay on PostgreSQL: drain throughput (a backlog relayed to a publisher that
//! accepts everything at once) and commit-to-publish latency at a steady write rate.
//!
//! `cargo run --release -p courier-outbox --example relay_bench` against the test server
//! (`COURIER_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`). Settings
//! by environment: `BENCH_MESSAGES` (backlog, 100000), `BENCH_KEYS` (0 = unkeyed), `BENCH_RATE`
//! (messages/s for the latency run, 1000), `BENCH_SECONDS` (10), `BENCH_RELAYS` (1).
//! Runs in a schema of its own, dropped at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use courier_core::{Clock, OutboundMessage, PublishError, Publisher, SystemClock};
use courier_outbox::postgres::PgOutbox;
use courier_outbox::{OutboxMessage, Relay, RelayOptions};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

/// Accepts everything; counts messages and records when each was published.
#[derive(Debug, Default)]
struct Sink {
    count: AtomicUsize,
    /// Write-to-publish, from the row's `created_at` (taken before the INSERT).
    latencies_ms: Mutex<Vec<i64>>,
    published_at: Mutex<HashMap<Uuid, Instant>>,
}

#[async_trait]
impl Publisher for Sink {
    async fn publish(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PublishError>> {
        let now = SystemClock.now().as_millis();
        let instant = Instant::now();
        if let Ok(mut latencies) = self.latencies_ms.lock() {
            latencies.extend(batch.iter().map(|m| now - m.created_at.as_millis()));
        }
        if let Ok(mut published) = self.published_at.lock() {
            published.extend(batch.iter().map(|m| (m.id, instant)));
        }
        self.count.fetch_add(batch.len(), Ordering::SeqCst);
        vec![Ok(()); batch.len()]
    }

    fn name(&self) -> &str {
        "sink"
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn message(i: usize, keys: usize) -> OutboxMessage {
    let message = OutboxMessage::new("bench", vec![b'x'; 100]);
    if keys == 0 {
        message
    } else {
        message.with_key(format!("key-{}", i % keys))
    }
}

fn relays(
    outbox: &PgOutbox,
    sink: &Arc<Sink>,
    n: usize,
) -> Vec<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    (0..n)
        .map(|i| {
            let options = RelayOptions::default().relay_id(format!("bench-{i}")).batch_size(1000);
            let relay = Relay::postgres(outbox, sink.clone(), options).expect("relay");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(relay.run(async move {
                let _ = stopped.await;
            }));
            (stop, task)
        })
        .collect()
}

async fn stop(running: Vec<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>) {
    for (stop, task) in running {
        let _ = stop.send(());
        let _ = task.await;
    }
}

async fn drain(pool: &PgPool, outbox: &PgOutbox, n: usize, keys: usize, relays_n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let batch: Vec<OutboxMessage> = chunk.iter().map(|&i| message(i, keys)).collect();
        let mut tx = pool.begin().await.expect("begin");
        outbox.write(&mut tx, &batch).await.expect("write");
        tx.commit().await.expect("commit");
    }
    sqlx::query(&format!("ANALYZE {}.outbox", outbox.schema()))
        .execute(pool)
        .await
        .expect("analyze");
    let sink = Arc::new(Sink::default());
    let started = Instant::now();
    let running = relays(outbox, &sink, relays_n);
    while sink.count.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    stop(running).await;
    println!(
        "drain: {n} messages, {keys} keys, {relays_n} relay(s): {:.2} s, {:.0} msg/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

async fn latency(pool: &PgPool, outbox: &PgOutbox, rate: usize, seconds: usize, keys: usize) {
    let sink = Arc::new(Sink::default());
    let running = relays(outbox, &sink, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = rate * seconds;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let started = tokio::time::Instant::now();
    let mut writers = Vec::new();
    for i in 0..total {
        tokio::time::sleep_until(started + every * u32::try_from(i).unwrap_or(u32::MAX)).await;
        let (pool, outbox) = (pool.clone(), outbox.clone());
        writers.push(tokio::spawn(async move {
            let begun = Instant::now();
            let mut tx = pool.begin().await.expect("begin");
            let ids = outbox.write(&mut tx, &[message(i, keys)]).await.expect("write");
            outbox.commit(tx).await.expect("commit");
            (ids[0], begun, Instant::now())
        }));
    }
    let mut commits = Vec::new();
    for writer in writers {
        commits.push(writer.await.expect("writer"));
    }
    while sink.count.load(Ordering::SeqCst) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop(running).await;
    let mut latencies = sink.latencies_ms.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "latency: {total} messages at {rate}/s, {keys} keys, write-to-publish ms: p50 {} p99 {} max {}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    let published = sink.published_at.lock().map(|p| p.clone()).unwrap_or_default();
    let mut commit_ms: Vec<f64> = commits
        .iter()
        .map(|(_, begun, done)| (*done - *begun).as_secs_f64() * 1e3)
        .collect();
    let mut to_publish_ms: Vec<f64> = commits
        .iter()
        .map(|(id, _, done)| published[id].saturating_duration_since(*done).as_secs_f64() * 1e3)
        .collect();
    for (name, values) in [
        ("begin-to-commit", &mut commit_ms),
        ("commit-to-publish", &mut to_publish_ms),
    ] {
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() as f64 * q) as usize).min(values.len() - 1)];
        println!("  {name} ms: p50 {:.1} p99 {:.1} max {:.1}", at(0.5), at(0.99), at(1.0));
    }
}

#[tokio::main]
async fn main() {
    let url =
        std::env::var("COURIER_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pool = PgPoolOptions::new()
        .max_connections(32)
        .connect(&url)
        .await
        .expect("connect");
    let schema = format!("outbox_bench_{}", std::process::id());
    courier_outbox::postgres::migrate(&pool, &schema)
        .await
        .expect("migrate");
    let outbox = PgOutbox::new(pool.clone(), &schema).expect("schema");
    let keys = env("BENCH_KEYS", 0);
    drain(
        &pool,
        &outbox,
        env("BENCH_MESSAGES", 100_000),
        keys,
        env("BENCH_RELAYS", 1),
    )
    .await;
    latency(&pool, &outbox, env("BENCH_RATE", 1000), env("BENCH_SECONDS", 10), keys).await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .expect("drop schema");
}
