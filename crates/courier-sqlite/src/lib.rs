//! Courier's embedded queue engine on SQLite, the default engine.
//!
//! One writer thread owns the database and runs every operation; concurrent operations
//! share one transaction and one fsync (group commit), and nothing is acknowledged before
//! its commit is durable (WAL, `synchronous = FULL`). See `docs/specs/queue-semantics.md`
//! for the contract and `ARCHITECTURE.md` for how the pieces fit.

#![warn(clippy::unwrap_used)]

mod admin;
mod engine;
mod enqueue;
mod error;
mod lease;
mod options;
mod queues;
mod receive;
mod row;
mod schema;
mod writer;

pub use engine::SqliteEngine;
pub use options::{CommitHook, SqliteOptions, Synchronous};
