//! `courier bench-relay`: the outbox relay on PostgreSQL, to NATS JetStream and to Courier's own
//! queue (a PostgreSQL engine in this process). For each destination: the publisher alone as
//! the raw baseline (the same messages in the same batches, no outbox), a backlog drained by
//! one relay, and commit-to-publish latency at a steady rate of single-message transactions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use courier_core::{Namespace, OutboundMessage, PublishError, Publisher, QueueEngine, Timestamp};
use courier_nats::{NatsConfig, NatsPublisher, StreamSpec};
use courier_outbox::postgres::PgOutbox;
use courier_outbox::{OutboxMessage, QueuePublisher, Relay, RelayOptions};
use courier_postgres::{PostgresEngine, PostgresOptions};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use crate::latency::{histogram, Percentiles};
use crate::BenchError;

/// Rows per transaction when the backlog is written (not timed).
const BACKLOG_ROWS_PER_TRANSACTION: usize = 1_000;
/// Messages per publish call of the baseline: the relay's batch size.
const BATCH: usize = 500;
/// Longest a stage may take before the benchmark gives up on it.
const STAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct RelayBenchConfig {
    /// PostgreSQL holding the outbox (and the Courier queue destination); every stage runs in
    /// a fresh schema, dropped afterwards.
    pub database: String,
    /// NATS server with JetStream; the run creates a stream of its own and deletes it.
    pub nats: String,
    /// Messages in each drained backlog and in each baseline.
    pub messages: usize,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Distinct ordering keys (0: unkeyed).
    pub keys: usize,
    /// Rate of the latency run, single-message transactions per second.
    pub latency_rate: u32,
    /// Length of the latency run.
    pub latency_duration: Duration,
}

/// One destination's figures.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationReport {
    /// Where the messages went.
    pub destination: String,
    /// The publisher alone, same messages and batches, no outbox: messages per second.
    pub baseline_msgs_per_sec: f64,
    /// A backlog drained by one relay: messages per second.
    pub relay_msgs_per_sec: f64,
    /// Commit-to-publish latency at `latency_rate`.
    pub commit_to_publish: Percentiles,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RelayReport {
    /// Messages, payload size, keys and the latency rate.
    pub messages: usize,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Ordering keys.
    pub keys: usize,
    /// Rate of the latency runs.
    pub latency_rate: u32,
    /// NATS JetStream, then Courier's queue.
    pub destinations: Vec<DestinationReport>,
}

/// Runs every stage; what the run created (schemas, the JetStream stream) is removed
/// afterwards, also when a stage fails.
pub async fn run_relay(config: &RelayBenchConfig) -> Result<RelayReport, BenchError> {
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(pg_options(&config.database)?.connect_options())
        .await?;
    let stream = format!("courier_bench_{run}");
    let measured = measure(config, &run, &stream).await;
    let cleaned = clean_up(config, &admin, &run, &stream).await;
    let destinations = measured?;
    cleaned?;
    Ok(RelayReport {
        messages: config.messages,
        payload_bytes: config.payload_bytes,
        keys: config.keys,
        latency_rate: config.latency_rate,
        destinations,
    })
}

async fn measure(config: &RelayBenchConfig, run: &str, stream: &str) -> Result<Vec<DestinationReport>, BenchError> {
    let subject_prefix = format!("courier-bench.{run}");
    let mut nats_config = NatsConfig::from_url(&config.nats).map_err(task)?;
    nats_config.stream = Some(StreamSpec {
        name: stream.to_owned(),
        subjects: vec![format!("{subject_prefix}.>")],
    });
    let nats: Arc<dyn Publisher> = Arc::new(NatsPublisher::connect(nats_config).await.map_err(task)?);
    let to_nats = measure_destination(config, run, "nats", nats, &format!("{subject_prefix}.orders")).await?;

    let queue_schema = format!("courier_bench_{run}_queue");
    let engine: Arc<dyn QueueEngine> =
        Arc::new(PostgresEngine::open(pg_options(&config.database)?.schema(&queue_schema).map_err(task)?).await?);
    let namespace = Namespace::new("bench").map_err(task)?;
    let queue: Arc<dyn Publisher> = Arc::new(QueuePublisher::new(engine.clone(), namespace));
    let to_queue = measure_destination(config, run, "queue", queue, "orders").await;
    engine.shutdown().await?;
    Ok(vec![to_nats, to_queue?])
}

