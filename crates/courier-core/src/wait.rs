//! Long-poll support: per-queue wake-ups and the receive loop every engine shares.
//!
//! An engine calls [`WaitHub::notify`] after it commits a change that may make a message
//! ready; receivers sleep on a `Notify` until then or until the next due time. An engine whose
//! wake-ups can be lost (another node's notification) adds a slow recheck as a safety net.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::QueueError;
use crate::name::QueueRef;
use crate::ops::ReceiveBatch;
use crate::time::{Clock, Timestamp};

#[derive(Debug, Default)]
struct QueueWaiters {
    notify: Notify,
    waiting: AtomicU64,
}

/// The waiting receivers of every queue on this node.
#[derive(Debug, Default)]
pub struct WaitHub {
    queues: Mutex<HashMap<QueueRef, Arc<QueueWaiters>>>,
    closed: AtomicBool,
    recheck: Option<Duration>,
}

impl WaitHub {
    /// An empty hub whose receivers rely on [`notify`](Self::notify) and due times alone: for
    /// an engine that sees every change made to its storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty hub whose waiting receivers also look again every `interval`: for an engine
    /// that learns of other nodes' changes by messages that can be lost (a dropped listener
    /// connection, a node that crashed between its commit and its notification).
    pub fn with_recheck(interval: Duration) -> Self {
        Self {
            recheck: Some(interval),
            ..Self::default()
        }
    }

    fn waiters(&self, queue: &QueueRef) -> Arc<QueueWaiters> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues.entry(queue.clone()).or_default().clone()
    }

    /// Wakes every receiver waiting on `queue` so it looks again.
    pub fn notify(&self, queue: &QueueRef) {
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = queues.get(queue) {
            w.notify.notify_waiters();
        }
    }

    /// Wakes as many receivers waiting on `queue` as `ready` new messages can serve, or all of
    /// them when there are fewer: waking every receiver for one message costs each of them a
    /// receive that finds nothing.
    ///
    /// No message is left unseen: a receiver woken this way that returns with other messages
    /// drops its wake-up unconsumed, and tokio's `Notify` hands it to the next waiter; a receiver
    /// not yet waiting looks at the queue before it waits.
    pub fn notify_ready(&self, queue: &QueueRef, ready: usize) {
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(w) = queues.get(queue) else {
            return;
        };
        let waiting = usize::try_from(w.waiting.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        if ready >= waiting {
            w.notify.notify_waiters();
        } else {
            for _ in 0..ready {
                w.notify.notify_one();
            }
        }
    }

    /// Wakes every waiting receiver of every queue.
    pub fn notify_all(&self) {
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        for w in queues.values() {
            w.notify.notify_waiters();
        }
    }

    /// Ends every long poll now and makes later ones return after one attempt, so a
    /// server shutting down does not wait out its receivers' `wait` times.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify_all();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// How many receivers are waiting on `queue` now.
    pub fn waiting(&self, queue: &QueueRef) -> u64 {
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues.get(queue).map_or(0, |w| w.waiting.load(Ordering::Relaxed))
    }
}

/// Counts a receiver as waiting for as long as it lives.
struct WaitingGuard(Arc<QueueWaiters>);

impl WaitingGuard {
    fn new(w: Arc<QueueWaiters>) -> Self {
        w.waiting.fetch_add(1, Ordering::Relaxed);
        Self(w)
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A wake-up this receiver took and has not yet acted on: if the attempt it led to fails or
/// is dropped (the request went away), the wake-up goes on to another waiting receiver, as
/// tokio does for one never taken.
struct TakenWakeUp<'a>(Option<&'a QueueWaiters>);

impl TakenWakeUp<'_> {
    /// The attempt after the wake-up ran: the wake-up was used.
    fn used(&mut self) {
        self.0 = None;
    }
}

impl Drop for TakenWakeUp<'_> {
    fn drop(&mut self) {
        if let Some(waiters) = self.0 {
            waiters.notify.notify_one();
        }
    }
}

