//! The inbox on SQLite: the `inbox` table (created by [`crate::sqlite::migrate`]), written in
//! the consumer's transaction. The same methods and meanings as [`crate::inbox::PgInbox`].

use std::sync::Arc;

use async_trait::async_trait;
use courier_core::{Clock, SystemClock, Timestamp};
use sqlx::{Connection, SqliteConnection, SqlitePool};

use crate::inbox::{
    finish, validate_ids, validate_metadata, HandleError, Handled, InboxError, ProcessedStore, PURGE_CHUNK_ROWS,
};

const MARK: &str = "\
INSERT INTO inbox (group_name, message_id, processed_at, metadata) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT DO NOTHING";
const IS_PROCESSED: &str = "SELECT EXISTS (SELECT 1 FROM inbox WHERE group_name = ?1 AND message_id = ?2)";
const PURGE: &str = "\
DELETE FROM inbox WHERE (group_name, message_id) IN
    (SELECT group_name, message_id FROM inbox WHERE processed_at < ?1 LIMIT ?2)";

/// The inbox in one SQLite database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteInbox {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

impl SqliteInbox {
    /// The inbox reached through `pool`.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            clock: Arc::new(SystemClock),
        }
    }

    /// Stamps records with `clock`. Default = the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Records that `group` handled `message_id`, in the caller's transaction (pass `&mut tx`).
    /// Returns `true` on the first record, `false` if it was there already (skip the message).
    /// `metadata` must be JSON; it is kept as written.
    pub async fn mark_processed(
        &self,
        conn: &mut SqliteConnection,
        group: &str,
        message_id: &str,
        metadata: Option<&str>,
    ) -> Result<bool, InboxError> {
        validate_ids(group, message_id)?;
        validate_metadata(metadata)?;
        let done = sqlx::query(MARK)
            .bind(group)
            .bind(message_id)
            .bind(self.clock.now().as_millis())
            .bind(metadata)
            .execute(conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether `group` has handled `message_id` (as seen by `conn`'s transaction, if any).
    pub async fn is_processed(
        &self,
        conn: &mut SqliteConnection,
        group: &str,
        message_id: &str,
    ) -> Result<bool, InboxError> {
        validate_ids(group, message_id)?;
        let found = sqlx::query_scalar(IS_PROCESSED)
            .bind(group)
            .bind(message_id)
            .fetch_one(conn)
            .await?;
        Ok(found)
    }

    /// Deletes records processed strictly before `before`, in chunks; returns how many.
    pub async fn purge_processed_before(&self, before: Timestamp) -> Result<u64, InboxError> {
        let mut total = 0;
        loop {
            let done = sqlx::query(PURGE)
                .bind(before.as_millis())
                .bind(i64::try_from(PURGE_CHUNK_ROWS).unwrap_or(i64::MAX))
                .execute(&self.pool)
                .await?;
            total += done.rows_affected();
            if done.rows_affected() < PURGE_CHUNK_ROWS as u64 {
                return Ok(total);
            }
        }
    }

    /// Runs `handler` at most once per `(group, message_id)` in effect: in one transaction it
    /// records the message and, if it was new, runs the handler on the same connection; both
    /// commit together or neither does. Returns [`Handled::AlreadyProcessed`] without running
    /// the handler for a message handled before.
    pub async fn handle_once<T, E>(
        &self,
        group: &str,
        message_id: &str,
        metadata: Option<&str>,
        handler: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, E>,
    ) -> Result<Handled<T>, HandleError<E>> {
        let mut conn = self.pool.acquire().await.map_err(InboxError::from)?;
        // IMMEDIATE takes the write lock first, so two deliveries of one message serialize
        // here instead of failing to upgrade a read lock later.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(InboxError::from)?;
        let is_new = self.mark_processed(&mut tx, group, message_id, metadata).await?;
        finish(tx, is_new, handler).await
    }
}

#[async_trait]
impl ProcessedStore for SqliteInbox {
    async fn purge_processed_before(&self, before: Timestamp) -> Result<u64, InboxError> {
        SqliteInbox::purge_processed_before(self, before).await
    }

    fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }
}
