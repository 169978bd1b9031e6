//! `courier bench-relay`: the outbox relay from PostgreSQL to NATS JetStream and to Courier's
//! queue: throughput against the publisher alone, and commit-to-publish latency.

use std::time::Duration;

use courier_bench::{RelayBenchConfig, RelayReport};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// PostgreSQL for the outbox and the queue destination; each stage runs in a fresh
    /// schema that is dropped afterwards.
    #[arg(long, env = "COURIER_DATABASE", hide_env_values = true)]
    database: String,
    /// NATS server with JetStream; the run makes a stream of its own and deletes it.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Messages in each drained backlog and each baseline.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Distinct ordering keys (0 for unkeyed messages).
    #[arg(long, default_value_t = 100)]
    keys: usize,
    /// Rate of the latency run, single-message transactions per second.
    #[arg(long, default_value_t = 1_000)]
    latency_rate: u32,
    /// Length of the latency run, in seconds.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.messages > 0, "--messages must be positive");
    anyhow::ensure!(
        args.latency_rate > 0 && args.latency_secs > 0,
        "--latency-rate and --latency-secs must be positive"
    );
    let config = RelayBenchConfig {
        database: args.database,
        nats: args.nats,
        messages: args.messages,
        payload_bytes: args.payload_bytes,
        keys: args.keys,
        latency_rate: args.latency_rate,
        latency_duration: Duration::from_secs(args.latency_secs),
    };
    let report = courier_bench::run_relay(&config).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &RelayReport) {
    println!(
        "outbox on PostgreSQL → destination: {} messages of {} B over {} keys; latency at {} commits/s",
        r.messages, r.payload_bytes, r.keys, r.latency_rate
    );
    for d in &r.destinations {
        println!(
            "{:<8} publisher alone {:>8.0} msg/s   relay {:>8.0} msg/s  ratio {:>4.2}   commit-to-publish p50 {:>6.2} ms  p99 {:>6.2} ms",
            d.destination,
            d.baseline_msgs_per_sec,
            d.relay_msgs_per_sec,
            d.relay_msgs_per_sec / d.baseline_msgs_per_sec.max(f64::EPSILON),
            d.commit_to_publish.p50_ms,
            d.commit_to_publish.p99_ms
        );
    }
}