/// Runs `attempt` until it returns deliveries, `wait` has passed or the hub is closed.
///
/// Between attempts it sleeps until the hub is notified for `queue`, the batch's
/// `next_due` arrives (on `clock`), or the wait ends. The notification is armed before
/// each attempt, so a commit that lands between the attempt and the sleep still wakes it.
pub async fn long_poll<F, Fut>(
    hub: &WaitHub,
    clock: &dyn Clock,
    queue: &QueueRef,
    wait: Duration,
    mut attempt: F,
) -> Result<ReceiveBatch, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<ReceiveBatch, QueueError>>,
{
    let give_up_at = Instant::now() + wait;
    let waiters = hub.waiters(queue);
    let mut guard = None;
    let mut woken = TakenWakeUp(None);
    loop {
        let notified = waiters.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let batch = attempt().await?;
        woken.used();
        let now = Instant::now();
        if !batch.deliveries.is_empty() || now >= give_up_at || hub.is_closed() {
            return Ok(batch);
        }
        guard.get_or_insert_with(|| WaitingGuard::new(waiters.clone()));
        let mut wake_at = next_wake(now, give_up_at, batch.next_due, clock.now());
        if let Some(recheck) = hub.recheck {
            wake_at = wake_at.min(now + jittered(recheck));
        }
        tokio::select! {
            () = &mut notified => woken = TakenWakeUp(Some(&waiters)),
            () = tokio::time::sleep_until(wake_at) => {}
        }
    }
}

/// `interval` scaled by a random factor in [0.75, 1.25), so receivers that began waiting
/// together (after a restart, say) do not all look again in the same instant.
fn jittered(interval: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A fresh RandomState is randomly keyed: randomness enough for spreading, without a crate.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let factor = 0.75 + (random % 1_000) as f64 / 2_000.0;
    interval.mul_f64(factor)
}

