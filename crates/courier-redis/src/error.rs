//! Errors of configuring and connecting, and the one place that decides whether a failed
//! `XADD` is worth retrying (`Unavailable`) or refused (`Rejected`).

use std::time::Duration;

use courier_core::PublishError;
use redis::RedisError;

/// A configuration or URL that cannot work; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Redis configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Why [`crate::RedisPublisher::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration cannot work; retrying does not help.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server refused the connection or the handshake (auth, no such database).
    #[error("cannot connect to Redis at {server}: {source}")]
    Unreachable {
        /// `host:port`, without credentials.
        server: String,
        /// What the redis crate reported.
        #[source]
        source: RedisError,
    },
    /// Connecting took longer than the configured timeout.
    #[error("cannot connect to Redis at {server}: no answer within {timeout:?}")]
    TimedOut {
        /// `host:port`, without credentials.
        server: String,
        /// The configured timeout.
        timeout: Duration,
    },
}

impl ConnectError {
    /// Whether trying again later may succeed (the server may come up); `false` for a
    /// configuration that can never work.
    pub fn is_retriable(&self) -> bool {
        !matches!(self, Self::Config(_))
    }
}

/// Server error codes that refuse the command itself: retrying it unchanged fails again.
const REFUSALS: [&str; 5] = ["WRONGTYPE", "ERR", "NOPERM", "CROSSSLOT", "EXECABORT"];

/// Maps a failed `XADD` (or pipeline) to the contract's two outcomes.
///
/// Refused (`Rejected`): `WRONGTYPE` (the destination key holds something other than a
/// stream), `ERR` (a malformed command), `NOPERM` (ACL), `CROSSSLOT`. Everything else may heal
/// by itself (`Unavailable`): I/O errors, timeouts, dropped connections, `OOM` (maxmemory),
/// `LOADING`, `BUSY`, `READONLY` (a replica after failover), `MASTERDOWN`, `TRYAGAIN`,
/// `CLUSTERDOWN`, `MOVED`/`ASK`.
pub(crate) fn classify(error: &RedisError) -> PublishError {
    let detail = format!("Redis: {error}");
    match error.code() {
        Some(code) if REFUSALS.contains(&code) => PublishError::Rejected(detail),
        _ => PublishError::Unavailable(detail),
    }
}
