//! The retention cleanup: every cleanup interval, delete published rows older than the
//! retention, in bounded chunks. A failure is logged and the loop carries on; the next round
//! deletes what this one could not.

use std::time::Duration;

use courier_core::{Clock, Timestamp};
use tokio::sync::watch;

use crate::relay::options::Retention;
use crate::store::Store;

/// Most rows one delete statement removes, so a cleanup never holds locks for long.
pub(crate) const CLEANUP_CHUNK_ROWS: usize = 10_000;

/// Runs until `stop` turns true. Does nothing unless `retention` keeps rows for a while.
pub(crate) async fn run(
    store: &dyn Store,
    clock: &dyn Clock,
    retention: Retention,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let age = match retention.normalized() {
        Retention::KeepFor(age) => age,
        Retention::KeepForever => {
            // Logged so that a retention of 0 meant as "delete at once" shows in the log.
            tracing::info!("outbox cleanup disabled: published rows are kept until deleted by hand");
            return;
        }
        Retention::DeleteOnPublish => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() || stop.has_changed().is_err() {
            return;
        }
        let cutoff = Timestamp(clock.now().as_millis().saturating_sub(millis(age)));
        match delete_before(store, cutoff).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, %cutoff, "outbox cleanup deleted published rows"),
            Err(error) => tracing::warn!(%error, "outbox cleanup failed; trying again next interval"),
        }
    }
}

/// Deletes every published row published before `cutoff`, chunk by chunk.
pub(crate) async fn delete_before(store: &dyn Store, cutoff: Timestamp) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = store.delete_published_before(cutoff, CLEANUP_CHUNK_ROWS).await?;
        total += deleted;
        if deleted < CLEANUP_CHUNK_ROWS as u64 {
            return Ok(total);
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
