//! Courier's transactional outbox, relay and inbox.
//!
//! An application writes messages in the same database transaction as its own rows; a relay
//! claims and publishes them through a [`courier_core::Publisher`]; the inbox records handled
//! message ids inside the consumer's transaction so a redelivery has no second effect.
//!
//! - Writing: [`postgres::PgOutbox::write`] / [`sqlite::SqliteOutbox::write`] take the caller's
//!   transaction (`&mut tx`). Applications in other languages INSERT rows with plain SQL; the
//!   table contract is `docs/specs/outbox-sql-contract.md`.
//! - Schema: [`postgres::migrate`] and [`sqlite::migrate`] create the outbox and inbox tables.
//! - Relaying: a [`Relay`] built with [`RelayOptions`] claims batches under a lease, publishes
//!   them, and settles each message by id: published, retried with backoff, or failed at max
//!   attempts. Messages with one key are published in write order; see [`relay`] for the
//!   argument.
//! - Operating: failed messages are listed and retried through the outbox handles ([`admin`]).
//! - Publishing into Courier's own queues: [`QueuePublisher`].
//! - Consuming exactly once in effect: [`inbox`].
//!
//! It is not:
//! - a broker client (publishers live in `courier-nats`, `courier-redis`, `courier-amqp`,
//!   `courier-webhook`, each implementing [`courier_core::Publisher`]);
//! - a connection manager: the application owns its pool and passes it in.

#![warn(clippy::unwrap_used)]

pub mod admin;
pub mod error;
pub mod inbox;
pub mod message;
mod migrations;
#[doc(hidden)]
pub mod plans;
pub mod postgres;
mod queue;
pub mod relay;
pub mod sqlite;
mod store;
mod wake;

pub use admin::{FailedMessage, FailedPage, PageRequest, StatusCounts};
pub use error::{InvalidOption, MigrateError, OutboxError, WriteError};
pub use message::OutboxMessage;
pub use queue::QueuePublisher;
pub use relay::{Relay, RelayOptions, Retention};
pub use wake::RelayWaker;
