//! The [`QueueEngine`] trait: the contract every storage engine fulfils.
//!
//! The semantics written here are checked by `courier-testkit`'s conformance suite,
//! which every engine runs unchanged.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{EnqueueError, LeaseError, QueueError, StateError, StorageError};
use crate::id::{Etag, MessageId};
use crate::message::{Enqueued, Lease, MessageInfo, NackIntent, NewMessage, Receipt};
use crate::name::{Namespace, QueueRef};
use crate::ops::{ListOptions, Page, QueueStats, QueueSummary, ReceiveBatch, ReceiveOptions, Redrive, StateDoc};
use crate::policy::QueuePolicy;
use crate::time::Clock;
use crate::wait::{long_poll, WaitHub};

/// A durable, at-least-once queue store.
///
/// One trait rather than a required core plus capability traits: every engine Courier
/// ships must offer every operation (the issue that defines the queue makes all of them
/// part of the contract), so a capability split would only add `downcast`s at the edge.
///
/// Every method that returns `Ok` has made its effect durable (fsynced or committed)
/// before returning, except where an engine documents that a database crash may take back
/// a lease or an ack (which can only cause a redelivery, never a loss: the PostgreSQL
/// engine's leases, and its acks of ungrouped messages unless `durable_acks`). Every method
/// that returns `Err` has changed nothing.
#[async_trait]
pub trait QueueEngine: Send + Sync + 'static {
    /// Adds `messages` to `queue` atomically: all or none. Creates the queue on first use.
    ///
    /// A message whose idempotency key was enqueued within the queue's dedup window adds
    /// nothing and reports the first message's id with `duplicate: true`. Results are in
    /// the order of `messages`.
    async fn enqueue(&self, queue: &QueueRef, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, EnqueueError>;

    /// Leases up to `opts.max_messages` ready messages without waiting.
    ///
    /// Messages come oldest-visible first. An ordering group never has more than one message
    /// in flight, and its messages come in enqueue order. Leases that ran out are reclaimed
    /// first (counting a failed attempt, unless granted before a database crash) and expired
    /// messages are dropped or dead-lettered.
    /// An unknown queue yields an empty batch.
    async fn try_receive(&self, queue: &QueueRef, opts: &ReceiveOptions) -> Result<ReceiveBatch, QueueError>;

    /// Like [`try_receive`](Self::try_receive), but waits up to `opts.wait` for a first message,
    /// woken by enqueues and due times rather than by polling.
    async fn receive(&self, queue: &QueueRef, opts: &ReceiveOptions) -> Result<ReceiveBatch, QueueError> {
        opts.validate()?;
        long_poll(self.wait_hub(), self.clock(), queue, opts.wait, || {
            self.try_receive(queue, opts)
        })
        .await
    }

    /// Acks each receipt: the message and its state are deleted.
    ///
    /// Each receipt gets its own result; a stale or unknown lease changes nothing.
    async fn ack_many(
        &self,
        queue: &QueueRef,
        receipts: &[Receipt],
    ) -> Result<Vec<Result<(), LeaseError>>, StorageError>;

    /// Acks one receipt. See [`ack_many`](Self::ack_many).
    async fn ack(&self, queue: &QueueRef, receipt: &Receipt) -> Result<(), LeaseError> {
        let mut results = self.ack_many(queue, std::slice::from_ref(receipt)).await?;
        results.pop().unwrap_or_else(|| {
            Err(LeaseError::Storage(StorageError::Internal(
                "ack returned no result".into(),
            )))
        })
    }

    /// Gives a leased message back. A failure counts toward max attempts (dead-lettering
    /// at the limit) and is retried after its delay or the queue's backoff; a deferral does
    /// not count and is retried after its delay.
    async fn nack(&self, queue: &QueueRef, receipt: &Receipt, intent: NackIntent) -> Result<(), LeaseError>;

    /// Moves the lease deadline to now + `by`, returning the updated lease.
    async fn extend(&self, queue: &QueueRef, receipt: &Receipt, by: Duration) -> Result<Lease, LeaseError>;

    /// Reads the state document of a message the caller holds a lease on.
    async fn get_state(&self, queue: &QueueRef, receipt: &Receipt) -> Result<StateDoc, StateError>;

    /// Replaces the state document of a leased message. With `if_match`, only when the
    /// current etag equals it. Returns the new etag. The document survives retries and
    /// dead-lettering, and is deleted with the message on ack.
    async fn put_state(
        &self,
        queue: &QueueRef,
        receipt: &Receipt,
        value: Value,
        if_match: Option<Etag>,
    ) -> Result<Etag, StateError>;

    /// One message, live or dead-lettered, without leasing it.
    async fn get_message(&self, queue: &QueueRef, id: MessageId) -> Result<MessageInfo, QueueError>;

    /// Live (not dead-lettered) messages in enqueue order, without leasing them.
    async fn list_messages(&self, queue: &QueueRef, opts: ListOptions) -> Result<Page<MessageInfo>, QueueError>;

    /// Deletes every live message of the queue (not the DLQ). Returns how many.
    async fn purge(&self, queue: &QueueRef) -> Result<u64, QueueError>;

    /// Queues with their policies, optionally of one namespace, in name order.
    async fn list_queues(&self, namespace: Option<&Namespace>) -> Result<Vec<QueueSummary>, StorageError>;

    /// Deletes a queue with all its messages and dead letters.
    async fn delete_queue(&self, queue: &QueueRef) -> Result<(), QueueError>;

    /// Sets a queue's policy, creating the queue if needed. Applies to later
    /// enqueues and leases; messages keep the overrides they were enqueued with.
    async fn set_policy(&self, queue: &QueueRef, policy: QueuePolicy) -> Result<(), QueueError>;

    /// A queue's policy.
    async fn policy(&self, queue: &QueueRef) -> Result<QueuePolicy, QueueError>;

    /// Counts of a queue's messages by status, and its waiting receivers.
    async fn stats(&self, queue: &QueueRef) -> Result<QueueStats, QueueError>;

    /// Dead-lettered messages of the queue in enqueue order.
    async fn dlq_list(&self, queue: &QueueRef, opts: ListOptions) -> Result<Page<MessageInfo>, QueueError>;

    /// Deletes dead-lettered messages of the queue. Returns how many.
    async fn dlq_purge(&self, queue: &QueueRef) -> Result<u64, QueueError>;

    /// Moves dead-lettered messages back to the queue, ready at once with a fresh attempt
    /// count. Returns how many moved.
    async fn dlq_redrive(&self, queue: &QueueRef, which: Redrive) -> Result<u64, QueueError>;

    /// Makes everything committed so far durable and stops accepting writes.
    async fn shutdown(&self) -> Result<(), StorageError>;

    /// Whether the engine can serve requests now (for readiness probes).
    async fn ready(&self) -> Result<(), StorageError>;

    /// The receivers waiting on this node.
    fn wait_hub(&self) -> &WaitHub;

    /// The engine's clock.
    fn clock(&self) -> &dyn Clock;
}
