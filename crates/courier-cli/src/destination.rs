//! Picks the publisher a relay publishes through from a destination URL (`--to`): the scheme
//! names the system, the rest is that publisher's own configuration.
//!
//! - `nats://host:4222` — NATS JetStream (`courier-nats`);
//! - `courier+postgres://…`, `courier+sqlite://path` — a Courier queue engine opened in this
//!   process (the message's destination is the queue name).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use courier_core::{Namespace, Publisher, QueueEngine};
use courier_nats::{NatsConfig, NatsPublisher};
use courier_outbox::QueuePublisher;

use crate::engine::DatabaseArgs;

/// The schemes `--to` understands, for error messages.
const SUPPORTED: &str = "nats://, courier+postgres://, courier+sqlite://";

/// A publisher, and a queue engine to shut down after the relay stops when it opened one.
pub(crate) struct Destination {
    pub(crate) publisher: Arc<dyn Publisher>,
    pub(crate) engine: Option<Arc<dyn QueueEngine>>,
    /// Where it publishes, without credentials, for logs.
    pub(crate) described: String,
}

/// Builds the publisher `url` names. Brokers are connected lazily: a relay started while its
/// broker is down keeps the messages pending and publishes once the broker is back.
pub(crate) async fn open(url: &str, namespace: &Namespace) -> anyhow::Result<Destination> {
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
            Ok(Destination {
                publisher: Arc::new(publisher),
                engine: None,
                described,
            })
        }
        "courier+postgres" | "courier+postgresql" | "courier+sqlite" => {
            // The PostgreSQL schema, if not `courier`, goes in the URL: `?courier_schema=name`.
            let database = DatabaseArgs {
                data_dir: PathBuf::new(),
                database: Some(url.trim_start_matches("courier+").to_owned()),
                schema: None,
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
