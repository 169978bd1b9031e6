//! The shared state every handler sees: the engine, an optional outbox and the server's own
//! limits.
//!
//! `ServerConfig` holds the HTTP-level bounds (payload and request sizes, requests in
//! flight, the bearer token); the engine enforces the queue-level limits of `courier_core::limits`.

use std::fmt;
use std::sync::Arc;

use courier_core::{limits, InvalidInput, QueueEngine};

use crate::outbox::OutboxAdmin;

/// Default largest decoded payload of one message: 1 MiB.
pub const PAYLOAD_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Default largest body of one JSON enqueue request (a batch): 16 MiB.
pub const ENQUEUE_BODY_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// Default most requests served at once; more get 503 `unavailable` at once.
pub const REQUESTS_IN_FLIGHT_MAX_DEFAULT: usize = 1024;
/// Largest body of every request other than enqueue (ack batches, state documents, policies).
pub const CONTROL_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Room for a message's JSON envelope next to its payload: attributes (64 KiB) and text fields.
const ENVELOPE_BYTES_MAX: usize = limits::ATTRIBUTES_BYTES_MAX + 64 * 1024;

/// HTTP-level settings. Build with `ServerConfig::default()` and struct update syntax.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest payload of one message after base64 decoding, in bytes.
    /// Default = [`PAYLOAD_BYTES_MAX_DEFAULT`] (1 MiB); at most `courier_core::limits::PAYLOAD_BYTES_MAX`.
    pub payload_bytes_max: usize,
    /// Largest body of one JSON enqueue request, in bytes; a single message of
    /// `payload_bytes_max` (base64-encoded) always fits even when this is smaller.
    /// Default = [`ENQUEUE_BODY_BYTES_MAX_DEFAULT`] (16 MiB).
    pub enqueue_body_bytes_max: usize,
    /// Most requests in flight at once (long polls included). Default = 1024.
    pub requests_in_flight_max: usize,
    /// When set, every endpoint but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`.
    /// Default = `None` (no auth).
    pub auth_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
            enqueue_body_bytes_max: ENQUEUE_BODY_BYTES_MAX_DEFAULT,
            requests_in_flight_max: REQUESTS_IN_FLIGHT_MAX_DEFAULT,
            auth_token: None,
        }
    }
}

// The token must never reach a log line, so Debug is written by hand.
impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("payload_bytes_max", &self.payload_bytes_max)
            .field("enqueue_body_bytes_max", &self.enqueue_body_bytes_max)
            .field("requests_in_flight_max", &self.requests_in_flight_max)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ServerConfig {
    /// Refuses settings outside what the engines accept, naming the setting.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.payload_bytes_max == 0 || self.payload_bytes_max > limits::PAYLOAD_BYTES_MAX {
            return Err(InvalidInput::new(format!(
                "payload_bytes_max must be between 1 and {}, got {}",
                limits::PAYLOAD_BYTES_MAX,
                self.payload_bytes_max
            )));
        }
        if self.enqueue_body_bytes_max == 0 {
            return Err(InvalidInput::new("enqueue_body_bytes_max must be at least 1"));
        }
        if self.requests_in_flight_max == 0 {
            return Err(InvalidInput::new("requests_in_flight_max must be at least 1"));
        }
        if self.auth_token.as_deref() == Some("") {
            return Err(InvalidInput::new("auth_token must not be empty when given"));
        }
        Ok(())
    }

    /// The body limit of the JSON enqueue route: the batch limit, but never less than one
    /// largest message encoded as base64 (4 bytes per 3) inside its envelope.
    pub fn enqueue_body_limit(&self) -> usize {
        let one_message = self.payload_bytes_max.div_ceil(3).saturating_mul(4) + ENVELOPE_BYTES_MAX;
        self.enqueue_body_bytes_max.max(one_message)
    }
}

/// What every handler gets: the engine, an application's outbox if any, and the configuration.
#[derive(Clone)]
pub struct AppState {
    /// The queue engine all requests go to.
    pub engine: Arc<dyn QueueEngine>,
    /// The outbox the `/v1/outbox` routes show; `None` and they answer 404.
    pub outbox: Option<Arc<dyn OutboxAdmin>>,
    /// HTTP-level settings.
    pub config: ServerConfig,
}

impl AppState {
    /// State for `engine` with `config`, without an outbox.
    pub fn new(engine: Arc<dyn QueueEngine>, config: ServerConfig) -> Self {
        Self {
            engine,
            outbox: None,
            config,
        }
    }

    /// Serves `outbox` on the `/v1/outbox` routes.
    pub fn with_outbox(mut self, outbox: Arc<dyn OutboxAdmin>) -> Self {
        self.outbox = Some(outbox);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_limit_always_fits_one_largest_message() {
        let small_batch = ServerConfig {
            enqueue_body_bytes_max: 10,
            ..ServerConfig::default()
        };
        assert!(small_batch.enqueue_body_limit() > PAYLOAD_BYTES_MAX_DEFAULT * 4 / 3);
        assert_eq!(
            ServerConfig::default().enqueue_body_limit(),
            ENQUEUE_BODY_BYTES_MAX_DEFAULT
        );
    }

    #[test]
    fn config_refuses_out_of_range_settings() {
        assert!(ServerConfig::default().validate().is_ok());
        let too_big = ServerConfig {
            payload_bytes_max: limits::PAYLOAD_BYTES_MAX + 1,
            ..ServerConfig::default()
        };
        assert!(too_big
            .validate()
            .unwrap_err()
            .to_string()
            .contains("payload_bytes_max"));
        let empty_token = ServerConfig {
            auth_token: Some(String::new()),
            ..ServerConfig::default()
        };
        assert!(empty_token.validate().is_err());
    }
}
