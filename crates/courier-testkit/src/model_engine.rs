//! [`ModelEngine`]: the reference model behind the `QueueEngine` trait, with a clock and
//! long-poll wake-ups. The testkit runs its own suite against it, so a wrong test is caught
//! here before it is blamed on a real engine; it also serves as an in-memory engine in tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use courier_core::wait::WaitHub;
use courier_core::{
    Clock, EnqueueError, Enqueued, Etag, Lease, LeaseError, ListOptions, MessageId, MessageInfo, NackIntent, Namespace,
    NewMessage, Page, QueueEngine, QueueError, QueuePolicy, QueueRef, QueueStats, QueueSummary, Receipt, ReceiveBatch,
    ReceiveOptions, Redrive, StateDoc, StateError, StorageError,
};
use serde_json::Value;

use crate::harness::{Harness, TestEngine};
use crate::model::Model;

/// The reference model as an engine. Not durable; every write "commits" at once.
#[derive(Debug)]
pub struct ModelEngine {
    model: Mutex<Model>,
    clock: Arc<dyn Clock>,
    hub: WaitHub,
    shut_down: AtomicBool,
}

impl ModelEngine {
    /// An empty engine reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            model: Mutex::new(Model::new()),
            clock,
            hub: WaitHub::new(),
            shut_down: AtomicBool::new(false),
        }
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The model, for an operation that writes: refused after shutdown.
    fn writable(&self) -> Result<MutexGuard<'_, Model>, StorageError> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(StorageError::Unavailable("engine is shut down".into()));
        }
        Ok(self.model())
    }

    fn now(&self) -> courier_core::Timestamp {
        self.clock.now()
    }
}

/// A [`Harness`] handing out [`ModelEngine`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct ModelHarness;

#[async_trait]
impl Harness for ModelHarness {
    async fn engine(&self, clock: Arc<dyn Clock>) -> TestEngine {
        TestEngine::unguarded(Arc::new(ModelEngine::new(clock)))
    }
}

#[async_trait]
impl QueueEngine for ModelEngine {
    async fn enqueue(&self, queue: &QueueRef, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, EnqueueError> {
        let out = self.writable()?.enqueue(queue, messages, self.now())?;
        self.hub.notify(queue);
        Ok(out)
    }

    async fn try_receive(&self, queue: &QueueRef, opts: &ReceiveOptions) -> Result<ReceiveBatch, QueueError> {
        self.writable()?.try_receive(queue, opts, self.now())
    }

    async fn ack_many(
        &self,
        queue: &QueueRef,
        receipts: &[Receipt],
    ) -> Result<Vec<Result<(), LeaseError>>, StorageError> {
        let out = self.writable()?.ack_many(queue, receipts, self.now());
        // An ack can unblock the next message of an ordering group.
        self.hub.notify(queue);
        Ok(out)
    }

    async fn nack(&self, queue: &QueueRef, receipt: &Receipt, intent: NackIntent) -> Result<(), LeaseError> {
        self.writable()?.nack(queue, receipt, intent, self.now())?;
        self.hub.notify(queue);
        Ok(())
    }

    async fn extend(&self, queue: &QueueRef, receipt: &Receipt, by: Duration) -> Result<Lease, LeaseError> {
        self.writable()?.extend(queue, receipt, by, self.now())
    }

    async fn get_state(&self, queue: &QueueRef, receipt: &Receipt) -> Result<StateDoc, StateError> {
        self.model().get_state(queue, receipt, self.now())
    }

    async fn put_state(
        &self,
        queue: &QueueRef,
        receipt: &Receipt,
        value: Value,
        if_match: Option<Etag>,
    ) -> Result<Etag, StateError> {
        self.writable()?.put_state(queue, receipt, value, if_match, self.now())
    }

    async fn get_message(&self, queue: &QueueRef, id: MessageId) -> Result<MessageInfo, QueueError> {
        self.model().get_message(queue, id, self.now())
    }

    async fn list_messages(&self, queue: &QueueRef, opts: ListOptions) -> Result<Page<MessageInfo>, QueueError> {
        self.model().list_messages(queue, opts, self.now())
    }

    async fn purge(&self, queue: &QueueRef) -> Result<u64, QueueError> {
        self.writable()?.purge(queue)
    }

    async fn list_queues(&self, namespace: Option<&Namespace>) -> Result<Vec<QueueSummary>, StorageError> {
        Ok(self.model().list_queues(namespace))
    }

    async fn delete_queue(&self, queue: &QueueRef) -> Result<(), QueueError> {
        self.writable()?.delete_queue(queue)
    }

    async fn set_policy(&self, queue: &QueueRef, policy: QueuePolicy) -> Result<(), QueueError> {
        self.writable()?.set_policy(queue, policy)
    }

    async fn policy(&self, queue: &QueueRef) -> Result<QueuePolicy, QueueError> {
        self.model().policy(queue)
    }

    async fn stats(&self, queue: &QueueRef) -> Result<QueueStats, QueueError> {
        let mut stats = self.model().stats(queue, self.now())?;
        stats.waiting_receivers = self.hub.waiting(queue);
        Ok(stats)
    }

    async fn dlq_list(&self, queue: &QueueRef, opts: ListOptions) -> Result<Page<MessageInfo>, QueueError> {
        self.model().dlq_list(queue, opts, self.now())
    }

    async fn dlq_purge(&self, queue: &QueueRef) -> Result<u64, QueueError> {
        self.writable()?.dlq_purge(queue)
    }

    async fn dlq_redrive(&self, queue: &QueueRef, which: Redrive) -> Result<u64, QueueError> {
        let moved = self.writable()?.dlq_redrive(queue, which, self.now())?;
        self.hub.notify(queue);
        Ok(moved)
    }

    async fn shutdown(&self) -> Result<(), StorageError> {
        self.shut_down.store(true, Ordering::SeqCst);
        self.hub.notify_all();
        Ok(())
    }

    async fn ready(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn wait_hub(&self) -> &WaitHub {
        &self.hub
    }

    fn clock(&self) -> &dyn Clock {
        &*self.clock
    }
}
