//! Errors of configuring and connecting, and the one place that decides whether a failed
//! JetStream publish is worth retrying (`Unavailable`) or refused (`Rejected`).

use std::time::Duration;

use async_nats::jetstream::context::{PublishError as JsPublishError, PublishErrorKind};
use async_nats::subject::SubjectError;
use courier_core::PublishError;

/// A configuration or URL that cannot work; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid NATS configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Why [`crate::NatsPublisher::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration cannot work; retrying does not help.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No server answered within the timeout, or the handshake failed (refused, auth).
    #[error("cannot connect to NATS at {servers}: {source}")]
    Unreachable {
        /// The servers tried, without credentials.
        servers: String,
        /// What the client reported.
        #[source]
        source: async_nats::ConnectError,
    },
    /// Connecting took longer than the configured timeout.
    #[error("cannot connect to NATS at {servers}: no answer within {timeout:?}")]
    TimedOut {
        /// The servers tried, without credentials.
        servers: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The configured stream could not be looked up or created.
    #[error("cannot make sure JetStream stream {stream:?} exists: {message}")]
    Stream {
        /// The stream's name.
        stream: String,
        /// What the server or client reported.
        message: String,
    },
}

impl ConnectError {
    /// Whether trying again later may succeed (the server may come up); `false` for a
    /// configuration that can never work.
    pub fn is_retriable(&self) -> bool {
        !matches!(self, Self::Config(_))
    }
}

/// Maps a failed send or publish ack to the contract's two outcomes.
///
/// Refused (`Rejected`): an invalid subject, a message over the server's payload limit, no
/// stream capturing the subject (the server's "no responders"), and JetStream API errors
/// with a 4xx code (message over the stream's size limit, wrong expected sequence). Everything
/// else may heal by itself (`Unavailable`): timeouts, a lost connection, too many acks in
/// flight, and JetStream errors with a 5xx code (stream store failed, stream full with
/// `discard new`, no leader, JetStream not ready).
pub(crate) fn classify(error: &JsPublishError, subject: &str) -> PublishError {
    let detail = format!("NATS: {error}");
    match error.kind() {
        PublishErrorKind::StreamNotFound => {
            PublishError::Rejected(format!("no JetStream stream captures subject {subject:?} ({detail})"))
        }
        PublishErrorKind::MaxPayloadExceeded => PublishError::Rejected(detail),
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => PublishError::Rejected(detail),
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => {
            PublishError::Unavailable(detail)
        }
        PublishErrorKind::Other => classify_other(error, detail),
    }
}

fn classify_other(error: &JsPublishError, detail: String) -> PublishError {
    let source = std::error::Error::source(error);
    if source.is_some_and(|s| s.is::<SubjectError>()) {
        return PublishError::Rejected(detail);
    }
    match source.and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>()) {
        Some(api) if (400..500).contains(&api.code()) => PublishError::Rejected(detail),
        _ => PublishError::Unavailable(detail),
    }
}
