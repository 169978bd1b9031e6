//! Courier's transactional outbox, relay and inbox.
//!
//! An application writes messages in the same database transaction as its own rows; a relay
//! claims and publishes them through a [`courier_core::Publisher`]; the inbox records handled
//! message ids inside the consumer's transaction so a redelivery has no second effect.

#![warn(clippy::unwrap_used)]
