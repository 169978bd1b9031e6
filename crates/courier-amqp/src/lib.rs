//! RabbitMQ: a [`courier_core::Publisher`] sending persistent messages (`message_id` = outbox
//! id, `mandatory`, so unroutable ones come back) and waiting for publisher confirms.
//! Configure it with [`AmqpConfig`], from an `amqp://` URL.

#![warn(clippy::unwrap_used)]

pub mod config;
pub mod error;
pub mod publisher;

pub use config::AmqpConfig;
pub use error::{ConfigError, ConnectError};
pub use publisher::AmqpPublisher;
