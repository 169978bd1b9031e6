//! The conformance suite: one `pub async fn` per behaviour of `docs/specs/queue-semantics.md`,
//! each taking a [`Harness`] and building its own fresh engine. Engines run all of them
//! through [`conformance_tests!`](crate::conformance_tests); keep that macro's list in sync.

pub mod admin;
pub mod enqueue;
pub mod idempotency;
pub mod lease;
pub mod long_poll;
pub mod ordering;
pub mod retry;
pub mod state;
pub mod ttl;
pub mod validation;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use courier_core::{
    Delivery, Enqueued, ManualClock, MessageId, MessageInfo, QueueEngine, QueuePolicy, QueueRef, QueueStats,
    ReceiveOptions, Timestamp,
};

use crate::harness::Harness;

/// Where every manual clock of the suite starts.
pub const START: Timestamp = Timestamp(1_700_000_000_000);

/// One test's engine, its manual clock and the queue it works on.
pub(crate) struct Ctx {
    pub(crate) engine: Arc<dyn QueueEngine>,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) q: QueueRef,
    // Dropped after `engine`: keeps the engine's storage alive.
    _guard: Box<dyn Any + Send + Sync>,
}

impl Ctx {
    /// A fresh engine on a manual clock standing at [`START`].
    pub(crate) async fn new(h: &dyn Harness) -> Self {
        let clock = Arc::new(ManualClock::new(START));
        let te = h.engine(clock.clone()).await;
        Self {
            engine: te.engine,
            clock,
            q: queue("default", "orders"),
            _guard: te.guard,
        }
    }

    /// A fresh engine whose queue has `policy`.
    pub(crate) async fn with_policy(h: &dyn Harness, policy: QueuePolicy) -> Self {
        let ctx = Self::new(h).await;
        ctx.engine.set_policy(&ctx.q, policy).await.expect("set_policy");
        ctx
    }

    pub(crate) fn now(&self) -> Timestamp {
        courier_core::Clock::now(&*self.clock)
    }

    pub(crate) fn advance_ms(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }

    /// Enqueues one message to `self.q`, expecting a fresh id.
    pub(crate) async fn put(&self, m: courier_core::NewMessage) -> MessageId {
        let out = self.put_raw(vec![m]).await;
        assert_eq!(out.len(), 1, "one result per message");
        assert!(!out[0].duplicate, "a message without a repeated key is not a duplicate");
        out[0].id
    }

    /// Enqueues a batch to `self.q`, expecting success.
    pub(crate) async fn put_raw(&self, msgs: Vec<courier_core::NewMessage>) -> Vec<Enqueued> {
        self.engine.enqueue(&self.q, msgs).await.expect("enqueue")
    }

    /// `try_receive` of up to `max` messages with the default lease.
    pub(crate) async fn take(&self, max: usize) -> Vec<Delivery> {
        let opts = ReceiveOptions {
            max_messages: max,
            ..ReceiveOptions::default()
        };
        self.engine
            .try_receive(&self.q, &opts)
            .await
            .expect("try_receive")
            .deliveries
    }

    /// Receives exactly one message and checks it is `id`.
    pub(crate) async fn take_id(&self, id: MessageId) -> Delivery {
        let mut got = self.take(10).await;
        assert_eq!(ids(&got), vec![id], "expected exactly this message to be delivered");
        got.remove(0)
    }

    /// Asserts that no message is ready now.
    pub(crate) async fn assert_nothing_ready(&self) {
        let got = self.take(10).await;
        assert!(got.is_empty(), "expected no delivery, got {:?}", ids(&got));
    }

    pub(crate) async fn info(&self, id: MessageId) -> MessageInfo {
        self.engine.get_message(&self.q, id).await.expect("get_message")
    }

    pub(crate) async fn stats(&self) -> QueueStats {
        self.engine.stats(&self.q).await.expect("stats")
    }
}

/// A queue reference from valid names.
pub(crate) fn queue(ns: &str, name: &str) -> QueueRef {
    QueueRef::parse(ns, name).expect("valid queue name")
}

/// A message with a text payload.
pub(crate) fn msg(payload: &str) -> courier_core::NewMessage {
    courier_core::NewMessage::new(payload.to_owned())
}

/// The message ids of deliveries, in delivery order.
pub(crate) fn ids(ds: &[Delivery]) -> Vec<MessageId> {
    ds.iter().map(|d| d.message.id).collect()
}

/// `T + ms`.
pub(crate) fn at(t: Timestamp, ms: u64) -> Timestamp {
    t.saturating_add(Duration::from_millis(ms))
}

/// A message id no engine has minted.
pub(crate) fn unknown_id() -> MessageId {
    MessageId(uuid::Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001))
}

/// Stats with the given counts and everything else zero.
pub(crate) fn counts(ready: u64, delayed: u64, in_flight: u64, blocked: u64, dead_lettered: u64) -> [u64; 5] {
    [ready, delayed, in_flight, blocked, dead_lettered]
}

/// The five status counts of `s`, in the order of [`counts`].
pub(crate) fn counts_of(s: &QueueStats) -> [u64; 5] {
    [s.ready, s.delayed, s.in_flight, s.blocked, s.dead_lettered]
}
