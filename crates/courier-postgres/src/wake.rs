//! Cross-node wake-ups: after a commit that may make a message ready, this node's [`Notifier`]
//! `NOTIFY`s the schema's channel, coalescing what many commits ask for into one statement; one
//! task per engine `LISTEN`s on the channel and wakes this node's long-polls through the
//! [`WaitHub`].
//!
//! A payload is `<node> <namespace/queue>`: a node skips its own notifications, since it
//! already woke its receivers (only as many as the commit made messages ready) when it
//! committed.
//!
//! A notification can be lost: while the listening connection is down (after a reconnect every
//! local receiver is woken to look again), or when a node dies between its commit and its
//! notify. Waiting receivers therefore also look again every [`RECHECK_INTERVAL`]; none of them
//! can miss a message for long.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use courier_core::{QueueRef, WaitHub};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Executor, PgPool};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::Db;

/// PostgreSQL truncates identifiers to 63 bytes; two schemas sharing a 55-byte prefix then share
/// a channel, which only costs spurious wake-ups.
const CHANNEL_BYTES_MAX: usize = 63;
/// First wait before reconnecting the listener after an error; doubles up to the max.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Least time between the starts of two NOTIFY statements of one node. A busy node then sends
/// at most one per gap, carrying every queue that had a commit meanwhile, instead of one per
/// round trip; an idle node's first notification goes out at once. Bounds the extra delay a
/// cross-node wake-up sees under load.
pub(crate) const NOTIFY_GAP_MIN: Duration = Duration::from_millis(2);
/// How often a waiting receiver looks again without a wake-up: the safety net for lost
/// notifications, slow enough that idle receivers cost the database next to nothing.
pub(crate) const RECHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The queues this node has wake-ups pending for, sent by one task in the background.
///
/// While one NOTIFY statement is in flight, and for [`NOTIFY_GAP_MIN`] after it began, later
/// commits' queues collect here and go out together in the next, so a busy node sends a few
/// notifications per millisecond instead of one per commit.
#[derive(Debug)]
pub(crate) struct Notifier {
    /// This node's id in payloads: random per engine.
    node: String,
    pending: Mutex<BTreeSet<String>>,
    signal: Notify,
}

impl Notifier {
    /// A notifier for a node with a fresh random id.
    pub(crate) fn new() -> Self {
        Self {
            node: uuid::Uuid::new_v4().simple().to_string(),
            pending: Mutex::default(),
            signal: Notify::new(),
        }
    }

    /// This node's id, as it appears in its payloads.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// Asks for every node's receivers on `queues` to be woken.
    pub(crate) fn publish(&self, queues: &[QueueRef]) {
        if queues.is_empty() {
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(queues.iter().map(QueueRef::to_string));
        // Stores a permit if the task is busy, so nothing published is left waiting.
        self.signal.notify_one();
    }

    fn take(&self) -> Vec<String> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *pending).into_iter().collect()
    }
}

/// Runs the notifier until the pool closes or the task is aborted.
/// Each NOTIFY statement is bounded by `timeout` (the engine's operation timeout), so a
/// database that stopped answering cannot stall the task, and with it every later wake-up.
pub(crate) fn spawn_notifier(
    pool: PgPool,
    channel: String,
    notifier: Arc<Notifier>,
    timeout: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            notifier.signal.notified().await;
            let queues = notifier.take();
            if queues.is_empty() {
                continue;
            }
            let next_allowed = tokio::time::Instant::now() + NOTIFY_GAP_MIN;
            let statement = notify_sql(&channel, notifier.node(), &queues);
            let sent = crate::tx::within_limit(timeout, sqlx::raw_sql(&statement).execute(&pool)).await;
            match sent {
                Ok(_) => {}
                Err(sqlx::Error::PoolClosed) => return,
                // Other nodes' receivers find these messages at their next recheck.
                Err(error) => tracing::warn!(%channel, %error, "cannot notify other nodes"),
            }
            // Commits in the meantime wait for the next statement; the signal's permit keeps them.
            tokio::time::sleep_until(next_allowed).await;
        }
    })
}

/// The notification channel of `schema`: `courier_<schema>`, within PostgreSQL's identifier limit.
pub(crate) fn channel(schema: &str) -> String {
    let mut channel = format!("courier_{schema}");
    // Schema names are ASCII, so any byte index is a char boundary.
    channel.truncate(CHANNEL_BYTES_MAX);
    channel
}

/// Connects a listener on `channel`, within `timeout`. Called by `open`, so an engine that
/// opened is already listening before its first receive.
///
/// Each listener has a pool of one connection of its own, not a slot of the engine's: sqlx
/// drops a listener by sending `UNLISTEN` with no time limit, and a listener given up because
/// its server stopped answering would otherwise hold an engine connection until TCP gives up.
/// sqlx's own reconnect is off: a lost connection ends this listener and [`run`] starts
/// another, with backoff and a wake-up for every receiver (notifications may have been lost).
pub(crate) async fn listen(connect: &PgConnectOptions, channel: &str, timeout: Duration) -> Db<PgListener> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(timeout)
        .connect_lazy_with(connect.clone());
    let listening = async {
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.eager_reconnect(false);
        listener.listen(channel).await?;
        Ok(listener)
    };
    crate::tx::within_limit(timeout, listening).await
}

