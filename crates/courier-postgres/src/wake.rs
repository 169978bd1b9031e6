//! Cross-node wake-ups: commits that may make a message ready `NOTIFY` the schema's channel
//! (see `tx::Ctx::commit`), and one task per engine `LISTEN`s on it and wakes this node's
//! long-polls through the [`WaitHub`].
//!
//! Notifications are lost while the listening connection is down, so after any reconnect every
//! local receiver is woken to look again; none of them can miss a message for good.

use std::sync::Arc;
use std::time::Duration;

use courier_core::{QueueRef, WaitHub};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::error::Db;

/// PostgreSQL truncates identifiers to 63 bytes; two schemas sharing a 55-byte prefix then share
/// a channel, which only costs spurious wake-ups.
const CHANNEL_BYTES_MAX: usize = 63;
/// First wait before reconnecting the listener after an error; doubles up to the max.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The notification channel of `schema`: `courier_<schema>`, within PostgreSQL's identifier limit.
pub(crate) fn channel(schema: &str) -> String {
    let mut channel = format!("courier_{schema}");
    // Schema names are ASCII, so any byte index is a char boundary.
    channel.truncate(CHANNEL_BYTES_MAX);
    channel
}

/// Connects a listener on `channel`. Called by `open`, so an engine that opened is already
/// listening before its first receive.
pub(crate) async fn listen(pool: &PgPool, channel: &str) -> Db<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Runs the listener until the pool closes or the task is aborted.
pub(crate) fn spawn(pool: PgPool, channel: String, hub: Arc<WaitHub>, listener: PgListener) -> JoinHandle<()> {
    tokio::spawn(run(pool, channel, hub, listener))
}

async fn run(pool: PgPool, channel: String, hub: Arc<WaitHub>, first: PgListener) {
    let mut listener = Some(first);
    let mut backoff = RECONNECT_BACKOFF_MIN;
    loop {
        let current = match listener.as_mut() {
            Some(current) => current,
            None => match listen(&pool, &channel).await {
                Ok(fresh) => {
                    tracing::info!(%channel, "wake-up listener reconnected");
                    hub.notify_all();
                    backoff = RECONNECT_BACKOFF_MIN;
                    listener.insert(fresh)
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    tracing::warn!(%channel, %error, ?backoff, "wake-up listener cannot reconnect");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                    continue;
                }
            },
        };
        match current.try_recv().await {
            Ok(Some(notification)) => wake(&hub, notification.payload()),
            // The connection dropped and sqlx reconnected: what was sent meanwhile is lost.
            Ok(None) => {
                tracing::warn!(%channel, "wake-up listener lost its connection and reconnected");
                hub.notify_all();
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::warn!(%channel, %error, "wake-up listener failed; reconnecting");
                hub.notify_all();
                // A fresh listener rather than trusting sqlx to recover this one from any error.
                listener = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
        }
    }
}

/// Wakes the queue named by a notification's payload (`namespace/queue`), or everyone if the
/// payload is not one of ours.
fn wake(hub: &WaitHub, payload: &str) {
    match payload.parse::<QueueRef>() {
        Ok(queue) => hub.notify(&queue),
        Err(_) => {
            tracing::warn!(payload, "unexpected wake-up payload");
            hub.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_fits_an_identifier() {
        assert_eq!(channel("courier"), "courier_courier");
        assert_eq!(channel(&"s".repeat(63)).len(), CHANNEL_BYTES_MAX);
    }
}
