//! `courier serve`: open the engine, serve the HTTP API, and on SIGTERM or Ctrl-C stop
//! accepting, finish in-flight requests, shut the engine down (fsync) and exit 0.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use courier_server::{AppState, ServerConfig};

use crate::engine::DatabaseArgs;
use crate::outbox::OutboxArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address to listen on; port 0 picks a free port (printed when ready).
    #[arg(long, env = "COURIER_LISTEN", default_value = "127.0.0.1:7070")]
    listen: String,
    /// Read the bearer token from this file (trailing whitespace ignored); wins over --auth-token.
    #[arg(long, env = "COURIER_AUTH_TOKEN_FILE")]
    auth_token_file: Option<PathBuf>,
    /// Largest message payload, in bytes. Default 1 MiB.
    #[arg(long, env = "COURIER_PAYLOAD_MAX_BYTES", default_value_t = courier_server::app::PAYLOAD_BYTES_MAX_DEFAULT)]
    payload_max_bytes: usize,
    /// An application's database whose outbox the `/v1/outbox` routes show (postgres://… or
    /// sqlite://path); without it they answer 404.
    #[arg(long, env = "COURIER_OUTBOX_DATABASE", hide_env_values = true)]
    outbox_database: Option<String>,
    /// PostgreSQL schema of that outbox (default `courier`).
    #[arg(long, env = "COURIER_OUTBOX_SCHEMA")]
    outbox_schema: Option<String>,
}

pub(crate) async fn run(args: Args, auth_token: Option<String>) -> anyhow::Result<()> {
    init_logging();
    let config = ServerConfig {
        payload_bytes_max: args.payload_max_bytes,
        auth_token: read_token(&args, auth_token)?,
        ..ServerConfig::default()
    };
    config.validate().map_err(|e| anyhow!("invalid server settings: {e}"))?;
    let engine = args.database.target()?.open().await?;
    let mut state = AppState::new(engine.clone(), config.clone());
    if let Some(database) = args.outbox_database.clone() {
        let outbox = OutboxArgs {
            database,
            schema: args.outbox_schema.clone(),
        };
        let (opened, described) = outbox.open().await?;
        tracing::info!(outbox = %described, "serving the outbox's operator routes");
        state = state.with_outbox(opened.admin());
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("cannot read the listen address")?;
    tracing::info!(%addr, auth = config.auth_token.is_some(), "serving");
    // The one line on stdout: scripts and tests wait for it to learn the address.
    println!("courier listening on http://{addr}");
    let served = courier_server::serve(listener, state, shutdown_signal()).await;
    tracing::info!("stopped accepting; in-flight requests done; shutting the engine down");
    let closed = engine.shutdown().await;
    served.context("server failed")?;
    closed.context("engine shutdown failed")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

fn read_token(args: &Args, flag: Option<String>) -> anyhow::Result<Option<String>> {
    match &args.auth_token_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read token file {}", path.display()))?;
            Ok(Some(text.trim_end().to_owned()))
        }
        None => Ok(flag),
    }
}

pub(crate) fn init_logging() {
    init_logging_or("info");
}

/// Logs to stderr, filtered by `RUST_LOG` or else by `default` (an `EnvFilter` directive).
pub(crate) fn init_logging_or(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Logs go to stderr so stdout carries only the "listening" line.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}