/// One statement that notifies `channel` once per queue. Its implicit transaction need not
/// wait for the disk (`set_config(…, true)` is local to it): a notification lost in a crash
/// only delays other nodes until their next recheck. One statement, not `BEGIN; …; COMMIT`,
/// so a failing `pg_notify` cannot leave the pooled connection inside an aborted transaction.
///
/// Literals rather than bind parameters keep it one simple-protocol message: the channel comes
/// from a validated schema name and queue names are `[a-z0-9._-]` plus `/`, so neither can
/// hold a quote.
fn notify_sql(channel: &str, node: &str, queues: &[String]) -> String {
    debug_assert!(!channel.contains('\'') && !node.contains('\'') && queues.iter().all(|q| !q.contains('\'')));
    let notifies: Vec<String> = queues
        .iter()
        .map(|q| format!("pg_notify('{channel}', '{node} {q}')"))
        .collect();
    format!(
        "SELECT set_config('synchronous_commit', 'off', true), {}",
        notifies.join(", ")
    )
}

/// Runs the listener until the task is aborted (the engine's shutdown or drop).
/// `node` is this node's id, whose own notifications are skipped.
///
/// A listener that heard nothing for [`RECHECK_INTERVAL`] checks that its connection still
/// answers (`SELECT 1`, bounded by `timeout`, the engine's operation timeout) and starts
/// afresh if it does not: a connection to a server that vanished without closing it (a
/// failover, a dropped network path) would otherwise stay silent for good, and this node would
/// hear no other node again. Reconnecting is bounded by the same timeout.
pub(crate) fn spawn_listener(
    connect: PgConnectOptions,
    channel: String,
    node: String,
    hub: Arc<WaitHub>,
    listener: PgListener,
    timeout: Duration,
) -> JoinHandle<()> {
    tokio::spawn(run(connect, channel, node, hub, listener, timeout))
}

async fn run(
    connect: PgConnectOptions,
    channel: String,
    node: String,
    hub: Arc<WaitHub>,
    first: PgListener,
    timeout: Duration,
) {
    let mut listener = Some(first);
    let mut backoff = RECONNECT_BACKOFF_MIN;
    loop {
        let current = match listener.as_mut() {
            Some(current) => current,
            None => {
                tokio::time::sleep(backoff).await;
                match listen(&connect, &channel, timeout).await {
                    Ok(fresh) => {
                        tracing::info!(%channel, "wake-up listener reconnected");
                        // Notifications sent while it was away are lost: every receiver looks.
                        hub.notify_all();
                        backoff = RECONNECT_BACKOFF_MIN;
                        listener.insert(fresh)
                    }
                    Err(error) => {
                        tracing::warn!(%channel, %error, ?backoff, "wake-up listener cannot reconnect");
                        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                        continue;
                    }
                }
            }
        };
        let Ok(received) = tokio::time::timeout(RECHECK_INTERVAL, current.try_recv()).await else {
            match answers(current, timeout).await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%channel, %error, "wake-up listener's connection does not answer; reconnecting");
                    listener = None;
                }
            }
            continue;
        };
        match received {
            Ok(Some(notification)) => wake(&hub, &node, notification.payload()),
            Ok(None) => {
                tracing::warn!(%channel, "wake-up listener lost its connection; reconnecting");
                listener = None;
            }
            Err(error) => {
                tracing::warn!(%channel, %error, "wake-up listener failed; reconnecting");
                // A fresh listener rather than trusting sqlx to recover this one from any error.
                listener = None;
            }
        }
    }
}

/// Whether the listener's connection answers a query within `timeout`. Notifications that
/// arrive meanwhile are kept by the listener for its next receive.
async fn answers(listener: &mut PgListener, timeout: Duration) -> Db<()> {
    crate::tx::within_limit(timeout, listener.execute("SELECT 1"))
        .await
        .map(drop)
}

/// Wakes the queue named by a notification's payload (`<node> namespace/queue`) unless this
/// node sent it, or everyone if the payload is not one of ours.
fn wake(hub: &WaitHub, this_node: &str, payload: &str) {
    let (sender, queue) = payload.split_once(' ').unwrap_or(("", payload));
    if sender == this_node {
        return;
    }
    match queue.parse::<QueueRef>() {
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
    fn notify_sql_is_one_unsynchronized_statement() {
        let sql = notify_sql("courier_x", "n1", &["a/b".to_owned(), "c/d".to_owned()]);
        assert_eq!(
            sql,
            "SELECT set_config('synchronous_commit', 'off', true), \
             pg_notify('courier_x', 'n1 a/b'), pg_notify('courier_x', 'n1 c/d')"
        );
    }

    #[test]
    fn channel_fits_an_identifier() {
        assert_eq!(channel("courier"), "courier_courier");
        assert_eq!(channel(&"s".repeat(63)).len(), CHANNEL_BYTES_MAX);
    }
}
