//! Courier's benchmarks, run by `courier bench`: end-to-end throughput (enqueue → receive →
//! ack) and enqueue-to-receive latency on SQLite or PostgreSQL, with a raw baseline on the same
//! database measured in the same run so results are reported as a ratio that means something
//! on any machine; and by `courier bench-relay`: the outbox relay's throughput and
//! commit-to-publish latency, against the publisher alone.

#![warn(clippy::unwrap_used)]

mod backend;
mod baseline;
mod http;
mod inprocess;
mod latency;
mod relay;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use courier_core::QueueEngine;
use serde::Serialize;

use crate::backend::Backend;

pub use latency::Percentiles;
pub use relay::{run_relay, DestinationReport, RelayBenchConfig, RelayReport};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The raw baseline's SQLite calls failed.
    #[error("baseline: {0}")]
    Baseline(#[from] rusqlite::Error),
    /// The raw baseline's or the clean-up's PostgreSQL calls failed.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// The engine failed.
    #[error("engine: {0}")]
    Storage(#[from] courier_core::StorageError),
    /// Enqueue failed.
    #[error("enqueue: {0}")]
    Enqueue(#[from] courier_core::EnqueueError),
    /// Receive failed.
    #[error("receive: {0}")]
    Queue(#[from] courier_core::QueueError),
    /// Ack failed.
    #[error("ack: {0}")]
    Lease(#[from] courier_core::LeaseError),
    /// A worker task or the HTTP client failed.
    #[error("{0}")]
    Task(String),
    /// Temporary files could not be made.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// The database to measure.
#[derive(Debug, Clone)]
pub enum Target {
    /// The embedded engine, on files in a temp dir.
    Sqlite,
    /// The PostgreSQL engine at this URL; every stage gets a fresh schema, dropped afterwards.
    Postgres(String),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Messages per throughput run.
    pub messages: usize,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Producer tasks in the in-process runs.
    pub producers: usize,
    /// Consumer tasks in the in-process runs.
    pub consumers: usize,
    /// Concurrent HTTP clients in the HTTP run.
    pub http_clients: usize,
    /// Messages through the HTTP run.
    pub http_messages: usize,
    /// Rate of the paced latency run, messages per second.
    pub latency_rate: u32,
    /// Length of the paced latency run.
    pub latency_duration: Duration,
    /// Where the temporary databases go (default: the system temp dir).
    pub dir: Option<PathBuf>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            messages: 200_000,
            payload_bytes: 256,
            producers: 4,
            consumers: 4,
            http_clients: 16,
            http_messages: 50_000,
            latency_rate: 1_000,
            latency_duration: Duration::from_secs(5),
            dir: None,
        }
    }
}

/// One throughput figure.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Messages that went through.
    pub messages: usize,
    /// Wall time.
    pub seconds: f64,
    /// Messages per second, end to end.
    pub msgs_per_sec: f64,
    /// Enqueue-to-receive latency under this load.
    pub latency: Percentiles,
}

/// Everything one `courier bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The engine measured, and its durability setting.
    pub engine: String,
    /// What the baseline did.
    pub baseline: String,
    /// Rows per second through the raw baseline on the same database.
    pub baseline_rows_per_sec: f64,
    /// In-process, batches of 1.
    pub in_process_batch_1: Throughput,
    /// In-process, batches of 100.
    pub in_process_batch_100: Throughput,
    /// HTTP, single-message calls.
    pub http_single: Option<Throughput>,
    /// Latency at a fixed, moderate rate; on PostgreSQL enqueued on one node and received on
    /// another.
    pub paced_latency: Percentiles,
    /// Where the paced run's producer and consumers ran: `one node` or `two nodes`.
    pub paced_across: String,
    /// The configuration used.
    pub config: ConfigEcho,
}

/// The parts of [`BenchConfig`] worth printing.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigEcho {
    /// Payload size.
    pub payload_bytes: usize,
    /// Producers.
    pub producers: usize,
    /// Consumers.
    pub consumers: usize,
    /// HTTP clients.
    pub http_clients: usize,
    /// Paced rate.
    pub latency_rate: u32,
}

