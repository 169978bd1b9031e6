//! `courier bench`: end-to-end throughput and latency, in process and over HTTP, on the
//! embedded engine or on PostgreSQL, with a raw baseline on the same database in the same run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use courier_bench::{BenchConfig, Stage, Target};
use courier_postgres::PostgresOptions;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Messages per in-process throughput run (the batch-1 run sends a quarter of them).
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Messages through the HTTP run.
    #[arg(long, default_value_t = 50_000)]
    http_messages: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Producer tasks in the in-process runs.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Consumer tasks in the in-process runs.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Concurrent HTTP clients (half send, half receive and ack).
    #[arg(long, default_value_t = 16)]
    http_clients: usize,
    /// Rate of the paced latency run, in messages per second.
    #[arg(long, default_value_t = 1_000)]
    latency_rate: u32,
    /// Length of the paced latency run, in seconds.
    #[arg(long, default_value_t = 5)]
    latency_secs: u64,
    /// Measure the PostgreSQL engine on this database (`postgres://…`) instead of SQLite; each
    /// stage runs in a fresh schema that is dropped afterwards.
    #[arg(long)]
    database: Option<String>,
    /// With --database: make the engine's every ack durable before it returns (as `serve
    /// --durable-acks`), to measure what that costs.
    #[arg(long, requires = "database")]
    durable_acks: bool,
    /// Directory for the temporary databases (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run every stage this many times (1–20) and also print each figure's median and range:
    /// the figures move from run to run on a busy machine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
    rounds: u16,
    /// The engine's stages to run, comma-separated (default: all); the raw baseline always
    /// runs, as every ratio needs it.
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1.., default_values_t = StageArg::ALL)]
    stages: Vec<StageArg>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `--stages` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StageArg {
    /// In-process, batches of 1.
    Batch1,
    /// In-process, batches of 100.
    Batch100,
    /// HTTP, single-message calls.
    Http,
    /// Latency at a fixed rate (across two nodes on PostgreSQL).
    Paced,
}

impl StageArg {
    const ALL: [StageArg; 4] = [StageArg::Batch1, StageArg::Batch100, StageArg::Http, StageArg::Paced];

    fn stage(self) -> Stage {
        match self {
            StageArg::Batch1 => Stage::Batch1,
            StageArg::Batch100 => Stage::Batch100,
            StageArg::Http => Stage::Http,
            StageArg::Paced => Stage::Paced,
        }
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.messages > 0 && args.http_messages > 0,
        "message counts must be positive"
    );
    anyhow::ensure!(
        args.producers > 0 && args.consumers > 0 && args.http_clients > 1,
        "need at least one producer, one consumer and two HTTP clients"
    );
    anyhow::ensure!(
        args.latency_rate > 0 && args.latency_secs > 0,
        "the paced run needs a rate and a length"
    );
    let config = BenchConfig {
        messages: args.messages,
        payload_bytes: args.payload_bytes,
        producers: args.producers,
        consumers: args.consumers,
        http_clients: args.http_clients,
        http_messages: args.http_messages,
        latency_rate: args.latency_rate,
        latency_duration: Duration::from_secs(args.latency_secs),
        dir: args.dir,
        rounds: usize::from(args.rounds),
        stages: args.stages.iter().map(|s| s.stage()).collect(),
    };
    let target = match args.database {
        None => Target::Sqlite,
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let options = PostgresOptions::new(&url).context("--database")?;
            Target::Postgres(Box::new(options.durable_acks(args.durable_acks)))
        }
        Some(_) => anyhow::bail!("--database takes a postgres:// URL; SQLite is the default"),
    };
    // Each stage's and round's figures go to stderr as they come, so a run that fails late
    // still shows what it measured.
    crate::cmd::serve::init_logging_or("warn,courier_bench=info");
    let report = courier_bench::run(&config, &target).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
