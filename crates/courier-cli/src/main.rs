//! The `courier` binary: `courier serve` runs the HTTP API over an engine chosen by URL,
//! and the other commands are a thin HTTP client for that API.
//!
//! This is the only crate that knows about process concerns: flags and environment
//! variables, signals, logging setup, `anyhow` and exit codes (1 for errors, 2 for usage).

mod client;
mod cmd;
mod destination;
mod engine;
mod outbox;

use clap::{Parser, Subcommand};

/// Courier: reliable message queues.
#[derive(Debug, Parser)]
#[command(name = "courier", version, about)]
struct Cli {
    /// Print the server's JSON instead of human-readable text (client commands).
    #[arg(long, global = true)]
    json: bool,
    /// URL of the Courier server (client commands).
    #[arg(long, global = true, env = "COURIER_URL", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// Bearer token: sent by client commands, required by `serve` when set.
    #[arg(long, global = true, env = "COURIER_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve(cmd::serve::Args),
    /// Send one message.
    Send(cmd::send::Args),
    /// Receive (lease) messages.
    Receive(cmd::receive::Args),
    /// Acknowledge a received message.
    Ack(cmd::ack::Args),
    /// Give a received message back (a failure, or a deferral).
    Nack(cmd::nack::Args),
    /// Show a queue's counts.
    Stats(cmd::stats::Args),
    /// List queues.
    Queues(cmd::queues::Args),
    /// Inspect and manage a queue's dead letters.
    #[command(subcommand)]
    Dlq(cmd::dlq::Command),
    /// Delete every live message of a queue.
    Purge(cmd::purge::Args),
    /// Create or upgrade Courier's schema in the database, then exit.
    Migrate(cmd::migrate::Args),
    /// Measure throughput and latency against a raw baseline on the same database.
    Bench(cmd::bench::Args),
    /// Measure the outbox relay (PostgreSQL to NATS JetStream and to Courier's queue).
    BenchRelay(cmd::bench_relay::Args),
    /// Publish an application's outbox to a destination until stopped.
    Relay(cmd::relay::Args),
    /// Inspect an application's outbox: counts, failed messages, retries.
    #[command(subcommand)]
    Outbox(cmd::outbox::Command),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        // One line, whatever the error chain looks like, so scripts can show it as is.
        let text = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {text}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let token = cli.auth_token;
    let command = match cli.command {
        Command::Serve(args) => return cmd::serve::run(args, token).await,
        Command::Bench(args) => return cmd::bench::run(args).await,
        Command::Migrate(args) => return cmd::migrate::run(args).await,
        Command::Relay(args) => return cmd::relay::run(args).await,
        Command::BenchRelay(args) => return cmd::bench_relay::run(args).await,
        Command::Outbox(command) => return cmd::outbox::run(command).await,
        client_command => client_command,
    };
    let ctx = cmd::Ctx {
        client: client::Client::new(&cli.server, token)?,
        json: cli.json,
    };
    match command {
        Command::Serve(_)
        | Command::Bench(_)
        | Command::Migrate(_)
        | Command::Relay(_)
        | Command::BenchRelay(_)
        | Command::Outbox(_) => Ok(()),
        Command::Send(args) => cmd::send::run(args, &ctx).await,
        Command::Receive(args) => cmd::receive::run(args, &ctx).await,
        Command::Ack(args) => cmd::ack::run(args, &ctx).await,
        Command::Nack(args) => cmd::nack::run(args, &ctx).await,
        Command::Stats(args) => cmd::stats::run(args, &ctx).await,
        Command::Queues(args) => cmd::queues::run(args, &ctx).await,
        Command::Dlq(command) => cmd::dlq::run(command, &ctx).await,
        Command::Purge(args) => cmd::purge::run(args, &ctx).await,
    }
}
