//! HTTP push: a [`courier_core::Publisher`] that POSTs each message as a CloudEvent in binary
//! mode ([`WebhookPublisher`]), and one that enqueues into a `courier serve` over its HTTP API
//! ([`CourierHttpPublisher`]). Both classify answers like Knative's retry logic (`retry`).

#![warn(clippy::unwrap_used)]

pub mod cloudevents;
pub mod config;
pub mod courier;
pub mod error;
pub mod publisher;
mod retry;

pub use config::{CourierHttpConfig, WebhookConfig};
pub use courier::CourierHttpPublisher;
pub use error::{ConfigError, ConnectError};
pub use publisher::WebhookPublisher;
