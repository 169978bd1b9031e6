//! What a node remembers about each queue between calls, so a receive or an ack is one
//! statement instead of a transaction of several: the queue's row (id and policy), and when
//! its lapsed leases and expired messages next need sweeping.
//!
//! Both are hints that can only be late, never wrong in a way a caller sees: a cached policy
//! is at most [`META_FRESH_FOR`] old (changes made on this node replace it at once), and
//! maintenance runs at the latest [`MAINTENANCE_INTERVAL_MAX`] after a lease taken on another
//! node lapsed; leases and TTLs made on this node are tracked to the millisecond.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use courier_core::{QueueRef, Timestamp};

use crate::queues::QueueMeta;

/// How long a queue's id and policy are used without reading them again. A policy changed or
/// a queue deleted on another node reaches this node's receives and acks within this bound.
pub(crate) const META_FRESH_FOR: Duration = Duration::from_secs(1);

/// The longest a receive goes without sweeping its queue for lapsed leases and expired
/// messages, by the engine's clock; bounds how late a lease taken on another node comes back.
pub(crate) const MAINTENANCE_INTERVAL_MAX: Duration = Duration::from_millis(250);

/// Per-queue hints of one engine.
#[derive(Debug, Default)]
pub(crate) struct QueueCache {
    queues: Mutex<HashMap<QueueRef, Entry>>,
    /// Bumped by every [`forget`](Self::forget): a queue row read before a forget is not
    /// remembered after it.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct Entry {
    meta: Option<(QueueMeta, Instant)>,
    /// Before this time no lease known to this node lapses and no message it knows of
    /// expires; `None` means unknown, sweep now.
    maintenance_due: Option<Timestamp>,
    /// The earliest deadline or expiry this node created that no finished sweep has
    /// accounted for: a sweep running beside the lease or enqueue may not have seen it.
    unswept: Option<Timestamp>,
}

