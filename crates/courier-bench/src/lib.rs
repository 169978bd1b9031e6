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
use courier_postgres::PostgresOptions;
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
    /// The PostgreSQL engine with these options (their schema and pool size aside: every
    /// stage gets a fresh schema, dropped afterwards, and the pool the baseline also gets).
    Postgres(Box<PostgresOptions>),
}

/// One of the engine's stages; the raw baseline always runs, since every ratio needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// In-process, batches of 1.
    Batch1,
    /// In-process, batches of 100.
    Batch100,
    /// HTTP, single-message calls.
    Http,
    /// Latency at a fixed rate (across two nodes on PostgreSQL).
    Paced,
}

impl Stage {
    /// Every stage, in the order a round runs them.
    pub const ALL: [Stage; 4] = [Stage::Batch1, Stage::Batch100, Stage::Http, Stage::Paced];
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
    /// How many times to run every stage (at least once); more rounds show how much the
    /// figures move from one run to the next.
    pub rounds: usize,
    /// The engine's stages to run, each round, after the baseline (in [`Stage::ALL`] order
    /// whatever the order here).
    pub stages: Vec<Stage>,
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
            rounds: 1,
            stages: Stage::ALL.to_vec(),
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
    /// Each round's figures, in the order they ran.
    pub rounds: Vec<Round>,
    /// Median, least and greatest of each figure over the rounds.
    pub summary: Summary,
    /// Where the paced run's producer and consumers ran: `one node` or `two nodes`.
    pub paced_across: String,
    /// The configuration used.
    pub config: ConfigEcho,
}

/// One pass over the stages: the baseline first, then the engine's stages, each on fresh
/// storage, so a ratio compares figures measured minutes, not hours, apart. A stage the run
/// left out is `None` (and absent from the JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// Rows per second through the raw baseline on the same database.
    pub baseline_rows_per_sec: f64,
    /// In-process, batches of 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_process_batch_1: Option<Throughput>,
    /// In-process, batches of 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_process_batch_100: Option<Throughput>,
    /// HTTP, single-message calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_single: Option<Throughput>,
    /// Latency at a fixed, moderate rate; on PostgreSQL enqueued on one node and received on
    /// another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paced_latency: Option<Percentiles>,
}

/// How a figure spread over the rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// The middle value (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The least.
    pub min: f64,
    /// The greatest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` if there are none or one is not a number.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut sorted: Vec<f64> = values.into_iter().collect();
        if sorted.is_empty() || sorted.iter().any(|v| v.is_nan()) {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

/// A throughput stage over the rounds; each round's ratio is to that round's baseline.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StageSummary {
    /// Messages per second.
    pub msgs_per_sec: Spread,
    /// Messages per second over the same round's baseline rows per second.
    pub ratio: Spread,
    /// Median enqueue-to-receive latency under this load, ms.
    pub p50_ms: Spread,
    /// 99th percentile enqueue-to-receive latency under this load, ms.
    pub p99_ms: Spread,
}

/// Every figure of a run over its rounds; a stage the run left out is `None`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    /// Rows per second through the raw baseline.
    pub baseline_rows_per_sec: Spread,
    /// In-process, batches of 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_process_batch_1: Option<StageSummary>,
    /// In-process, batches of 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_process_batch_100: Option<StageSummary>,
    /// HTTP, single-message calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_single: Option<StageSummary>,
    /// Paced run, median latency, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paced_p50_ms: Option<Spread>,
    /// Paced run, 99th percentile latency, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paced_p99_ms: Option<Spread>,
}

