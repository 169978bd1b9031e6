//! Picks the publisher a relay publishes through from a destination URL (`--to`): the scheme
//! names the system, the rest is that publisher's own configuration.
//!
//! - `nats://host:4222` — NATS JetStream (`courier-nats`);
//! - `redis://host:6379` — Redis Streams (`courier-redis`);
//! - `amqp://user:pass@host:5672/vhost` — RabbitMQ (`courier-amqp`);
//! - `http(s)://host/path` — CloudEvents webhooks (`courier-webhook`);
//! - `courier+http(s)://host:7070` — a `courier serve` over its HTTP API;
//! - `courier+postgres://…`, `courier+sqlite://path` — a Courier queue engine opened in this
//!   process (the message's destination is the queue name).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use courier_amqp::{AmqpConfig, AmqpPublisher};
use courier_core::{Namespace, Publisher, QueueEngine};
use courier_nats::{NatsConfig, NatsPublisher};
use courier_outbox::QueuePublisher;
use courier_redis::{RedisConfig, RedisPublisher};
use courier_webhook::{CourierHttpConfig, CourierHttpPublisher, WebhookConfig, WebhookPublisher};

use crate::engine::{DatabaseArgs, PostgresTuning};

/// The schemes `--to` understands, for error messages.
const SUPPORTED: &str =
    "nats://, redis://, amqp://, http(s)://, courier+http(s)://, courier+postgres://, courier+sqlite://";

/// A publisher, and a queue engine to shut down after the relay stops when it opened one.
pub(crate) struct Destination {
    pub(crate) publisher: Arc<dyn Publisher>,
    pub(crate) engine: Option<Arc<dyn QueueEngine>>,
    /// Where it publishes, without credentials, for logs.
    pub(crate) described: String,
}

/// Builds the publisher `url` names. Brokers are connected lazily: a relay started while its
/// broker is down keeps the messages pending and publishes once the broker is back.
/// `token` is the bearer token for `courier+http(s)://` and `http(s)://` destinations.
pub(crate) async fn open(url: &str, namespace: &Namespace, token: Option<String>) -> anyhow::Result<Destination> {
    let Some((scheme, _)) = url.split_once("://") else {
        bail!("destination {url:?} has no scheme; use one of {SUPPORTED}");
    };
    match scheme {
        "nats" => {
            let config = NatsConfig::from_url(url).context("invalid NATS destination")?;
            let described = format!("NATS {}", config.hosts());
            let publisher = NatsPublisher::connect_lazy(config)
                .await
                .with_context(|| format!("cannot set up the publisher for {described}"))?;
            Ok(broker(publisher, described))
        }
        "redis" | "rediss" => {
            let config = RedisConfig::from_url(url).context("invalid Redis destination")?;
            let described = format!("Redis Streams at {}", host_of(url));
            let publisher = RedisPublisher::connect_lazy(config)
                .await
                .with_context(|| format!("cannot set up the publisher for {described}"))?;
            Ok(broker(publisher, described))
        }
        "amqp" | "amqps" => {
            let config = AmqpConfig::from_url(url).context("invalid RabbitMQ destination")?;
            let described = format!("RabbitMQ at {}", host_of(url));
            let publisher = AmqpPublisher::connect_lazy(config)
                .await
                .with_context(|| format!("cannot set up the publisher for {described}"))?;
            Ok(broker(publisher, described))
        }
        "http" | "https" => {
            let mut config = WebhookConfig::from_url(url).context("invalid webhook destination")?;
            config.bearer_token = token;
            let described = format!("CloudEvents webhook {}", host_of(url));
            let publisher = WebhookPublisher::new(config).context("invalid webhook destination")?;
            Ok(broker(publisher, described))
        }
        "courier+http" | "courier+https" => {
            let mut config = CourierHttpConfig::from_url(url.trim_start_matches("courier+"))
                .context("invalid Courier destination")?;
            config.auth_token = token;
            let described = format!("Courier at {}", host_of(url));
            let publisher = CourierHttpPublisher::new(config).context("invalid Courier destination")?;
            Ok(broker(publisher, described))
        }
        "courier+postgres" | "courier+postgresql" | "courier+sqlite" => {
            // The PostgreSQL schema, if not `courier`, goes in the URL: `?courier_schema=name`.
            let database = DatabaseArgs {
                data_dir: PathBuf::new(),
                database: Some(url.trim_start_matches("courier+").to_owned()),
                schema: None,
                postgres: PostgresTuning::default(),
            };
            let engine = database.target()?.open().await?;
            Ok(Destination {
                publisher: Arc::new(QueuePublisher::new(engine.clone(), namespace.clone())),
                engine: Some(engine),
                described: format!("Courier queues (namespace {namespace})"),
            })
        }
        // Only the scheme is echoed: the rest of a URL may hold a password.
        other => bail!("unsupported destination scheme {other:?}; use one of {SUPPORTED}"),
    }
}

fn broker(publisher: impl Publisher, described: String) -> Destination {
    Destination {
        publisher: Arc::new(publisher),
        engine: None,
        described,
    }
}

/// `host:port` of a URL, never its credentials or path.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn described_hosts_never_carry_credentials() {
        assert_eq!(host_of("amqp://guest:secret@127.0.0.1:5672/%2f"), "127.0.0.1:5672");
        assert_eq!(host_of("redis://:pw@cache:6379/0"), "cache:6379");
        assert_eq!(host_of("https://hooks.example/x?token=1"), "hooks.example");
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused_naming_the_supported_ones() {
        let ns = Namespace::new("default").expect("valid namespace");
        for url in ["kafka://user:secret@broker:9092", "no-scheme"] {
            let e = open(url, &ns, None)
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("nats://") && !e.contains("secret"), "{e}");
        }
    }
}
