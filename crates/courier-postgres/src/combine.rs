//! Combining concurrent calls into one statement or transaction: callers that arrive while one
//! for the same key (queue) is running wait, and the next one serves all of them.
//!
//! This is group commit for a networked database: per message, a busy node then pays for a
//! fraction of a statement's round trip and commit instead of all of it. The work runs on a
//! task of its own, so a caller that goes away (an HTTP client disconnecting) never cancels
//! work that other callers' operations are part of; what was done for it alone can be undone
//! by an unclaimed handler.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// Most calls served by one batch, so a burst cannot build an unbounded statement.
const CALLS_PER_BATCH_MAX: usize = 64;
/// Most items (messages, receipts) in one batch, beyond the first call's: a batch is never
/// much larger than the largest call a caller may make alone.
const ITEMS_PER_BATCH_MAX: usize = 1_000;

/// The calls waiting for one key, and how many tasks are serving them.
struct Slot<Req, Out> {
    pending: Vec<(Req, oneshot::Sender<Out>)>,
    serving: usize,
}

/// Runs calls keyed by `K` in batches: `exec` gets the requests of one batch and returns one
/// output per request, in order.
pub(crate) struct Combiner<K, Req, Out> {
    slots: Mutex<HashMap<K, Slot<Req, Out>>>,
    /// Batches of one key that may run at once. One batches most; two let a call that arrives
    /// while a batch runs start at once, on the other, instead of queueing behind it.
    parallel: usize,
    /// How many items a request carries, for [`ITEMS_PER_BATCH_MAX`].
    items: fn(&Req) -> usize,
    /// Gets the output of a caller that went away while its batch ran, to undo what it holds
    /// for no one (leases); by default the output is dropped and its effect stands.
    unclaimed: Option<Unclaimed<K, Out>>,
}

/// See [`Combiner::on_unclaimed`].
type Unclaimed<K, Out> = Box<dyn Fn(&K, Out) + Send + Sync>;

impl<K, Req, Out> Combiner<K, Req, Out> {
    /// A combiner that runs up to `parallel` (at least 1) batches of one key at once; `items`
    /// tells how many items (messages, receipts) a request carries.
    pub(crate) fn new(parallel: usize, items: fn(&Req) -> usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            parallel: parallel.max(1),
            items,
            unclaimed: None,
        }
    }

    /// Hands the output of every caller that went away before it was answered to `handler`.
    pub(crate) fn on_unclaimed(mut self, handler: impl Fn(&K, Out) + Send + Sync + 'static) -> Self {
        self.unclaimed = Some(Box::new(handler));
        self
    }
}

