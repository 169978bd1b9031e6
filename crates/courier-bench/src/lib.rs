//! Courier's benchmarks, run by `courier bench`: end-to-end throughput (enqueue → receive →
//! ack) and enqueue-to-receive latency, with a raw SQLite baseline measured in the same run so
//! results are reported as a ratio that means something on any machine.

#![warn(clippy::unwrap_used)]

mod baseline;
mod http;
mod inprocess;
mod latency;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use courier_core::QueueEngine;
use courier_sqlite::{SqliteEngine, SqliteOptions};
use serde::Serialize;

pub use latency::Percentiles;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The raw baseline's SQLite calls failed.
    #[error("baseline: {0}")]
    Baseline(#[from] rusqlite::Error),
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
    /// Rows per second through batched INSERT + SELECT/DELETE in plain SQLite.
    pub baseline_rows_per_sec: f64,
    /// In-process, batches of 1.
    pub in_process_batch_1: Throughput,
    /// In-process, batches of 100.
    pub in_process_batch_100: Throughput,
    /// HTTP, single-message calls.
    pub http_single: Option<Throughput>,
    /// Latency at a fixed, moderate rate.
    pub paced_latency: Percentiles,
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

async fn fresh_engine(dir: &tempfile::TempDir, name: &str) -> Result<Arc<dyn QueueEngine>, BenchError> {
    let engine = SqliteEngine::open(SqliteOptions::new(dir.path().join(format!("{name}.db")))).await?;
    Ok(Arc::new(engine))
}

/// Runs every benchmark on the embedded SQLite engine and returns the figures.
pub async fn run_sqlite(config: &BenchConfig) -> Result<Report, BenchError> {
    let dir = match &config.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let baseline_path = dir.path().join("baseline.db");
    let (messages, payload) = (config.messages, config.payload_bytes);
    let baseline_rows_per_sec =
        tokio::task::spawn_blocking(move || baseline::run(&baseline_path, messages, 100, payload))
            .await
            .map_err(|e| BenchError::Task(e.to_string()))??;
    tracing::info!(baseline_rows_per_sec, "raw baseline done");

    let shape = |batch: usize, messages: usize| inprocess::Shape {
        messages,
        batch,
        producers: config.producers,
        consumers: config.consumers,
        payload_bytes: config.payload_bytes,
    };
    let in_process_batch_1 =
        inprocess::throughput(fresh_engine(&dir, "batch1").await?, shape(1, config.messages / 4)).await?;
    let in_process_batch_100 =
        inprocess::throughput(fresh_engine(&dir, "batch100").await?, shape(100, config.messages)).await?;
    let http_single = http::single_message(
        fresh_engine(&dir, "http").await?,
        config.http_messages,
        config.http_clients,
        config.payload_bytes,
    )
    .await?;
    let paced_latency = inprocess::paced_latency(
        fresh_engine(&dir, "paced").await?,
        config.latency_rate,
        config.latency_duration,
        config.consumers,
        config.payload_bytes,
    )
    .await?;
    Ok(Report {
        baseline_rows_per_sec,
        in_process_batch_1,
        in_process_batch_100,
        http_single: Some(http_single),
        paced_latency,
        config: ConfigEcho {
            payload_bytes: config.payload_bytes,
            producers: config.producers,
            consumers: config.consumers,
            http_clients: config.http_clients,
            latency_rate: config.latency_rate,
        },
    })
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
            "payload {} B, {} producers / {} consumers, durable (WAL, synchronous=FULL)\n",
            self.config.payload_bytes, self.config.producers, self.config.consumers
        );
        out += &format!(
            "{:<34} {:>10.0} rows/s (batched INSERT + SELECT/DELETE, 100 per txn)\n",
            "raw sqlite baseline", base
        );
        out += &line("in-process, batch 1", &self.in_process_batch_1);
        out += &line("in-process, batch 100", &self.in_process_batch_100);
        if let Some(http) = &self.http_single {
            out += &line(&format!("http, single, {} clients", self.config.http_clients), http);
        }
        out += &format!(
            "{:<34} p50 {:.2} ms  p99 {:.2} ms\n",
            format!("latency at {} msg/s", self.config.latency_rate),
            self.paced_latency.p50_ms,
            self.paced_latency.p99_ms
        );
        out
    }
}
