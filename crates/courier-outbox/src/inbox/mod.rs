//! The inbox: the consumer's side of exactly-once effect. Delivery is at least once, so a
//! handler may see a message twice; recording `(group, message_id)` in the handler's own
//! transaction makes the second delivery find the record and skip.
//!
//! [`PgInbox`] and [`SqliteInbox`] have the same methods: `mark_processed` (in the caller's
//! transaction), `is_processed`, `purge_processed_before`, and `handle_once`, which runs a
//! handler and the mark in one transaction. [`run_processed_cleanup`] purges old records.
//!
//! Keep records at least as long as a message can be redelivered (the outbox retention, the
//! broker's redelivery window), or a late duplicate is handled again.

mod postgres;
mod sqlite;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use courier_core::{Clock, ErrorKind, Timestamp};

use crate::error::db_kind;

pub use postgres::PgInbox;
pub use sqlite::SqliteInbox;

/// Longest consumer group name or message id, in bytes.
pub const ID_BYTES_MAX: usize = 1024;
/// Largest metadata document, in bytes.
pub const METADATA_BYTES_MAX: usize = 64 * 1024;
/// Most records one purge statement deletes, so a purge never holds locks for long.
pub const PURGE_CHUNK_ROWS: usize = 10_000;

/// Errors of the inbox.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The metadata is not valid JSON; nothing was recorded.
    #[error("inbox metadata is not valid JSON: {0}")]
    InvalidMetadata(#[from] serde_json::Error),
    /// A group name, message id or metadata breaks a limit; nothing was recorded.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("inbox database operation failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl InboxError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidMetadata(_) | Self::Invalid(_) => ErrorKind::InvalidInput,
            Self::Database(e) => db_kind(e),
        }
    }
}

/// Whether `handle_once` ran the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled<T> {
    /// The message was new: the handler ran and its writes committed with the record.
    Ran(T),
    /// The message was handled before; the handler did not run.
    AlreadyProcessed,
}

/// Errors of `handle_once`. Either way the transaction was rolled back: no record, no writes.
#[derive(Debug, thiserror::Error)]
pub enum HandleError<E> {
    /// The inbox (or the transaction around it) failed.
    #[error(transparent)]
    Inbox(#[from] InboxError),
    /// The handler failed.
    #[error("message handler failed: {0}")]
    Handler(E),
}

/// What the cleanup loop needs: a purge and a clock.
#[async_trait]
pub trait ProcessedStore: Send + Sync {
    /// Deletes records processed strictly before `before`; returns how many.
    async fn purge_processed_before(&self, before: Timestamp) -> Result<u64, InboxError>;

    /// The clock records are stamped with.
    fn clock(&self) -> &dyn Clock;
}

/// Purges records older than `retention` every `interval` until `shutdown` completes (run it
/// on a task of its own). A zero retention or interval disables the loop: it logs that and
/// returns at once, so a misconfiguration is visible. A failed purge is logged and the loop
/// goes on.
pub async fn run_processed_cleanup(
    store: &impl ProcessedStore,
    retention: Duration,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    if retention.is_zero() || interval.is_zero() {
        tracing::info!(
            ?retention,
            ?interval,
            "inbox cleanup disabled (zero retention or interval)"
        );
        return;
    }
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(interval) => {}
        }
        let before = Timestamp(store.clock().now().as_millis().saturating_sub(retention_ms));
        match store.purge_processed_before(before).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, %before, "inbox cleanup purged processed records"),
            Err(error) => tracing::warn!(%error, "inbox cleanup failed; trying again next interval"),
        }
    }
}

/// The part of `handle_once` both databases share: `tx` holds the record if `is_new`; runs
/// `handler` on it then, and ends the transaction either way. A handler error rolls back its
/// writes and the record together.
pub(crate) async fn finish<DB: sqlx::Database, T, E>(
    mut tx: sqlx::Transaction<'_, DB>,
    is_new: bool,
    handler: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, E>,
) -> Result<Handled<T>, HandleError<E>> {
    if !is_new {
        tx.rollback().await.map_err(InboxError::from)?;
        return Ok(Handled::AlreadyProcessed);
    }
    match handler(&mut *tx).await {
        Ok(value) => {
            tx.commit().await.map_err(InboxError::from)?;
            Ok(Handled::Ran(value))
        }
        Err(error) => {
            // If the rollback fails the connection is closed, and the database rolls back then.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(%rollback, "inbox rollback failed; the database rolls back on disconnect");
            }
            Err(HandleError::Handler(error))
        }
    }
}

/// Checks a group name and message id.
pub(crate) fn validate_ids(group: &str, message_id: &str) -> Result<(), InboxError> {
    for (field, value) in [("group", group), ("message_id", message_id)] {
        if value.is_empty() || value.len() > ID_BYTES_MAX || value.contains('\0') {
            return Err(InboxError::Invalid(format!(
                "{field} must be 1 to {ID_BYTES_MAX} bytes without NUL, got {} bytes",
                value.len()
            )));
        }
    }
    Ok(())
}

/// Checks that `metadata`, if any, is JSON within the size limit.
pub(crate) fn validate_metadata(metadata: Option<&str>) -> Result<(), InboxError> {
    let Some(text) = metadata else {
        return Ok(());
    };
    if text.len() > METADATA_BYTES_MAX {
        return Err(InboxError::Invalid(format!(
            "metadata is {} bytes; the limit is {METADATA_BYTES_MAX}",
            text.len()
        )));
    }
    serde_json::from_str::<serde_json::Value>(text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_must_be_json() {
        assert!(validate_metadata(None).is_ok());
        assert!(validate_metadata(Some(r#"{"printer":"p1"}"#)).is_ok());
        assert!(validate_metadata(Some("[1, 2]")).is_ok());
        assert!(matches!(
            validate_metadata(Some("{oops")),
            Err(InboxError::InvalidMetadata(_))
        ));
        assert!(matches!(
            validate_metadata(Some("")),
            Err(InboxError::InvalidMetadata(_))
        ));
        let big = format!("\"{}\"", "x".repeat(METADATA_BYTES_MAX));
        assert!(matches!(validate_metadata(Some(&big)), Err(InboxError::Invalid(_))));
    }

    #[test]
    fn ids_are_bounded() {
        assert!(validate_ids("g", "m").is_ok());
        assert!(validate_ids("", "m").is_err());
        assert!(validate_ids("g", "").is_err());
        assert!(validate_ids("g", &"m".repeat(ID_BYTES_MAX + 1)).is_err());
        assert!(validate_ids("g\0", "m").is_err());
    }
}