impl QueueCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueRef, Entry>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queue's id and policy, if read within [`META_FRESH_FOR`].
    pub(crate) fn meta(&self, queue: &QueueRef) -> Option<QueueMeta> {
        match &self.lock().get(queue)?.meta {
            Some((meta, read_at)) if read_at.elapsed() < META_FRESH_FOR => Some(meta.clone()),
            _ => None,
        }
    }

    /// A token to pass to [`remember_meta`](Self::remember_meta), taken before reading the
    /// queue row.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Remembers the queue's row as read from the database, unless something was forgotten
    /// since `generation` was taken (the row read may predate a policy change or deletion).
    pub(crate) fn remember_meta(&self, queue: &QueueRef, meta: &QueueMeta, generation: u64) {
        let mut queues = self.lock();
        // Checked under the lock `forget` takes too, so a forget cannot slip in between.
        if self.generation() == generation {
            queues.entry(queue.clone()).or_default().meta = Some((meta.clone(), Instant::now()));
        }
    }

    /// Forgets everything about the queue: its policy changed or it was deleted on this node.
    pub(crate) fn forget(&self, queue: &QueueRef) {
        let mut queues = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        queues.remove(queue);
    }

    /// Whether a receive at `now` must sweep the queue first.
    pub(crate) fn maintenance_due(&self, queue: &QueueRef, now: Timestamp) -> bool {
        self.next_sweep(queue).is_none_or(|due| now >= due)
    }

    /// When this node's receives next sweep the queue; `None`: at the next receive.
    pub(crate) fn next_sweep(&self, queue: &QueueRef) -> Option<Timestamp> {
        self.lock().get(queue)?.maintenance_due
    }

    /// Records a sweep that began at `swept_at`: the next is due at `next_event` (the earliest
    /// lease deadline or expiry it left in the database), and no later than
    /// [`MAINTENANCE_INTERVAL_MAX`] from then, for leases and TTLs other nodes add meanwhile;
    /// and no later than a deadline this node created after `swept_at`, which the sweep may
    /// not have seen.
    pub(crate) fn maintained(&self, queue: &QueueRef, swept_at: Timestamp, next_event: Option<Timestamp>) {
        let latest = swept_at.saturating_add(MAINTENANCE_INTERVAL_MAX);
        let mut due = next_event.map_or(latest, |t| t.min(latest));
        let mut queues = self.lock();
        let entry = queues.entry(queue.clone()).or_default();
        // A deadline at or before the sweep's start was granted before it and is swept.
        entry.unswept = entry.unswept.filter(|&t| t > swept_at);
        if let Some(unswept) = entry.unswept {
            due = due.min(unswept);
        }
        entry.maintenance_due = Some(due);
    }

    /// Something on this node will need sweeping at `at` (a lease deadline, an expiry).
    pub(crate) fn sweep_by(&self, queue: &QueueRef, at: Timestamp) {
        let mut queues = self.lock();
        let entry = queues.entry(queue.clone()).or_default();
        entry.unswept = Some(entry.unswept.map_or(at, |t| t.min(at)));
        // No due time: the next receive sweeps anyway.
        if let Some(due) = entry.maintenance_due {
            entry.maintenance_due = Some(due.min(at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueRef {
        QueueRef::parse("default", "jobs").expect("valid name")
    }

    #[test]
    fn an_unknown_queue_is_swept_first() {
        let cache = QueueCache::default();
        assert!(cache.maintenance_due(&queue(), Timestamp(0)));
    }

    #[test]
    fn sweeps_come_at_the_next_event_or_the_interval() {
        let cache = QueueCache::default();
        let q = queue();
        cache.maintained(&q, Timestamp(1_000), Some(Timestamp(1_100)));
        assert!(!cache.maintenance_due(&q, Timestamp(1_099)));
        assert!(cache.maintenance_due(&q, Timestamp(1_100)));

        cache.maintained(&q, Timestamp(2_000), None);
        let interval = i64::try_from(MAINTENANCE_INTERVAL_MAX.as_millis()).expect("small");
        assert!(!cache.maintenance_due(&q, Timestamp(2_000 + interval - 1)));
        assert!(cache.maintenance_due(&q, Timestamp(2_000 + interval)));
    }

    #[test]
    fn a_lease_granted_beside_a_sweep_is_not_overwritten_by_it() {
        let cache = QueueCache::default();
        let q = queue();
        cache.maintained(&q, Timestamp(0), None);
        // A sweep begins at 300 and reads no event; meanwhile a lease due at 350 is granted.
        cache.sweep_by(&q, Timestamp(350));
        cache.maintained(&q, Timestamp(300), None);
        assert!(cache.maintenance_due(&q, Timestamp(350)));
    }

    #[test]
    fn a_row_read_before_a_forget_is_not_remembered_after_it() {
        let cache = QueueCache::default();
        let q = queue();
        let meta = QueueMeta {
            id: 7,
            policy: courier_core::QueuePolicy::default(),
        };
        let before = cache.generation();
        cache.forget(&q);
        cache.remember_meta(&q, &meta, before);
        assert!(cache.meta(&q).is_none());
        cache.remember_meta(&q, &meta, cache.generation());
        assert_eq!(cache.meta(&q).map(|m| m.id), Some(7));
    }

    #[test]
    fn reads_of_unknown_queues_leave_nothing_behind() {
        let cache = QueueCache::default();
        for i in 0..100 {
            let q = QueueRef::parse("default", &format!("q{i}")).expect("valid name");
            assert!(cache.meta(&q).is_none());
            assert!(cache.maintenance_due(&q, Timestamp(0)));
        }
        assert!(cache.lock().is_empty());
    }

    #[test]
    fn a_local_lease_brings_the_sweep_forward_and_forget_resets() {
        let cache = QueueCache::default();
        let q = queue();
        cache.maintained(&q, Timestamp(0), None);
        cache.sweep_by(&q, Timestamp(10));
        assert!(cache.maintenance_due(&q, Timestamp(10)));
        cache.maintained(&q, Timestamp(10), None);
        assert!(!cache.maintenance_due(&q, Timestamp(11)));
        cache.forget(&q);
        assert!(cache.maintenance_due(&q, Timestamp(11)));
    }
}
