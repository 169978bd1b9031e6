//! Errors of configuring and connecting, and the one place that decides whether a failed
//! AMQP publish is worth retrying (`Unavailable`) or refused (`Rejected`).

use std::time::Duration;

use courier_core::PublishError;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::ErrorKind;

/// A configuration or URL that cannot work; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid AMQP configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Why [`crate::AmqpPublisher::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration cannot work; retrying does not help.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker refused the connection or the handshake (refused, auth, no such vhost),
    /// or setting up the confirm channel failed.
    #[error("cannot connect to RabbitMQ at {broker}: {source}")]
    Unreachable {
        /// `host:port/vhost`, without credentials.
        broker: String,
        /// What lapin reported.
        #[source]
        source: lapin::Error,
    },
    /// Connecting took longer than the configured timeout.
    #[error("cannot connect to RabbitMQ at {broker}: no answer within {timeout:?}")]
    TimedOut {
        /// `host:port/vhost`, without credentials.
        broker: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The configured exchange does not exist (or may not be used).
    #[error("exchange {exchange:?} on RabbitMQ at {broker}: {source}")]
    Exchange {
        /// `host:port/vhost`, without credentials.
        broker: String,
        /// The exchange's name.
        exchange: String,
        /// What the broker answered.
        #[source]
        source: lapin::Error,
    },
}

impl ConnectError {
    /// Whether trying again later may succeed (the broker may come up, the exchange may be
    /// declared); `false` for a configuration that can never work.
    pub fn is_retriable(&self) -> bool {
        !matches!(self, Self::Config(_))
    }
}

/// Maps a failed publish or confirm to the contract's two outcomes, and says whether the
/// channel is still usable.
///
/// Refused (`Rejected`): the broker closed the channel with a soft error about this message
/// or its destination: 404 no such exchange, 403 access refused, 406 precondition failed,
/// 311 content too large (and 312/313, though those come as returns). Everything else may heal
/// by itself (`Unavailable`): I/O errors, a missed heartbeat, a closed connection or channel,
/// 405 resource locked and every connection-level (hard) error.
pub(crate) fn classify(error: &lapin::Error) -> PublishError {
    let detail = format!("RabbitMQ: {error}");
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED) => PublishError::Unavailable(detail),
            AMQPErrorKind::Soft(_) => PublishError::Rejected(detail),
            AMQPErrorKind::Hard(_) => PublishError::Unavailable(detail),
        },
        _ => PublishError::Unavailable(detail),
    }
}
