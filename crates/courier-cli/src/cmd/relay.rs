//! `courier relay`: publish an application's outbox rows to a destination until SIGTERM or
//! Ctrl-C, then finish (or release) the batch in flight and exit 0. Several relays may run on
//! one outbox table at once.

use std::time::Duration;

use anyhow::{anyhow, bail};
use courier_core::Namespace;
use courier_outbox::{Relay, RelayOptions, Retention};

use crate::cmd::serve::{init_logging, shutdown_signal};
use crate::outbox::{Outbox, OutboxArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    outbox: OutboxArgs,
    /// Where to publish: nats://host:4222, redis://host:6379, amqp://user:pass@host:5672/vhost,
    /// http(s)://… (CloudEvents webhooks), courier+http(s)://host:7070 (a `courier serve`), or
    /// courier+postgres://… / courier+sqlite://path (Courier's queues, opened in this process).
    #[arg(long, env = "COURIER_RELAY_TO", hide_env_values = true)]
    to: String,
    /// Bearer token for http(s):// and courier+http(s):// destinations.
    #[arg(long, env = "COURIER_RELAY_TO_TOKEN", hide_env_values = true)]
    to_token: Option<String>,
    /// This relay's name in logs and in the claims it takes (followed by `#` and a per-process
    /// nonce, so replicas sharing a name never settle each other's claims). Default: random.
    #[arg(long, env = "COURIER_RELAY_ID")]
    relay_id: Option<String>,
    /// Most rows claimed and published at once.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// How long a claim holds rows before another relay may take them over (renewed while a
    /// slow batch is still publishing), in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    claim_ms: u64,
    /// Safety-net poll interval in milliseconds; commits wake the relay at once.
    #[arg(long, default_value_t = 1_000)]
    poll_ms: u64,
    /// Attempts per message before it is marked failed (then listed by `courier outbox failed`).
    #[arg(long, default_value_t = 10)]
    max_attempts: u32,
    /// What happens to published rows: `delete` (at once, the default), a duration such as
    /// `90s`, `30m`, `12h` or `7d` to keep them that long, or `0` / `forever` to keep them
    /// (no cleanup).
    #[arg(long, default_value = "delete")]
    retention: String,
    /// Namespace of the queues a `courier+…` destination publishes to, for destinations that
    /// name no namespace (`ns/queue` names one).
    #[arg(long, default_value = "default")]
    namespace: String,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    init_logging();
    let options = relay_options(&args)?;
    let namespace = Namespace::new(&args.namespace).map_err(|e| anyhow!("invalid --namespace: {e}"))?;
    let (outbox, described) = args.outbox.open().await?;
    let destination = crate::destination::open(&args.to, &namespace, args.to_token.clone()).await?;
    let relay = match &outbox {
        Outbox::Postgres(o) => Relay::postgres(o, destination.publisher.clone(), options)?,
        Outbox::Sqlite(o) => Relay::sqlite(o, destination.publisher.clone(), options)?,
    };
    tracing::info!(relay = relay.id(), claimer = relay.claimer(), outbox = %described, to = %destination.described, "relaying");
    // The one line on stdout, for scripts and tests.
    println!(
        "courier relay {} publishing {described} to {}",
        relay.id(),
        destination.described
    );
    relay.run(shutdown_signal()).await;
    if let Some(engine) = destination.engine {
        engine.shutdown().await?;
    }
    tracing::info!("relay stopped");
    Ok(())
}

fn relay_options(args: &Args) -> anyhow::Result<RelayOptions> {
    let mut options = RelayOptions::default()
        .batch_size(args.batch_size)
        .claim_duration(Duration::from_millis(args.claim_ms))
        .poll_interval(Duration::from_millis(args.poll_ms))
        .max_attempts(args.max_attempts)
        .retention(parse_retention(&args.retention)?);
    if let Some(id) = &args.relay_id {
        options = options.relay_id(id.clone());
    }
    options.validate().map_err(|e| anyhow!("invalid relay settings: {e}"))?;
    Ok(options)
}

/// `delete`, `forever` / `0`, or a whole number with a unit: `s`, `m`, `h` or `d`.
fn parse_retention(text: &str) -> anyhow::Result<Retention> {
    match text {
        "delete" => return Ok(Retention::DeleteOnPublish),
        "forever" | "0" => return Ok(Retention::KeepForever),
        _ => {}
    }
    let unit_at = text.len().saturating_sub(1);
    let (number, unit) = text.split_at(unit_at);
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => bail!("invalid --retention {text:?}: use delete, forever, 0, or a duration like 90s, 30m, 12h, 7d"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| anyhow!("invalid --retention {text:?}: {number:?} is not a whole number"))?;
    match n.checked_mul(seconds_per_unit) {
        Some(0) => Ok(Retention::KeepForever),
        Some(seconds) => Ok(Retention::KeepFor(Duration::from_secs(seconds))),
        None => bail!("invalid --retention {text:?}: too long"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_words_and_durations() {
        assert_eq!(parse_retention("delete").ok(), Some(Retention::DeleteOnPublish));
        assert_eq!(parse_retention("forever").ok(), Some(Retention::KeepForever));
        assert_eq!(parse_retention("0").ok(), Some(Retention::KeepForever));
        assert_eq!(
            parse_retention("7d").ok(),
            Some(Retention::KeepFor(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(
            parse_retention("90s").ok(),
            Some(Retention::KeepFor(Duration::from_secs(90)))
        );
        for bad in ["", "7", "7w", "-1d", "x1h", "99999999999999999999d"] {
            assert!(parse_retention(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
