//! Removes idempotency records whose dedup window has passed, as the SQLite engine's writer
//! does: a record past its window decides nothing (the enqueue's upsert overwrites it), so
//! without a sweep the table would only grow.
//!
//! Every node sweeps on its own; deleting rows that are already past their window is safe to
//! run anywhere, any number of times.

use std::sync::Arc;
use std::time::Duration;

use courier_core::Clock;
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// Most records one statement deletes, so a large backlog is worked off in short transactions.
const RECORDS_PER_STATEMENT_MAX: i64 = 10_000;

/// Sweeps every `interval` until the pool closes or the task is aborted.
pub(crate) fn spawn(pool: PgPool, clock: Arc<dyn Clock>, interval: Duration, timeout: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match sweep(&pool, clock.now().as_millis(), timeout).await {
                Ok(0) => {}
                Ok(removed) => tracing::debug!(removed, "swept expired idempotency records"),
                Err(sqlx::Error::PoolClosed) => return,
                // Logged and retried at the next tick: the records only cost space meanwhile.
                Err(error) => tracing::warn!(%error, "sweeping expired idempotency records failed"),
            }
        }
    })
}

/// Deletes every record expired at `now`, in statements of bounded size; returns how many.
/// Each statement is bounded by `timeout`, so a database that stopped answering cannot stall
/// the sweeper for good; each commits on its own, so a sweep cut short keeps what it did.
async fn sweep(pool: &PgPool, now: i64, timeout: Duration) -> Result<u64, sqlx::Error> {
    let mut removed = 0;
    loop {
        let statement = sqlx::query(
            // The condition is repeated on the deleted row: an enqueue that re-claims an
            // expired key meanwhile gives it a new window, and that record must stay.
            "DELETE FROM idempotency WHERE ctid = ANY(ARRAY(\
               SELECT ctid FROM idempotency WHERE expires_at <= $1 LIMIT $2)) AND expires_at <= $1",
        )
        .bind(now)
        .bind(RECORDS_PER_STATEMENT_MAX)
        .execute(pool);
        let done = crate::tx::within_limit(timeout, statement).await?.rows_affected();
        removed += done;
        if done < u64::try_from(RECORDS_PER_STATEMENT_MAX).unwrap_or(u64::MAX) {
            return Ok(removed);
        }
    }
}
