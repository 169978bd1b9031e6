//! `courier bench`: end-to-end throughput and latency on the embedded engine, in process and
//! over HTTP, with a raw SQLite baseline measured in the same run.

use std::path::PathBuf;
use std::time::Duration;

use courier_bench::BenchConfig;

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
    /// Directory for the temporary databases (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
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
    };
    let report = courier_bench::run_sqlite(&config).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
