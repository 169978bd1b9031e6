//! Cross-process wake-ups on PostgreSQL: relays `LISTEN` on `courier_outbox_<schema>`; the
//! table's trigger or a writer's [`Notifier`] sends the `NOTIFY`.
//!
//! A notification can be lost (the listener reconnecting, a writer dying between commit and
//! notify), so relays also poll; a lost wake-up costs at most one poll interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// PostgreSQL truncates identifiers to 63 bytes; the trigger does the same with `left(…, 63)`.
const CHANNEL_BYTES_MAX: usize = 63;
/// First wait before reconnecting the listener after an error; doubles up to the max.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The channel relays of `schema` listen on: `courier_outbox_<schema>`, as the trigger spells it.
pub(super) fn channel(schema: &str) -> String {
    let mut channel = format!("courier_outbox_{schema}");
    // Schema names are ASCII, so any byte index is a char boundary.
    channel.truncate(CHANNEL_BYTES_MAX);
    channel
}

/// Sends a writer's `NOTIFY` in the background, outside any transaction: wakes that arrive
/// while one is in flight are sent together as the next one, so a busy writer sends a few
/// notifications per round trip instead of one per commit.
#[derive(Debug)]
pub(super) struct Notifier {
    pool: PgPool,
    channel: String,
    /// A wake is waiting to be sent.
    dirty: AtomicBool,
    /// A task is sending; it sends again while `dirty` is set.
    running: AtomicBool,
}

impl Notifier {
    pub(super) fn new(pool: PgPool, channel: String) -> Self {
        Self {
            pool,
            channel,
            dirty: AtomicBool::new(false),
            running: AtomicBool::new(false),
        }
    }

    /// Asks for one `NOTIFY` soon. Outside a tokio runtime there is nothing to send it with, and
    /// relays find the rows at their next poll.
    pub(super) fn notify(self: &Arc<Self>) {
        self.dirty.store(true, Ordering::SeqCst);
        if self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.running.store(false, Ordering::SeqCst);
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move { this.run().await });
    }

    async fn run(&self) {
        loop {
            while self.dirty.swap(false, Ordering::SeqCst) {
                self.send().await;
            }
            self.running.store(false, Ordering::SeqCst);
            // A wake that came between the last swap and the store above found `running` set and
            // left it to us: take the role back and send it, unless another task already did.
            if !self.dirty.load(Ordering::SeqCst) || self.running.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }

    /// One statement, so a failure cannot leave the pooled connection inside a transaction. Its
    /// implicit transaction need not wait for the disk: a notification lost in a crash only
    /// delays relays until their next poll.
    async fn send(&self) {
        let sent = sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')")
            .bind(&self.channel)
            .execute(&self.pool)
            .await;
        if let Err(error) = sent {
            tracing::warn!(channel = %self.channel, %error, "cannot notify outbox relays; they find the rows at their next poll");
        }
    }
}

/// Runs a listener that wakes `wake` on every notification on `channel` (and after a
/// reconnect, since notifications sent meanwhile are lost), until aborted or the pool closes.
pub(super) fn spawn_listener(pool: PgPool, channel: String, wake: Arc<Notify>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = RECONNECT_BACKOFF_MIN;
        loop {
            match listen(&pool, &channel, &wake, &mut backoff).await {
                sqlx::Error::PoolClosed => return,
                error => {
                    tracing::warn!(%channel, %error, ?backoff, "outbox wake-up listener failed; relays poll meanwhile");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                }
            }
        }
    })
}

/// Listens until the listener fails for good; returns why. Resets `backoff` once listening.
async fn listen(pool: &PgPool, channel: &str, wake: &Notify, backoff: &mut Duration) -> sqlx::Error {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => return error,
    };
    if let Err(error) = listener.listen(channel).await {
        return error;
    }
    *backoff = RECONNECT_BACKOFF_MIN;
    // Whatever was committed while nobody listened is found by this look.
    wake.notify_one();
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => wake.notify_one(),
            // sqlx reconnected and listens again; notifications sent meanwhile are lost.
            Ok(None) => wake.notify_one(),
            Err(error) => return error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_is_cut_like_the_trigger_cuts_it() {
        assert_eq!(channel("courier"), "courier_outbox_courier");
        assert_eq!(channel(&"s".repeat(63)).len(), 63);
    }
}