impl<K, Req, Out> Combiner<K, Req, Out>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    Req: Send + 'static,
    Out: Send + 'static,
{
    /// Runs `req` in the next batch for `key`; `None` if the batch was abandoned (its task
    /// panicked), in which case the outcome is unknown.
    pub(crate) async fn submit<F, Fut>(self: &Arc<Self>, key: K, req: Req, exec: F) -> Option<Out>
    where
        F: FnMut(K, Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Out>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut slots = self.lock();
            let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
                pending: Vec::new(),
                serving: 0,
            });
            slot.pending.push((req, reply));
            let start = slot.serving < self.parallel;
            if start {
                slot.serving += 1;
            }
            start
        };
        if start {
            // Made before the task, so it also cleans up if the task is dropped unpolled.
            let guard = ServeGuard {
                combiner: self.clone(),
                key: key.clone(),
                armed: true,
            };
            tokio::spawn(self.clone().serve(guard, exec));
        }
        let mut unread = Unread {
            combiner: self,
            key,
            answer: Some(answer),
        };
        let out = match unread.answer.as_mut() {
            Some(answer) => answer.await.ok(),
            None => None,
        };
        unread.answer = None;
        out
    }

    /// Serves batches for `key` until none is waiting.
    async fn serve<F, Fut>(self: Arc<Self>, mut guard: ServeGuard<K, Req, Out>, mut exec: F)
    where
        F: FnMut(K, Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Out>> + Send + 'static,
    {
        let key = guard.key.clone();
        while let Some(batch) = self.next_batch(&key) {
            if batch.is_empty() {
                continue;
            }
            let (requests, replies): (Vec<Req>, Vec<oneshot::Sender<Out>>) = batch.into_iter().unzip();
            let outputs = exec(key.clone(), requests).await;
            debug_assert_eq!(outputs.len(), replies.len(), "one output per request");
            for (reply, output) in replies.into_iter().zip(outputs) {
                if let (Err(output), Some(unclaimed)) = (reply.send(output), &self.unclaimed) {
                    unclaimed(&key, output);
                }
            }
        }
        // Not `mem::forget`: that would leak the guard's handle on the combiner, and with it
        // everything the combiner holds (a pool, through its unclaimed handler).
        guard.armed = false;
    }

    /// Takes the next batch for `key`, or ends this task's serving (under the same lock, so a
    /// caller that arrives later starts a new task) when nothing waits.
    fn next_batch(&self, key: &K) -> Option<Vec<(Req, oneshot::Sender<Out>)>> {
        let mut slots = self.lock();
        let slot = slots.get_mut(key)?;
        if slot.pending.is_empty() {
            slot.serving -= 1;
            if slot.serving == 0 {
                slots.remove(key);
            }
            return None;
        }
        // A caller that went away before its batch started wants no effect any more.
        slot.pending.retain(|(_, reply)| !reply.is_closed());
        if slot.pending.is_empty() {
            return Some(Vec::new());
        }
        let mut take = 0;
        let mut items = 0;
        for (req, _) in slot.pending.iter().take(CALLS_PER_BATCH_MAX) {
            items += (self.items)(req);
            if take > 0 && items > ITEMS_PER_BATCH_MAX {
                break;
            }
            take += 1;
        }
        Some(slot.pending.drain(..take).collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot<Req, Out>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Disarmed when serving ends normally. Dropped armed only when it ends abnormally (a panic
/// in `exec`, or the task dropped by a runtime shutting down): the waiting callers are answered with `None` and the key starts
/// afresh; another task serving the key finishes the batch it holds and stops.
struct ServeGuard<K: Eq + Hash, Req, Out> {
    combiner: Arc<Combiner<K, Req, Out>>,
    key: K,
    /// Cleared when serving ends normally.
    armed: bool,
}

impl<K: Eq + Hash, Req, Out> Drop for ServeGuard<K, Req, Out> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut slots = self.combiner.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.remove(&self.key);
    }
}

/// A caller's answer channel while it waits. If the caller goes away after its answer was
/// sent but before it read it, the answer goes to the unclaimed handler, as one that could
/// not be sent at all does in `serve`: closing the channel first makes the two exclusive.
struct Unread<'a, K, Req, Out> {
    combiner: &'a Combiner<K, Req, Out>,
    key: K,
    /// `None` once read.
    answer: Option<oneshot::Receiver<Out>>,
}

impl<K, Req, Out> Drop for Unread<'_, K, Req, Out> {
    fn drop(&mut self) {
        let Some(mut answer) = self.answer.take() else { return };
        answer.close();
        if let (Ok(out), Some(unclaimed)) = (answer.try_recv(), &self.combiner.unclaimed) {
            unclaimed(&self.key, out);
        }
    }
}

