//! The outbox on PostgreSQL: [`PgOutbox`] writes messages in the caller's transaction, answers
//! the operators' questions (failed rows, retries, counts) and is the store a [`crate::Relay`]
//! claims from. [`migrate`] creates the tables.
//!
//! Tables live in a schema of their own (default [`SCHEMA_DEFAULT`]) so the outbox can share a
//! database with the application; every statement names it, whatever the connection's search path.

mod admin;
mod schema;
mod store;
mod wake;
mod write;

use std::sync::Arc;

use courier_core::{Clock, SystemClock};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::admin::{FailedPage, PageRequest, StatusCounts};
use crate::error::{InvalidOption, OutboxError, WriteError};
use crate::message::OutboxMessage;
use crate::wake::WakeHub;

pub use schema::{latest_version, migrate};

/// The schema the outbox tables live in unless told otherwise; the same as Courier's queue
/// engine, whose tables have other names.
pub const SCHEMA_DEFAULT: &str = "courier";
/// Longest schema name: PostgreSQL's identifier limit.
pub const SCHEMA_BYTES_MAX: usize = 63;

/// How relays in other processes learn that a write committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WakeMode {
    /// The write marks its transaction so the table's trigger does not notify; the caller
    /// commits with [`PgOutbox::commit`] (or calls [`PgOutbox::wake`] after its own commit), which
    /// sends one coalesced `NOTIFY` outside any transaction. A caller that does neither is picked
    /// up at the relays' next poll. A `NOTIFY` inside a transaction serializes committing
    /// transactions on a database-wide lock; measured with 8 concurrent writers on the
    /// development machine, commits dropped from about 5,100/s to 2,500/s.
    #[default]
    AfterCommit,
    /// The table's trigger notifies inside the writing transaction, so relays wake at its commit
    /// whatever the caller does afterwards, at the cost above. Plain SQL inserts behave like this.
    InTransaction,
}

/// The outbox in one PostgreSQL schema: the writer, the operators' API, and a relay's store.
///
/// Cheap to clone; clones share the pool, the clock and the wake-ups.
#[derive(Debug, Clone)]
pub struct PgOutbox {
    pub(crate) pool: PgPool,
    schema: Arc<str>,
    pub(crate) sql: Arc<Statements>,
    pub(crate) clock: Arc<dyn Clock>,
    wake_mode: WakeMode,
    pub(crate) hub: Arc<WakeHub>,
    notifier: Arc<wake::Notifier>,
}

/// Every statement, with the schema-qualified table names filled in once.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) insert_after_commit: String,
    pub(crate) insert_in_transaction: String,
    pub(crate) claim: String,
    pub(crate) renew: String,
    pub(crate) publish_keep: String,
    pub(crate) publish_delete: String,
    pub(crate) retry: String,
    pub(crate) delete_published: String,
    pub(crate) list_failed: String,
    pub(crate) retry_failed: String,
    pub(crate) retry_all_failed: String,
    pub(crate) counts: String,
}

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let table = format!("\"{schema}\".outbox");
        let fill = |template: &str| template.replace("{t}", &table);
        Self {
            insert_after_commit: write::insert_sql(&table, WakeMode::AfterCommit),
            insert_in_transaction: write::insert_sql(&table, WakeMode::InTransaction),
            claim: fill(store::CLAIM),
            renew: fill(store::RENEW),
            publish_keep: fill(store::PUBLISH_KEEP),
            publish_delete: fill(store::PUBLISH_DELETE),
            retry: fill(store::RETRY),
            delete_published: fill(store::DELETE_PUBLISHED),
            list_failed: fill(admin::LIST_FAILED),
            retry_failed: fill(admin::RETRY_FAILED),
            retry_all_failed: fill(admin::RETRY_ALL_FAILED),
            counts: fill(admin::COUNTS),
        }
    }
}

impl PgOutbox {
    /// The outbox in `schema` (see [`SCHEMA_DEFAULT`]) reached through `pool`, with the system
    /// clock and [`WakeMode::AfterCommit`]. Run [`migrate`] first (or `courier migrate`).
    pub fn new(pool: PgPool, schema: &str) -> Result<Self, InvalidOption> {
        validate_schema(schema)?;
        Ok(Self {
            notifier: Arc::new(wake::Notifier::new(pool.clone(), wake::channel(schema))),
            pool,
            schema: schema.into(),
            sql: Arc::new(Statements::new(schema)),
            clock: Arc::new(SystemClock),
            wake_mode: WakeMode::default(),
            hub: Arc::new(WakeHub::default()),
        })
    }

    /// Uses `clock` for written rows' times and for relays built on this outbox (claims,
    /// backoff, retention). Tests pass a `ManualClock`. Default = the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How other processes' relays are woken after a write. Default = [`WakeMode::AfterCommit`].
    pub fn with_wake_mode(mut self, mode: WakeMode) -> Self {
        self.wake_mode = mode;
        self
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The pool relays and operator calls use.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes `messages` in the caller's transaction (pass `&mut tx`); they are published once it
    /// commits, and never if it rolls back. Returns their ids, in order. One statement whatever
    /// the number of messages; messages of one write get consecutive `seq`s in their order.
    ///
    /// With [`WakeMode::AfterCommit`] (the default), commit with [`PgOutbox::commit`] or call
    /// [`PgOutbox::wake`] after committing, or relays find the messages at their next poll.
    pub async fn write(&self, conn: &mut PgConnection, messages: &[OutboxMessage]) -> Result<Vec<Uuid>, WriteError> {
        let sql = match self.wake_mode {
            WakeMode::AfterCommit => &self.sql.insert_after_commit,
            WakeMode::InTransaction => &self.sql.insert_in_transaction,
        };
        write::write(conn, sql, messages, self.clock.now()).await
    }

    /// Commits `tx` and then wakes the relays (see [`PgOutbox::wake`]).
    pub async fn commit(&self, tx: Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        tx.commit().await?;
        self.wake();
        Ok(())
    }

    /// Wakes this process's relays built on this outbox at once, and every other relay on the
    /// schema through one `NOTIFY` sent in the background (coalesced with other wakes while
    /// one is in flight). Call it after a commit that wrote messages. Never blocks.
    pub fn wake(&self) {
        self.hub.wake_all();
        self.notifier.notify();
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

/// Schema names are spliced into SQL, so only plain lowercase identifiers are accepted:
/// `[a-z_][a-z0-9_]{0,62}`.
pub(crate) fn validate_schema(schema: &str) -> Result<(), InvalidOption> {
    let mut bytes = schema.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if first_ok && rest_ok && schema.len() <= SCHEMA_BYTES_MAX {
        Ok(())
    } else {
        Err(InvalidOption(format!(
            "schema {schema:?} is invalid: use [a-z_][a-z0-9_]*, at most {SCHEMA_BYTES_MAX} bytes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["courier", "_x", "a1_b", &"a".repeat(63)] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "A", "a-b", "a\"b", "a b", &"a".repeat(64)] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }
}
