//! Everything NATS: a JetStream [`courier_core::Publisher`] that sets `Nats-Msg-Id` to the outbox
//! id (JetStream's dedup window drops a re-publish), pipelines a batch and waits for each
//! publish ack. Configure it with [`NatsConfig`], from a `nats://` URL.

#![warn(clippy::unwrap_used)]

pub mod config;
pub mod error;
pub mod publisher;

pub use config::{NatsConfig, StreamSpec};
pub use error::{ConfigError, ConnectError};
pub use publisher::NatsPublisher;