impl Summary {
    /// The summary of `rounds`; `None` if there are none or a figure is not a number. A stage
    /// is summarized when every round measured it.
    pub fn of(rounds: &[Round]) -> Option<Self> {
        let baseline_rows_per_sec = Spread::of(rounds.iter().map(|r| r.baseline_rows_per_sec))?;
        let stage = |stage: fn(&Round) -> Option<&Throughput>| -> Option<Option<StageSummary>> {
            let Some(measured) = rounds
                .iter()
                .map(|r| Some((stage(r)?, r.baseline_rows_per_sec)))
                .collect::<Option<Vec<_>>>()
            else {
                return Some(None);
            };
            Some(Some(StageSummary {
                msgs_per_sec: Spread::of(measured.iter().map(|(t, _)| t.msgs_per_sec))?,
                ratio: Spread::of(measured.iter().map(|(t, base)| t.msgs_per_sec / base))?,
                p50_ms: Spread::of(measured.iter().map(|(t, _)| t.latency.p50_ms))?,
                p99_ms: Spread::of(measured.iter().map(|(t, _)| t.latency.p99_ms))?,
            }))
        };
        let paced = rounds.iter().map(|r| r.paced_latency).collect::<Option<Vec<_>>>();
        let (paced_p50_ms, paced_p99_ms) = match paced {
            None => (None, None),
            Some(paced) => (
                Some(Spread::of(paced.iter().map(|p| p.p50_ms))?),
                Some(Spread::of(paced.iter().map(|p| p.p99_ms))?),
            ),
        };
        Some(Self {
            baseline_rows_per_sec,
            in_process_batch_1: stage(|r| r.in_process_batch_1.as_ref())?,
            in_process_batch_100: stage(|r| r.in_process_batch_100.as_ref())?,
            http_single: stage(|r| r.http_single.as_ref())?,
            paced_p50_ms,
            paced_p99_ms,
        })
    }
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

/// Runs every benchmark on `target`, `config.rounds` times over, and returns the figures.
/// Storage the run created is removed afterwards, also when a stage fails.
pub async fn run(config: &BenchConfig, target: &Target) -> Result<Report, BenchError> {
    let mut backend = Backend::new(target, config.dir.as_deref())?;
    let (engine, baseline, paced_across) = (
        backend.describe(),
        backend.describe_baseline(),
        backend.describe_nodes().to_owned(),
    );
    let measured = run_rounds(config, &mut backend).await;
    let cleaned = backend.clean_up().await;
    let rounds = measured?;
    cleaned?;
    let summary = Summary::of(&rounds)
        .ok_or_else(|| BenchError::Task("a stage measured a figure that is not a number".into()))?;
    Ok(Report {
        engine,
        baseline,
        rounds,
        summary,
        paced_across,
        config: ConfigEcho {
            payload_bytes: config.payload_bytes,
            producers: config.producers,
            consumers: config.consumers,
            http_clients: config.http_clients,
            latency_rate: config.latency_rate,
        },
    })
}

async fn run_rounds(config: &BenchConfig, backend: &mut Backend) -> Result<Vec<Round>, BenchError> {
    let mut rounds = Vec::new();
    for round in 1..=config.rounds.max(1) {
        let figures = run_round(config, backend, round).await?;
        // Logged as each round ends, so a failure in a later round does not lose its figures.
        let rate = |t: &Option<Throughput>| t.as_ref().map(|t| t.msgs_per_sec);
        tracing::info!(
            round,
            baseline_rows_per_sec = figures.baseline_rows_per_sec,
            batch_1 = rate(&figures.in_process_batch_1),
            batch_100 = rate(&figures.in_process_batch_100),
            http_single = rate(&figures.http_single),
            paced_p99_ms = figures.paced_latency.map(|p| p.p99_ms),
            "round done"
        );
        rounds.push(figures);
    }
    Ok(rounds)
}

/// The baseline, then each stage of `config.stages` once, each on fresh storage named after
/// the stage and `round`.
async fn run_round(config: &BenchConfig, backend: &mut Backend, round: usize) -> Result<Round, BenchError> {
    let stage = |name: &str| format!("{name}_{round}");
    let wanted = |s: Stage| config.stages.contains(&s);
    let baseline_rows_per_sec = backend.baseline(&stage("baseline"), config).await?;
    backend.end_stage().await?;
    tracing::info!(baseline_rows_per_sec, "raw baseline done");

    let shape = |batch: usize, messages: usize| inprocess::Shape {
        messages,
        batch,
        producers: config.producers,
        consumers: config.consumers,
        payload_bytes: config.payload_bytes,
    };
    let mut figures = Round {
        baseline_rows_per_sec,
        in_process_batch_1: None,
        in_process_batch_100: None,
        http_single: None,
        paced_latency: None,
    };
    if wanted(Stage::Batch1) {
        let engine = backend.engine(&stage("batch1")).await?;
        figures.in_process_batch_1 = Some(inprocess::throughput(engine.clone(), shape(1, config.messages / 4)).await?);
        engine.shutdown().await?;
        backend.end_stage().await?;
    }
    if wanted(Stage::Batch100) {
        let engine = backend.engine(&stage("batch100")).await?;
        figures.in_process_batch_100 = Some(inprocess::throughput(engine.clone(), shape(100, config.messages)).await?);
        engine.shutdown().await?;
        backend.end_stage().await?;
    }
    if wanted(Stage::Http) {
        let engine = backend.engine(&stage("http")).await?;
        let http_single = http::single_message(
            engine.clone(),
            config.http_messages,
            config.http_clients,
            config.payload_bytes,
        )
        .await?;
        figures.http_single = Some(http_single);
        engine.shutdown().await?;
        backend.end_stage().await?;
    }
    if wanted(Stage::Paced) {
        let producer_node = backend.engine(&stage("paced")).await?;
        let consumer_node = backend.second_node(&producer_node).await?;
        let paced_latency = inprocess::paced_latency(
            [producer_node.clone(), consumer_node.clone()],
            config.latency_rate,
            config.latency_duration,
            config.consumers,
            config.payload_bytes,
        )
        .await?;
        figures.paced_latency = Some(paced_latency);
        shut_down(&[producer_node, consumer_node]).await?;
        backend.end_stage().await?;
    }
    Ok(figures)
}

async fn shut_down(engines: &[Arc<dyn QueueEngine>]) -> Result<(), BenchError> {
    for engine in engines {
        engine.shutdown().await?;
    }
    Ok(())
}

impl Report {
    /// A human-readable table of the figures with ratios to the baseline: each round's, and
    /// with more than one round, their medians and ranges.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}: payload {} B, {} producers / {} consumers\n",
            self.engine, self.config.payload_bytes, self.config.producers, self.config.consumers
        );
        let several = self.rounds.len() > 1;
        for (i, round) in self.rounds.iter().enumerate() {
            if several {
                out += &format!("round {} of {}\n", i + 1, self.rounds.len());
            }
            out += &self.render_round(round);
        }
        if several {
            out += &self.render_summary();
        }
        out
    }

    fn http_stage_name(&self) -> String {
        format!("http, single, {} clients", self.config.http_clients)
    }

    fn paced_stage_name(&self) -> String {
        format!("latency at {} msg/s, {}", self.config.latency_rate, self.paced_across)
    }

    fn render_round(&self, round: &Round) -> String {
        let base = round.baseline_rows_per_sec;
        let line = |name: &str, t: &Throughput| {
            format!(
                "{name:<34} {:>10.0} msg/s  ratio {:>5.2}  p50 {:>7.2} ms  p99 {:>7.2} ms\n",
                t.msgs_per_sec,
                t.msgs_per_sec / base,
                t.latency.p50_ms,
                t.latency.p99_ms
            )
        };
        let mut out = format!("{:<34} {:>10.0} rows/s ({})\n", "raw baseline", base, self.baseline);
        let stages = [
            ("in-process, batch 1".to_owned(), &round.in_process_batch_1),
            ("in-process, batch 100".to_owned(), &round.in_process_batch_100),
            (self.http_stage_name(), &round.http_single),
        ];
        for (name, figure) in stages {
            if let Some(t) = figure {
                out += &line(&name, t);
            }
        }
        if let Some(paced) = round.paced_latency {
            out += &format!(
                "{:<34} p50 {:.2} ms  p99 {:.2} ms\n",
                self.paced_stage_name(),
                paced.p50_ms,
                paced.p99_ms
            );
        }
        out
    }

    fn render_summary(&self) -> String {
        let s = &self.summary;
        let range =
            |x: Spread, digits: usize| format!("{:.digits$} ({:.digits$} – {:.digits$})", x.median, x.min, x.max);
        let line = |name: &str, t: &StageSummary| {
            format!(
                "{name:<34} {} msg/s  ratio {}  p99 {} ms\n",
                range(t.msgs_per_sec, 0),
                range(t.ratio, 2),
                range(t.p99_ms, 2)
            )
        };
        let mut out = format!("median of {} rounds (least – greatest)\n", self.rounds.len());
        out += &format!("{:<34} {} rows/s\n", "raw baseline", range(s.baseline_rows_per_sec, 0));
        let stages = [
            ("in-process, batch 1".to_owned(), &s.in_process_batch_1),
            ("in-process, batch 100".to_owned(), &s.in_process_batch_100),
            (self.http_stage_name(), &s.http_single),
        ];
        for (name, figure) in stages {
            if let Some(t) = figure {
                out += &line(&name, t);
            }
        }
        if let (Some(p50), Some(p99)) = (s.paced_p50_ms, s.paced_p99_ms) {
            out += &format!(
                "{:<34} p50 {} ms  p99 {} ms\n",
                self.paced_stage_name(),
                range(p50, 2),
                range(p99, 2)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn spread_of_an_odd_count_has_the_middle_value_as_median() {
        let s = Spread::of([3.0, 1.0, 2.0]).expect("spread");
        assert_eq!(
            s,
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
    }

    #[test]
    fn spread_of_an_even_count_averages_the_middle_two() {
        let s = Spread::of([4.0, 1.0, 3.0, 2.0]).expect("spread");
        assert_eq!(
            s,
            Spread {
                median: 2.5,
                min: 1.0,
                max: 4.0
            }
        );
    }

    #[test]
    fn spread_of_nothing_or_nan_is_none() {
        assert_eq!(Spread::of([]), None);
        assert_eq!(Spread::of([1.0, f64::NAN]), None);
    }
}