async fn measure_destination(
    config: &RelayBenchConfig,
    run: &str,
    name: &str,
    publisher: Arc<dyn Publisher>,
    destination: &str,
) -> Result<DestinationReport, BenchError> {
    let baseline = baseline(config, publisher.as_ref(), destination).await?;
    tracing::info!(name, baseline, "publisher baseline done");
    let outbox = fresh_outbox(config, &format!("courier_bench_{run}_{name}_drain")).await?;
    let drained = drain(config, &outbox, publisher.clone(), destination).await?;
    tracing::info!(name, drained, "relay drain done");
    let outbox = fresh_outbox(config, &format!("courier_bench_{run}_{name}_paced")).await?;
    let commit_to_publish = paced(config, &outbox, publisher.clone(), destination).await?;
    Ok(DestinationReport {
        destination: publisher.name().to_owned(),
        baseline_msgs_per_sec: baseline,
        relay_msgs_per_sec: drained,
        commit_to_publish,
    })
}

fn message(config: &RelayBenchConfig, destination: &str, i: usize) -> OutboxMessage {
    let m = OutboxMessage::new(destination, vec![b'x'; config.payload_bytes]);
    if config.keys == 0 {
        m
    } else {
        m.with_key(format!("key-{}", i % config.keys))
    }
}

/// The publisher alone: the same messages in batches of [`BATCH`], one batch at a time.
async fn baseline(config: &RelayBenchConfig, publisher: &dyn Publisher, destination: &str) -> Result<f64, BenchError> {
    let started = Instant::now();
    for chunk_start in (0..config.messages).step_by(BATCH) {
        let batch: Vec<OutboundMessage> = (chunk_start..(chunk_start + BATCH).min(config.messages))
            .map(|i| {
                let m = message(config, destination, i);
                OutboundMessage {
                    id: Uuid::now_v7(),
                    destination: m.destination,
                    key: m.key,
                    payload: m.payload,
                    headers: m.headers,
                    content_type: m.content_type,
                    created_at: Timestamp(0),
                }
            })
            .collect();
        let results = publisher.publish(&batch).await;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            return Err(BenchError::Task(format!("baseline publish failed: {e}")));
        }
    }
    Ok(rate(config.messages, started.elapsed()))
}

/// A backlog of `messages` rows (written untimed), then one relay until every row is published.
async fn drain(
    config: &RelayBenchConfig,
    outbox: &PgOutbox,
    publisher: Arc<dyn Publisher>,
    destination: &str,
) -> Result<f64, BenchError> {
    for chunk_start in (0..config.messages).step_by(BACKLOG_ROWS_PER_TRANSACTION) {
        let rows: Vec<OutboxMessage> = (chunk_start..(chunk_start + BACKLOG_ROWS_PER_TRANSACTION).min(config.messages))
            .map(|i| message(config, destination, i))
            .collect();
        let mut tx = outbox.pool().begin().await?;
        outbox.write(&mut tx, &rows).await.map_err(task)?;
        tx.commit().await?;
    }
    let counted = Arc::new(Counted::new(publisher));
    let started = Instant::now();
    run_relay_until(outbox, counted.clone(), || counted.published() >= config.messages).await?;
    Ok(rate(config.messages, started.elapsed()))
}

/// Single-message transactions at `latency_rate` with a relay running; the time from each
/// commit's return to its publish being confirmed.
async fn paced(
    config: &RelayBenchConfig,
    outbox: &PgOutbox,
    publisher: Arc<dyn Publisher>,
    destination: &str,
) -> Result<Percentiles, BenchError> {
    let counted = Arc::new(Counted::new(publisher));
    let total =
        usize::try_from(u64::from(config.latency_rate) * config.latency_duration.as_secs()).unwrap_or(usize::MAX);
    let committed: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let writer = {
        let (outbox, committed, config) = (outbox.clone(), committed.clone(), config.clone());
        let destination = destination.to_owned();
        tokio::spawn(async move { write_paced(&config, &outbox, &destination, total, &committed).await })
    };
    run_relay_until(outbox, counted.clone(), || counted.published() >= total).await?;
    writer.await.map_err(task)??;
    let committed = committed.lock().unwrap_or_else(PoisonError::into_inner);
    let published = counted.published_at.lock().unwrap_or_else(PoisonError::into_inner);
    let mut h = histogram();
    for (id, at) in committed.iter() {
        let Some(published) = published.get(id) else {
            return Err(BenchError::Task(format!(
                "message {id} was committed but never published"
            )));
        };
        let micros = u64::try_from(published.saturating_duration_since(*at).as_micros()).unwrap_or(u64::MAX);
        h.record(micros.max(1)).map_err(task)?;
    }
    Ok(Percentiles::of(&h))
}