/// The earlier of the give-up time and the next due time (converted from the engine clock).
fn next_wake(now: Instant, give_up_at: Instant, next_due: Option<Timestamp>, clock_now: Timestamp) -> Instant {
    match next_due {
        Some(due) => give_up_at.min(now + due.duration_since(clock_now)),
        None => give_up_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    #[test]
    fn next_wake_takes_the_earlier_deadline() {
        let now = Instant::now();
        let give_up = now + Duration::from_secs(10);
        let clock_now = Timestamp(1_000);
        assert_eq!(next_wake(now, give_up, None, clock_now), give_up);
        assert_eq!(
            next_wake(now, give_up, Some(Timestamp(1_500)), clock_now),
            now + Duration::from_millis(500)
        );
        assert_eq!(next_wake(now, give_up, Some(Timestamp(99_000)), clock_now), give_up);
    }

    #[test]
    fn jitter_stays_within_a_quarter_of_the_interval() {
        let base = Duration::from_secs(2);
        for _ in 0..1_000 {
            let j = jittered(base);
            assert!(j >= base.mul_f64(0.75) && j < base.mul_f64(1.25), "{j:?}");
        }
    }

    #[tokio::test]
    async fn a_recheck_hub_looks_again_without_a_notify() {
        let hub = WaitHub::with_recheck(Duration::from_millis(20));
        let clock = ManualClock::new(Timestamp(0));
        let queue: QueueRef = "ns/q".parse().unwrap();
        let calls = AtomicU64::new(0);
        let poll = long_poll(&hub, &clock, &queue, Duration::from_secs(30), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(ReceiveBatch::default()) }
        });
        let r = tokio::time::timeout(Duration::from_millis(300), poll).await;
        assert!(r.is_err(), "nothing arrived, so the poll is still waiting");
        let attempts = calls.load(Ordering::SeqCst);
        assert!(
            (3..=20).contains(&attempts),
            "rechecked every 20 ms: {attempts} attempts in 300 ms"
        );
    }

    #[tokio::test]
    async fn closing_the_hub_ends_a_long_poll_at_once() {
        let hub = Arc::new(WaitHub::new());
        let clock = ManualClock::new(Timestamp(0));
        let queue: QueueRef = "ns/q".parse().unwrap();
        let closer = {
            let hub = hub.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                while hub.waiting(&queue) == 0 {
                    tokio::task::yield_now().await;
                }
                hub.close();
            })
        };
        let started = Instant::now();
        let batch = long_poll(&hub, &clock, &queue, Duration::from_secs(30), || async {
            Ok(ReceiveBatch::default())
        })
        .await
        .unwrap();
        closer.await.unwrap();
        assert!(batch.deliveries.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "closed hub must end the poll early"
        );
    }

    #[tokio::test]
    async fn a_notify_wakes_a_waiting_receiver_before_its_deadline() {
        let hub = Arc::new(WaitHub::new());
        let clock = ManualClock::new(Timestamp(0));
        let queue: QueueRef = "ns/q".parse().unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let hub2 = hub.clone();
        let q2 = queue.clone();
        let notifier = tokio::spawn(async move {
            while hub2.waiting(&q2) == 0 {
                tokio::task::yield_now().await;
            }
            hub2.notify(&q2);
        });
        let started = Instant::now();
        let c = calls.clone();
        let batch = long_poll(&hub, &clock, &queue, Duration::from_secs(30), move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Ok(ReceiveBatch::default())
                } else {
                    Ok(ReceiveBatch {
                        deliveries: vec![],
                        next_due: None,
                    })
                }
            }
        });
        // The second attempt also finds nothing, so the poll keeps waiting; stop it by timeout.
        let r = tokio::time::timeout(Duration::from_millis(300), batch).await;
        notifier.await.unwrap();
        assert!(r.is_err(), "poll should still be waiting after being woken once");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the notify caused exactly one more attempt"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(hub.waiting(&queue), 0, "guard released when the poll was dropped");
    }

    /// Starts `n` long polls on `queue` that never find anything, counting their attempts.
    fn idle_receivers(
        hub: &Arc<WaitHub>,
        queue: &QueueRef,
        n: usize,
    ) -> (Arc<AtomicU64>, Vec<tokio::task::JoinHandle<()>>) {
        let calls = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|_| {
                let (hub, queue, calls) = (hub.clone(), queue.clone(), calls.clone());
                tokio::spawn(async move {
                    let clock = ManualClock::new(Timestamp(0));
                    let _ = long_poll(&hub, &clock, &queue, Duration::from_secs(30), || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        async { Ok(ReceiveBatch::default()) }
                    })
                    .await;
                })
            })
            .collect();
        (calls, tasks)
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn notify_ready_wakes_as_many_receivers_as_there_are_messages() {
        let hub = Arc::new(WaitHub::new());
        let queue: QueueRef = "ns/q".parse().unwrap();
        let (calls, tasks) = idle_receivers(&hub, &queue, 4);
        while hub.waiting(&queue) < 4 {
            tokio::task::yield_now().await;
        }
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 4, "one attempt each before waiting");

        hub.notify_ready(&queue, 1);
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 5, "one message wakes one receiver");

        hub.notify_ready(&queue, 2);
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 7, "two messages wake two");

        hub.notify_ready(&queue, 9);
        settle().await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            11,
            "more messages than receivers wake all"
        );
        for task in tasks {
            task.abort();
        }
    }

    /// A long poll whose attempts find nothing until the `fail_from`th, which fails (or, with
    /// `hang`, never finishes); counts its attempts.
    fn troubled_receiver(
        hub: &Arc<WaitHub>,
        queue: &QueueRef,
        fail_from: u64,
        hang: bool,
    ) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
        let calls = Arc::new(AtomicU64::new(0));
        let (hub, queue, counter) = (hub.clone(), queue.clone(), calls.clone());
        let task = tokio::spawn(async move {
            let clock = ManualClock::new(Timestamp(0));
            let _ = long_poll(&hub, &clock, &queue, Duration::from_secs(30), || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n < fail_from {
                        return Ok(ReceiveBatch::default());
                    }
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Err(QueueError::Storage(crate::error::StorageError::Unavailable(
                        "down".into(),
                    )))
                }
            })
            .await;
        });
        (calls, task)
    }

    async fn wake_one_that_fails(hang: bool) {
        let hub = Arc::new(WaitHub::new());
        let queue: QueueRef = "ns/q".parse().unwrap();
        // The troubled receiver waits first, so tokio hands it the first wake-up.
        let (troubled, troubled_task) = troubled_receiver(&hub, &queue, 2, hang);
        while hub.waiting(&queue) < 1 {
            tokio::task::yield_now().await;
        }
        let (calls, tasks) = idle_receivers(&hub, &queue, 2);
        while hub.waiting(&queue) < 3 {
            tokio::task::yield_now().await;
        }
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        hub.notify_ready(&queue, 1);
        settle().await;
        assert_eq!(
            troubled.load(Ordering::SeqCst),
            2,
            "the wake-up reached the troubled receiver"
        );
        if hang {
            troubled_task.abort();
            settle().await;
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "its wake-up went on to a waiting receiver when its attempt failed or was dropped"
        );
        for task in tasks {
            task.abort();
        }
    }

    #[tokio::test]
    async fn a_wake_up_whose_attempt_fails_passes_to_the_next_receiver() {
        wake_one_that_fails(false).await;
    }

    #[tokio::test]
    async fn a_wake_up_whose_receiver_goes_away_passes_to_the_next_receiver() {
        wake_one_that_fails(true).await;
    }
}