/// Splits `items` into consecutive runs of the given lengths.
pub(crate) fn split_by<T>(items: Vec<T>, lengths: &[usize]) -> Vec<Vec<T>> {
    let mut items = items.into_iter();
    lengths.iter().map(|&n| items.by_ref().take(n).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    type TestCombiner = Combiner<&'static str, u32, u32>;

    /// A combiner running one batch at a time that hands unclaimed outputs to the receiver.
    fn combiner_reporting_unclaimed() -> (
        Arc<TestCombiner>,
        tokio::sync::mpsc::UnboundedReceiver<(&'static str, u32)>,
    ) {
        let (left_tx, left_rx) = tokio::sync::mpsc::unbounded_channel();
        let combiner = Combiner::new(1, |_| 1).on_unclaimed(move |key: &&'static str, out| {
            let _ = left_tx.send((*key, out));
        });
        (Arc::new(combiner), left_rx)
    }

    /// Waits (up to 5 s, else fails with `failure`) until no key has a slot left.
    async fn wait_until_no_slot(combiner: &TestCombiner, failure: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !combiner.lock().is_empty() {
            assert!(std::time::Instant::now() < deadline, "{failure}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[test]
    fn split_by_cuts_consecutive_runs() {
        assert_eq!(
            split_by(vec![1, 2, 3, 4, 5], &[2, 0, 3]),
            vec![vec![1, 2], vec![], vec![3, 4, 5]]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_share_batches_and_each_gets_its_own_answer() {
        let combiner: Arc<Combiner<&'static str, u32, u32>> = Arc::new(Combiner::new(2, |_| 1));
        let batches = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..50u32)
            .map(|n| {
                let (combiner, batches) = (combiner.clone(), batches.clone());
                tokio::spawn(async move {
                    combiner
                        .submit("q", n, move |_, requests: Vec<u32>| {
                            let batches = batches.clone();
                            async move {
                                batches.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                requests.into_iter().map(|r| r * 2).collect()
                            }
                        })
                        .await
                })
            })
            .collect();
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.expect("task"), Some(u32::try_from(n).expect("small") * 2));
        }
        let batches = batches.load(Ordering::SeqCst);
        assert!(batches < 50, "calls that overlapped were combined: {batches} batches");
        // Callers are answered before the serving task's last look removes the slot.
        wait_until_no_slot(&combiner, "a slot was left behind").await;
    }

    #[tokio::test]
    async fn the_answer_of_a_caller_that_left_goes_to_the_unclaimed_handler() {
        let (combiner, mut left_rx) = combiner_reporting_unclaimed();
        let (started_tx, started_rx) = oneshot::channel();
        let started_tx = Arc::new(Mutex::new(Some(started_tx)));
        let slow = combiner.clone();
        let caller = tokio::spawn(async move {
            slow.submit("q", 7, move |_, requests: Vec<u32>| {
                let started_tx = started_tx.clone();
                async move {
                    if let Some(tx) = started_tx.lock().expect("lock").take() {
                        let _ = tx.send(());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    requests
                }
            })
            .await
        });
        started_rx.await.expect("the batch started");
        caller.abort();
        let left = tokio::time::timeout(Duration::from_secs(5), left_rx.recv()).await;
        assert_eq!(left.expect("handed over in time"), Some(("q", 7)));
        let served = combiner
            .submit("q", 8, |_, requests: Vec<u32>| async move { requests })
            .await;
        assert_eq!(served, Some(8), "an answered caller is not handed over");
        assert!(left_rx.try_recv().is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_sent_but_never_read_goes_to_the_unclaimed_handler() {
        let (combiner, mut left_rx) = combiner_reporting_unclaimed();
        let (served_tx, served_rx) = oneshot::channel();
        let served_tx = Arc::new(Mutex::new(Some(served_tx)));
        let mut call = Box::pin(combiner.submit("q", 9, move |_, requests: Vec<u32>| {
            let served_tx = served_tx.clone();
            async move {
                if let Some(tx) = served_tx.lock().expect("lock").take() {
                    let _ = tx.send(());
                }
                requests
            }
        }));
        // Polled once: the call is queued and its batch starts; then it is never polled again.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        served_rx.await.expect("the batch ran");
        // Serving removes the slot only after every answer of the batch was sent.
        wait_until_no_slot(&combiner, "the answer was never sent").await;
        assert!(left_rx.try_recv().is_err(), "sent, so not unclaimed yet");
        drop(call);
        assert_eq!(left_rx.try_recv().ok(), Some(("q", 9)));
    }

    #[tokio::test]
    async fn a_combiner_that_served_is_freed_with_what_it_holds() {
        let held = Arc::new(());
        let watch = Arc::downgrade(&held);
        let combiner: Arc<Combiner<&'static str, u32, u32>> =
            Arc::new(Combiner::new(2, |_| 1).on_unclaimed(move |_, _| drop(held.clone())));
        for n in 0..3 {
            let served = combiner
                .submit("q", n, |_, requests: Vec<u32>| async move { requests })
                .await;
            assert_eq!(served, Some(n));
        }
        drop(combiner);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while watch.upgrade().is_some() {
            assert!(std::time::Instant::now() < deadline, "serving leaked the combiner");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_panicking_batch_answers_none_and_the_key_serves_again() {
        let combiner: Arc<Combiner<&'static str, u32, u32>> = Arc::new(Combiner::new(2, |_| 1));
        let lost = combiner
            .submit("q", 1, |_, requests: Vec<u32>| async move {
                assert!(requests.is_empty(), "exec failed");
                requests
            })
            .await;
        assert_eq!(lost, None);
        let served = combiner
            .submit("q", 2, |_, requests: Vec<u32>| async move { requests })
            .await;
        assert_eq!(served, Some(2));
    }
}