async fn write_paced(
    config: &RelayBenchConfig,
    outbox: &PgOutbox,
    destination: &str,
    total: usize,
    committed: &Mutex<HashMap<Uuid, Instant>>,
) -> Result<(), BenchError> {
    let interval = Duration::from_secs(1) / config.latency_rate.max(1);
    let mut ticks = tokio::time::interval(interval);
    for i in 0..total {
        ticks.tick().await;
        let mut tx = outbox.pool().begin().await?;
        let ids = outbox
            .write(&mut tx, &[message(config, destination, i)])
            .await
            .map_err(task)?;
        outbox.commit(tx).await?;
        let now = Instant::now();
        committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ids.into_iter().map(|id| (id, now)));
    }
    Ok(())
}

/// Runs one relay on `outbox` until `done` holds (checked every millisecond), then stops it.
async fn run_relay_until(
    outbox: &PgOutbox,
    publisher: Arc<dyn Publisher>,
    done: impl Fn() -> bool,
) -> Result<(), BenchError> {
    let options = RelayOptions::default().batch_size(BATCH);
    let relay = Relay::postgres(outbox, publisher, options).map_err(task)?;
    let (stop, mut stopped) = watch::channel(false);
    let running = tokio::spawn(relay.run(async move {
        let _ = stopped.changed().await;
    }));
    let deadline = Instant::now() + STAGE_TIMEOUT;
    while !done() {
        if Instant::now() > deadline {
            let _ = stop.send(true);
            return Err(BenchError::Task(
                "the relay did not finish within the stage timeout".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = stop.send(true);
    running.await.map_err(task)?;
    Ok(())
}

/// A publisher that counts confirmed messages and notes when each was confirmed.
struct Counted {
    inner: Arc<dyn Publisher>,
    count: AtomicUsize,
    published_at: Mutex<HashMap<Uuid, Instant>>,
}

impl Counted {
    fn new(inner: Arc<dyn Publisher>) -> Self {
        Self {
            inner,
            count: AtomicUsize::new(0),
            published_at: Mutex::default(),
        }
    }

    fn published(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Publisher for Counted {
    async fn publish(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PublishError>> {
        let results = self.inner.publish(batch).await;
        let now = Instant::now();
        let mut published_at = self.published_at.lock().unwrap_or_else(PoisonError::into_inner);
        let mut confirmed = 0;
        for (m, r) in batch.iter().zip(&results) {
            // A re-publish after a lapsed claim keeps the first confirmation.
            if r.is_ok() && published_at.insert(m.id, now).is_none() {
                confirmed += 1;
            }
        }
        self.count.fetch_add(confirmed, Ordering::SeqCst);
        results
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}

async fn fresh_outbox(config: &RelayBenchConfig, schema: &str) -> Result<PgOutbox, BenchError> {
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(pg_options(&config.database)?.connect_options())
        .await?;
    courier_outbox::postgres::migrate(&pool, schema).await.map_err(task)?;
    PgOutbox::new(pool, schema).map_err(task)
}

/// Drops every schema this run made, and the JetStream stream.
async fn clean_up(config: &RelayBenchConfig, admin: &PgPool, run: &str, stream: &str) -> Result<(), BenchError> {
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'courier_bench_' || $1 || '_%'")
            .bind(run)
            .fetch_all(admin)
            .await?;
    for schema in schemas {
        admin
            .execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str())
            .await?;
    }
    let client = async_nats::connect(config.nats.as_str()).await.map_err(task)?;
    async_nats::jetstream::new(client)
        .delete_stream(stream)
        .await
        .map_err(task)?;
    Ok(())
}

fn pg_options(url: &str) -> Result<PostgresOptions, BenchError> {
    PostgresOptions::new(url).map_err(task)
}

fn rate(messages: usize, took: Duration) -> f64 {
    messages as f64 / took.as_secs_f64().max(f64::EPSILON)
}

fn task(e: impl std::fmt::Display) -> BenchError {
    BenchError::Task(e.to_string())
}
