//! Errors of configuring the HTTP publishers and of checking a `courier serve` at connect.

/// A configuration or URL that cannot work; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid HTTP publisher configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Why [`crate::CourierHttpPublisher::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration cannot work; retrying does not help.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server did not answer (refused, timed out).
    #[error("cannot reach courier serve at {url}: {message}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What went wrong, with its causes.
        message: String,
    },
    /// The server answered with an error (401 for a missing or wrong token, 503 not ready).
    #[error("courier serve at {url} answered HTTP {status}: {message}")]
    Refused {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        message: String,
    },
}

impl ConnectError {
    /// Whether trying again later may succeed; `false` for a configuration that can never work.
    pub fn is_retriable(&self) -> bool {
        !matches!(self, Self::Config(_))
    }
}