/// Runs every benchmark on `target` and returns the figures. Storage the run created is
/// removed afterwards, also when a stage fails.
pub async fn run(config: &BenchConfig, target: &Target) -> Result<Report, BenchError> {
    let mut backend = Backend::new(target, config.dir.as_deref())?;
    let measured = run_stages(config, &mut backend).await;
    let cleaned = backend.clean_up().await;
    let report = measured?;
    cleaned?;
    Ok(report)
}

async fn run_stages(config: &BenchConfig, backend: &mut Backend) -> Result<Report, BenchError> {
    let baseline_rows_per_sec = backend.baseline(config).await?;
    backend.end_stage().await?;
    tracing::info!(baseline_rows_per_sec, "raw baseline done");

    let shape = |batch: usize, messages: usize| inprocess::Shape {
        messages,
        batch,
        producers: config.producers,
        consumers: config.consumers,
        payload_bytes: config.payload_bytes,
    };
    let engine = backend.engine("batch1").await?;
    let in_process_batch_1 = inprocess::throughput(engine.clone(), shape(1, config.messages / 4)).await?;
    engine.shutdown().await?;
    backend.end_stage().await?;
    let engine = backend.engine("batch100").await?;
    let in_process_batch_100 = inprocess::throughput(engine.clone(), shape(100, config.messages)).await?;
    engine.shutdown().await?;
    backend.end_stage().await?;
    let engine = backend.engine("http").await?;
    let http_single = http::single_message(
        engine.clone(),
        config.http_messages,
        config.http_clients,
        config.payload_bytes,
    )
    .await?;
    engine.shutdown().await?;
    backend.end_stage().await?;
    let producer_node = backend.engine("paced").await?;
    let consumer_node = backend.second_node(&producer_node).await?;
    let paced_latency = inprocess::paced_latency(
        [producer_node.clone(), consumer_node.clone()],
        config.latency_rate,
        config.latency_duration,
        config.consumers,
        config.payload_bytes,
    )
    .await?;
    shut_down(&[producer_node, consumer_node]).await?;
    Ok(Report {
        engine: backend.describe(),
        baseline: backend.describe_baseline(),
        baseline_rows_per_sec,
        in_process_batch_1,
        in_process_batch_100,
        http_single: Some(http_single),
        paced_latency,
        paced_across: backend.describe_nodes().to_owned(),
        config: ConfigEcho {
            payload_bytes: config.payload_bytes,
            producers: config.producers,
            consumers: config.consumers,
            http_clients: config.http_clients,
            latency_rate: config.latency_rate,
        },
    })
}

async fn shut_down(engines: &[Arc<dyn QueueEngine>]) -> Result<(), BenchError> {
    for engine in engines {
        engine.shutdown().await?;
    }
    Ok(())
}

impl Report {
    /// A human-readable table of the figures with ratios to the baseline.
    pub fn render(&self) -> String {
        let base = self.baseline_rows_per_sec;
        let line = |name: &str, t: &Throughput| {
            format!(
                "{name:<34} {:>10.0} msg/s  ratio {:>5.2}  p50 {:>7.2} ms  p99 {:>7.2} ms\n",
                t.msgs_per_sec,
                t.msgs_per_sec / base,
                t.latency.p50_ms,
                t.latency.p99_ms
            )
        };
        let mut out = format!(
            "{}: payload {} B, {} producers / {} consumers\n",
            self.engine, self.config.payload_bytes, self.config.producers, self.config.consumers
        );
        out += &format!("{:<34} {:>10.0} rows/s ({})\n", "raw baseline", base, self.baseline);
        out += &line("in-process, batch 1", &self.in_process_batch_1);
        out += &line("in-process, batch 100", &self.in_process_batch_100);
        if let Some(http) = &self.http_single {
            out += &line(&format!("http, single, {} clients", self.config.http_clients), http);
        }
        out += &format!(
            "{:<34} p50 {:.2} ms  p99 {:.2} ms\n",
            format!("latency at {} msg/s, {}", self.config.latency_rate, self.paced_across),
            self.paced_latency.p50_ms,
            self.paced_latency.p99_ms
        );
        out
    }
}
