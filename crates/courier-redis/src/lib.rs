//! Everything Redis: a Streams [`courier_core::Publisher`] that appends each message with `XADD`
//! (fields `id`, `key`, `payload`, `content_type`, `created_at`, `h:<header>`), one pipeline
//! per batch, over a connection that reconnects by itself. Configure it with [`RedisConfig`].

#![warn(clippy::unwrap_used)]

pub mod config;
pub mod error;
pub mod publisher;

pub use config::RedisConfig;
pub use error::{ConfigError, ConnectError};
pub use publisher::RedisPublisher;
