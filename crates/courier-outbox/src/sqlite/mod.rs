//! The outbox on SQLite: [`SqliteOutbox`] writes messages in the caller's transaction, answers
//! the operators' questions and is the store a [`crate::Relay`] claims from. [`migrate`]
//! creates the tables.
//!
//! SQLite has one writer at a time, so a claim is a single `UPDATE … RETURNING` and needs no
//! row locks. Relays in this process are woken by the outbox handle the writer used; writes
//! by other processes are found at the next poll.

mod admin;
mod schema;
mod store;
mod write;

use std::sync::Arc;

use courier_core::{Clock, SystemClock};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use uuid::Uuid;

use crate::admin::{FailedPage, PageRequest, StatusCounts};
use crate::error::{OutboxError, WriteError};
use crate::message::OutboxMessage;
use crate::wake::WakeHub;

pub use schema::{latest_version, migrate};

/// The outbox in one SQLite database: the writer, the operators' API, and a relay's store.
///
/// Cheap to clone; clones share the pool, the clock and the wake-ups. Open the pool in WAL mode
/// so the relay's reads do not wait for the application's writes.
#[derive(Debug, Clone)]
pub struct SqliteOutbox {
    pub(crate) pool: SqlitePool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hub: Arc<WakeHub>,
}

impl SqliteOutbox {
    /// The outbox reached through `pool`, with the system clock. Run [`migrate`] first.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            clock: Arc::new(SystemClock),
            hub: Arc::new(WakeHub::default()),
        }
    }

    /// Uses `clock` for written rows' times and for relays built on this outbox (claims,
    /// backoff, retention). Tests pass a `ManualClock`. Default = the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The pool relays and operator calls use.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Writes `messages` in the caller's transaction (pass `&mut tx`); they are published once it
    /// commits, and never if it rolls back. Returns their ids, in order; messages of one write
    /// get consecutive `seq`s in their order. Commit with [`SqliteOutbox::commit`] (or call
    /// [`SqliteOutbox::wake`] after committing) so this process's relays look at once.
    pub async fn write(
        &self,
        conn: &mut SqliteConnection,
        messages: &[OutboxMessage],
    ) -> Result<Vec<Uuid>, WriteError> {
        write::write(conn, messages, self.clock.now()).await
    }

    /// Commits `tx` and then wakes the relays built on this outbox.
    pub async fn commit(&self, tx: Transaction<'_, Sqlite>) -> Result<(), sqlx::Error> {
        tx.commit().await?;
        self.wake();
        Ok(())
    }

    /// Wakes this process's relays built on this outbox at once. Never blocks.
    pub fn wake(&self) {
        self.hub.wake_all();
    }

    /// Failed rows (max attempts reached) in write order, one page at a time.
    pub async fn list_failed(&self, page: PageRequest) -> Result<FailedPage, OutboxError> {
        admin::list_failed(self, page).await
    }

    /// Puts the failed rows among `ids` back to pending with a fresh attempt count, due now.
    /// Returns how many were failed and are pending again; ids that are not failed are ignored.
    pub async fn retry_failed(&self, ids: &[Uuid]) -> Result<u64, OutboxError> {
        admin::retry_failed(self, ids).await
    }

    /// Puts every failed row back to pending with a fresh attempt count, due now.
    pub async fn retry_all_failed(&self) -> Result<u64, OutboxError> {
        admin::retry_all_failed(self).await
    }

    /// How many rows are pending, published (kept by retention) and failed.
    pub async fn counts(&self) -> Result<StatusCounts, OutboxError> {
        admin::counts(self).await
    }
}
