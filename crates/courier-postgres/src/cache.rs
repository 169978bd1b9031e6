//! What a node remembers about each queue between calls, so a receive or an ack is one
//! statement instead of a transaction of several: the queue's row (id and policy), and when
//! its lapsed leases and expired messages next need sweeping.
//!
//! Both are hints that can only be late, never wrong in a way a caller sees: a cached policy
//! is at most [`META_FRESH_FOR`] old (changes made on this node replace it at once), and
//! maintenance runs at the latest [`MAINTENANCE_INTERVAL_MAX`] after a lease taken on another
//! node lapsed; leases and TTLs made on this node are tracked to the millisecond.

use std::collections::HashMap;
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
}

#[derive(Debug, Default)]
struct Entry {
    meta: Option<(QueueMeta, Instant)>,
    /// Before this time no lease known to this node lapses and no message it knows of
    /// expires; `None` means unknown, sweep now.
    maintenance_due: Option<Timestamp>,
}

impl QueueCache {
    fn with<T>(&self, queue: &QueueRef, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        f(queues.entry(queue.clone()).or_default())
    }

    /// The queue's id and policy, if read within [`META_FRESH_FOR`].
    pub(crate) fn meta(&self, queue: &QueueRef) -> Option<QueueMeta> {
        self.with(queue, |e| match &e.meta {
            Some((meta, read_at)) if read_at.elapsed() < META_FRESH_FOR => Some(meta.clone()),
            _ => None,
        })
    }

    /// Remembers the queue's row as just read from the database.
    pub(crate) fn remember_meta(&self, queue: &QueueRef, meta: &QueueMeta) {
        self.with(queue, |e| e.meta = Some((meta.clone(), Instant::now())));
    }

    /// Forgets everything about the queue: its policy changed or it was deleted on this node.
    pub(crate) fn forget(&self, queue: &QueueRef) {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues.remove(queue);
    }

    /// Whether a receive at `now` must sweep the queue first.
    pub(crate) fn maintenance_due(&self, queue: &QueueRef, now: Timestamp) -> bool {
        self.with(queue, |e| e.maintenance_due.is_none_or(|due| now >= due))
    }

    /// Records a sweep at `now`: the next is due at `next_event` (the earliest lease deadline
    /// or expiry left in the database), and no later than [`MAINTENANCE_INTERVAL_MAX`] from
    /// now, for leases and TTLs other nodes add meanwhile.
    pub(crate) fn maintained(&self, queue: &QueueRef, now: Timestamp, next_event: Option<Timestamp>) {
        let latest = now.saturating_add(MAINTENANCE_INTERVAL_MAX);
        let due = next_event.map_or(latest, |t| t.min(latest));
        self.with(queue, |e| e.maintenance_due = Some(due));
    }

    /// Something on this node will need sweeping at `at` (a lease deadline, an expiry).
    pub(crate) fn sweep_by(&self, queue: &QueueRef, at: Timestamp) {
        self.with(queue, |e| {
            if let Some(due) = e.maintenance_due {
                e.maintenance_due = Some(due.min(at));
            }
        });
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
