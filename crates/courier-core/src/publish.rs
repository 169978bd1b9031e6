//! The [`Publisher`] contract: how a relay hands messages to a destination (Courier's queue,
//! NATS JetStream, Redis Streams, RabbitMQ, an HTTP webhook) and learns, per message, which
//! ones arrived. The outbox relay and every publisher meet here, so neither depends on the other.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::time::Timestamp;

/// One message on its way from an outbox to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The outbox row's id. Publishers pass it on as the message id (JetStream's
    /// `Nats-Msg-Id`, AMQP `message_id`, CloudEvents `id`, Courier's idempotency key) so a
    /// re-publish after a lost acknowledgement is recognised downstream.
    pub id: Uuid,
    /// Where it goes: a subject, stream, exchange routing key, queue name or URL path,
    /// as the publisher defines it.
    pub destination: String,
    /// Ordering and partitioning key: messages with one key are published in write order.
    pub key: Option<String>,
    /// The body, opaque bytes.
    pub payload: Bytes,
    /// Application headers, passed through as the destination's headers or attributes.
    pub headers: BTreeMap<String, String>,
    /// MIME type of the payload, if known.
    pub content_type: Option<String>,
    /// When the application wrote it, by the writer's clock.
    pub created_at: Timestamp,
}

/// Why one message was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The destination could not be reached or did not confirm in time; retrying later may
    /// succeed. The message may or may not have arrived (the id makes a retry safe).
    #[error("destination unavailable: {0}")]
    Unavailable(String),
    /// The destination refused this message (bad subject, no such stream, payload too big);
    /// retrying it unchanged fails again. Still retried up to the attempt limit, since a
    /// refusal can come from configuration the operator fixes.
    #[error("destination refused the message: {0}")]
    Rejected(String),
}

/// A destination for relayed messages.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `batch` and returns exactly one result per message, in the batch's order.
    /// `Ok` means the destination has durably accepted the message (acknowledged, confirmed,
    /// 2xx), not merely that it was sent.
    ///
    /// Messages of one key come in write order; a publisher must not reorder them, and after
    /// a failure for a key it should not publish that key's later messages of the batch
    /// (the relay records them as not attempted either way).
    async fn publish(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PublishError>>;

    /// A short name for logs and metrics, such as `nats` or `redis`.
    fn name(&self) -> &str;
}
