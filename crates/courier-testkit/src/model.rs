//! The reference model: the queue semantics of `docs/specs/queue-semantics.md` in plain
//! `BTreeMap`s, with the time passed in explicitly. No I/O, no concurrency, no cleverness:
//! it is the oracle that engines are compared against, so it must be obviously right.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use courier_core::{
    limits, DeadLetterReason, Delivery, EnqueueError, Enqueued, Etag, ExpiryAction, FencingToken, InvalidInput, Lease,
    LeaseError, LeaseId, ListOptions, MessageId, MessageIdGenerator, MessageInfo, MessageStatus, NackIntent, Namespace,
    NewMessage, Page, QueueError, QueuePolicy, QueueRef, QueueStats, QueueSummary, Receipt, ReceiveBatch,
    ReceiveOptions, Redrive, StateDoc, StateError, Timestamp,
};
use serde_json::Value;

/// The error text recorded when a lease runs out.
pub const LEASE_EXPIRED_ERROR: &str = "lease expired";

/// Every queue of one engine, as the spec describes them.
#[derive(Debug, Default)]
pub struct Model {
    queues: BTreeMap<QueueRef, ModelQueue>,
    ids: MessageIdGenerator,
    leases_granted: u128,
}

#[derive(Debug, Default)]
struct ModelQueue {
    policy: QueuePolicy,
    /// Live and dead-lettered messages; id order is enqueue order.
    messages: BTreeMap<MessageId, Stored>,
    /// Idempotency key → when it was first recorded and the id it maps to.
    keys: BTreeMap<String, (Timestamp, MessageId)>,
}

#[derive(Debug, Clone)]
struct Stored {
    info: MessageInfo,
    /// The message's own lease duration, if it asked for one.
    lease_override: Option<Duration>,
    /// Behind an earlier live message of its ordering group.
    blocked: bool,
    /// The current lease, while in flight.
    lease: Option<Lease>,
    /// The highest fencing token granted so far (0 before the first lease).
    last_token: u64,
    state: Value,
    state_version: u64,
}

impl Stored {
    fn is_live(&self) -> bool {
        self.info.dead_letter_reason.is_none()
    }

    fn status(&self, now: Timestamp) -> MessageStatus {
        if !self.is_live() {
            MessageStatus::DeadLettered
        } else if self.lease.is_some() {
            MessageStatus::InFlight
        } else if self.blocked {
            MessageStatus::Blocked
        } else if self.info.visible_at <= now {
            MessageStatus::Ready
        } else {
            MessageStatus::Delayed
        }
    }

    fn snapshot(&self, now: Timestamp) -> MessageInfo {
        MessageInfo {
            status: self.status(now),
            ..self.info.clone()
        }
    }

    fn dead_letter(&mut self, reason: DeadLetterReason) {
        self.info.dead_letter_reason = Some(reason);
        self.lease = None;
        self.blocked = false;
    }
}

impl Model {
    /// An engine with no queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a batch atomically. See the spec's "Enqueue" section.
    pub fn enqueue(
        &mut self,
        queue: &QueueRef,
        messages: Vec<NewMessage>,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, EnqueueError> {
        if messages.is_empty() || messages.len() > limits::ENQUEUE_BATCH_MAX {
            return Err(InvalidInput::new("a batch holds 1 to 1000 messages").into());
        }
        for m in &messages {
            m.validate()?;
        }
        let q = self.queues.entry(queue.clone()).or_default();
        let window = q.policy.dedup_window();
        let mut results = Vec::with_capacity(messages.len());
        for m in messages {
            if let Some(key) = &m.idempotency_key {
                if let Some((first_at, id)) = q.keys.get(key) {
                    if now < first_at.saturating_add(window) {
                        results.push(Enqueued {
                            id: *id,
                            duplicate: true,
                        });
                        continue;
                    }
                }
            }
            let id = self.ids.next(now);
            if let Some(key) = &m.idempotency_key {
                q.keys.insert(key.clone(), (now, id));
            }
            let stored = new_stored(&q.policy, id, m, now);
            let blocked = stored
                .info
                .ordering_group
                .as_deref()
                .is_some_and(|g| q.group_has_live(g));
            q.messages.insert(id, Stored { blocked, ..stored });
            results.push(Enqueued { id, duplicate: false });
        }
        Ok(results)
    }

    /// Leases up to `opts.max_messages` ready messages. An unknown queue yields an empty batch.
    pub fn try_receive(
        &mut self,
        queue: &QueueRef,
        opts: &ReceiveOptions,
        now: Timestamp,
    ) -> Result<ReceiveBatch, QueueError> {
        opts.validate()?;
        let Some(q) = self.queues.get_mut(queue) else {
            return Ok(ReceiveBatch::default());
        };
        q.maintain(now);
        let mut ready: Vec<(Timestamp, MessageId)> = q
            .messages
            .values()
            .filter(|m| m.status(now) == MessageStatus::Ready)
            .map(|m| (m.info.visible_at, m.info.id))
            .collect();
        ready.sort();
        ready.truncate(opts.max_messages);
        let mut deliveries = Vec::with_capacity(ready.len());
        for (_, id) in ready {
            self.leases_granted += 1;
            let lease_id = LeaseId(uuid::Uuid::from_u128(self.leases_granted));
            let policy_lease = q.policy.lease();
            let Some(m) = q.messages.get_mut(&id) else { continue };
            let lease_for = opts.lease.or(m.lease_override).unwrap_or(policy_lease);
            m.last_token += 1;
            m.info.deliveries += 1;
            let lease = Lease {
                lease_id,
                fencing_token: FencingToken(m.last_token),
                attempt: m.info.failures + 1,
                deadline: now.saturating_add(lease_for),
            };
            m.lease = Some(lease);
            m.info.visible_at = lease.deadline;
            deliveries.push(Delivery {
                message: m.snapshot(now),
                lease,
            });
        }
        let next_due = if deliveries.is_empty() { q.next_due(now) } else { None };
        Ok(ReceiveBatch { deliveries, next_due })
    }

    /// Acks each receipt; a bad receipt changes nothing.
    pub fn ack_many(&mut self, queue: &QueueRef, receipts: &[Receipt], now: Timestamp) -> Vec<Result<(), LeaseError>> {
        receipts.iter().map(|r| self.ack(queue, r, now)).collect()
    }

    /// Acks one receipt: deletes the message and its state.
    pub fn ack(&mut self, queue: &QueueRef, receipt: &Receipt, now: Timestamp) -> Result<(), LeaseError> {
        let q = self.leased_queue(queue, receipt, now)?;
        q.messages.remove(&receipt.message_id);
        q.promote_groups();
        Ok(())
    }

    /// Gives a leased message back as a failure or a deferral.
    pub fn nack(
        &mut self,
        queue: &QueueRef,
        receipt: &Receipt,
        intent: NackIntent,
        now: Timestamp,
    ) -> Result<(), LeaseError> {
        intent.validate()?;
        let q = self.leased_queue(queue, receipt, now)?;
        let policy = q.policy.clone();
        let Some(m) = q.messages.get_mut(&receipt.message_id) else {
            return Err(LeaseError::MessageNotFound(receipt.message_id));
        };
        m.lease = None;
        match intent {
            NackIntent::Failure { error, delay } => {
                m.info.failures += 1;
                m.info.last_error = Some(truncate_error(&error));
                if m.info.failures >= m.info.max_attempts {
                    m.dead_letter(DeadLetterReason::MaxAttempts);
                } else {
                    let delay = delay.unwrap_or_else(|| policy.retry_delay(m.info.failures));
                    m.info.visible_at = now.saturating_add(delay);
                }
            }
            NackIntent::Defer { delay } => m.info.visible_at = now.saturating_add(delay),
        }
        q.promote_groups();
        Ok(())
    }

    /// Moves the lease deadline to `now + by`.
    pub fn extend(
        &mut self,
        queue: &QueueRef,
        receipt: &Receipt,
        by: Duration,
        now: Timestamp,
    ) -> Result<Lease, LeaseError> {
        check_extension(by)?;
        let q = self.leased_queue(queue, receipt, now)?;
        let Some(m) = q.messages.get_mut(&receipt.message_id) else {
            return Err(LeaseError::MessageNotFound(receipt.message_id));
        };
        let Some(lease) = m.lease.as_mut() else {
            return Err(LeaseError::Stale(receipt.message_id));
        };
        lease.deadline = now.saturating_add(by);
        m.info.visible_at = lease.deadline;
        Ok(*lease)
    }

    /// Reads the state document of a leased message.
    pub fn get_state(&mut self, queue: &QueueRef, receipt: &Receipt, now: Timestamp) -> Result<StateDoc, StateError> {
        let m = self.leased_message(queue, receipt, now)?;
        Ok(StateDoc {
            value: m.state.clone(),
            etag: Etag::from_version(m.state_version),
        })
    }

    /// Replaces the state document of a leased message, optionally compare-and-swap.
    pub fn put_state(
        &mut self,
        queue: &QueueRef,
        receipt: &Receipt,
        value: Value,
        if_match: Option<Etag>,
        now: Timestamp,
    ) -> Result<Etag, StateError> {
        let size = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > limits::STATE_BYTES_MAX {
            return Err(InvalidInput::new("state document too large").into());
        }
        let m = self.leased_message(queue, receipt, now)?;
        let current = Etag::from_version(m.state_version);
        if let Some(expected) = if_match {
            if expected != current {
                return Err(StateError::EtagMismatch { expected, current });
            }
        }
        m.state = value;
        m.state_version += 1;
        Ok(Etag::from_version(m.state_version))
    }

    /// One message, live or dead-lettered.
    pub fn get_message(&mut self, queue: &QueueRef, id: MessageId, now: Timestamp) -> Result<MessageInfo, QueueError> {
        let q = self.maintained(queue, now)?;
        q.messages
            .get(&id)
            .map(|m| m.snapshot(now))
            .ok_or(QueueError::MessageNotFound(id))
    }

    /// Live messages in id order after the cursor.
    pub fn list_messages(
        &mut self,
        queue: &QueueRef,
        opts: ListOptions,
        now: Timestamp,
    ) -> Result<Page<MessageInfo>, QueueError> {
        opts.validate()?;
        let q = self.maintained(queue, now)?;
        Ok(q.page(opts, now, Stored::is_live))
    }

    /// Dead-lettered messages in id order after the cursor, after maintenance (as both
    /// engines do: a message dead-lettered by a lapse or an expiry due now is listed).
    pub fn dlq_list(
        &mut self,
        queue: &QueueRef,
        opts: ListOptions,
        now: Timestamp,
    ) -> Result<Page<MessageInfo>, QueueError> {
        opts.validate()?;
        let q = self.maintained(queue, now)?;
        Ok(q.page(opts, now, |m| !m.is_live()))
    }

    /// Deletes the live messages (in flight too); returns how many.
    pub fn purge(&mut self, queue: &QueueRef) -> Result<u64, QueueError> {
        let q = self.queue(queue)?;
        let before = q.messages.len();
        q.messages.retain(|_, m| !m.is_live());
        Ok(count(before - q.messages.len()))
    }

    /// Queues and policies, optionally of one namespace, in name order.
    pub fn list_queues(&self, namespace: Option<&Namespace>) -> Vec<QueueSummary> {
        self.queues
            .iter()
            .filter(|(q, _)| namespace.is_none_or(|ns| &q.namespace == ns))
            .map(|(q, m)| QueueSummary {
                queue: q.clone(),
                policy: m.policy.clone(),
            })
            .collect()
    }

    /// Removes the queue with its messages, dead letters and idempotency records.
    pub fn delete_queue(&mut self, queue: &QueueRef) -> Result<(), QueueError> {
        self.queues
            .remove(queue)
            .map(|_| ())
            .ok_or_else(|| QueueError::QueueNotFound(queue.clone()))
    }

    /// Sets the policy, creating the queue.
    pub fn set_policy(&mut self, queue: &QueueRef, policy: QueuePolicy) -> Result<(), QueueError> {
        policy.validate()?;
        self.queues.entry(queue.clone()).or_default().policy = policy;
        Ok(())
    }

    /// The queue's policy.
    pub fn policy(&mut self, queue: &QueueRef) -> Result<QueuePolicy, QueueError> {
        Ok(self.queue(queue)?.policy.clone())
    }

    /// Counts by status. `waiting_receivers` is always 0: the model has no long polls.
    pub fn stats(&mut self, queue: &QueueRef, now: Timestamp) -> Result<QueueStats, QueueError> {
        let q = self.maintained(queue, now)?;
        let mut s = QueueStats::default();
        let mut oldest_ready: Option<Timestamp> = None;
        for m in q.messages.values() {
            match m.status(now) {
                MessageStatus::Ready => {
                    s.ready += 1;
                    oldest_ready = Some(oldest_ready.map_or(m.info.enqueued_at, |t| t.min(m.info.enqueued_at)));
                }
                MessageStatus::Delayed => s.delayed += 1,
                MessageStatus::InFlight => s.in_flight += 1,
                MessageStatus::Blocked => s.blocked += 1,
                MessageStatus::DeadLettered => s.dead_lettered += 1,
            }
        }
        s.oldest_ready_age_ms = oldest_ready.map_or(0, |t| courier_core::message::millis(now.duration_since(t)));
        Ok(s)
    }

    /// Deletes the dead letters; returns how many.
    pub fn dlq_purge(&mut self, queue: &QueueRef) -> Result<u64, QueueError> {
        let q = self.queue(queue)?;
        let before = q.messages.len();
        q.messages.retain(|_, m| m.is_live());
        Ok(count(before - q.messages.len()))
    }

    /// Moves dead letters back, fresh, in id order; returns how many moved.
    pub fn dlq_redrive(&mut self, queue: &QueueRef, which: Redrive, now: Timestamp) -> Result<u64, QueueError> {
        let q = self.queue(queue)?;
        let ids: BTreeSet<MessageId> = match which {
            Redrive::All => q.messages.keys().copied().collect(),
            Redrive::Ids(ids) => ids.into_iter().collect(),
        };
        let mut moved = 0;
        for id in ids {
            let is_dead = q.messages.get(&id).is_some_and(|m| !m.is_live());
            if !is_dead {
                continue;
            }
            let group = q.messages.get(&id).and_then(|m| m.info.ordering_group.clone());
            let blocked = group.as_deref().is_some_and(|g| q.group_has_live(g));
            if let Some(m) = q.messages.get_mut(&id) {
                m.info.dead_letter_reason = None;
                m.info.failures = 0;
                m.info.expires_at = None;
                m.info.visible_at = now;
                m.blocked = blocked;
                moved += 1;
            }
        }
        Ok(moved)
    }

    fn queue(&mut self, queue: &QueueRef) -> Result<&mut ModelQueue, QueueError> {
        self.queues
            .get_mut(queue)
            .ok_or_else(|| QueueError::QueueNotFound(queue.clone()))
    }

    fn maintained(&mut self, queue: &QueueRef, now: Timestamp) -> Result<&mut ModelQueue, QueueError> {
        let q = self.queue(queue)?;
        q.maintain(now);
        Ok(q)
    }

    /// The queue holding `receipt`'s message, after checking that the lease is valid.
    fn leased_queue(
        &mut self,
        queue: &QueueRef,
        receipt: &Receipt,
        now: Timestamp,
    ) -> Result<&mut ModelQueue, LeaseError> {
        let id = receipt.message_id;
        let q = self.queues.get_mut(queue).ok_or(LeaseError::MessageNotFound(id))?;
        let m = q.messages.get(&id).ok_or(LeaseError::MessageNotFound(id))?;
        let valid = m
            .lease
            .is_some_and(|l| l.lease_id == receipt.lease_id && now < l.deadline);
        if !valid {
            return Err(LeaseError::Stale(id));
        }
        Ok(q)
    }

    fn leased_message(
        &mut self,
        queue: &QueueRef,
        receipt: &Receipt,
        now: Timestamp,
    ) -> Result<&mut Stored, LeaseError> {
        let id = receipt.message_id;
        let q = self.leased_queue(queue, receipt, now)?;
        q.messages.get_mut(&id).ok_or(LeaseError::MessageNotFound(id))
    }
}

impl ModelQueue {
    fn group_has_live(&self, group: &str) -> bool {
        self.messages
            .values()
            .any(|m| m.is_live() && m.info.ordering_group.as_deref() == Some(group))
    }

    /// The spec's maintenance steps 1 (lease expiry), 2 (TTL) and 3 (group promotion).
    fn maintain(&mut self, now: Timestamp) {
        for m in self.messages.values_mut() {
            let Some(lease) = m.lease else { continue };
            if lease.deadline > now {
                continue;
            }
            m.lease = None;
            m.info.failures += 1;
            m.info.last_error = Some(LEASE_EXPIRED_ERROR.to_owned());
            if m.info.failures >= m.info.max_attempts {
                m.dead_letter(DeadLetterReason::MaxAttempts);
            } else {
                m.info.visible_at = lease.deadline;
            }
        }
        let expired: Vec<MessageId> = self
            .messages
            .values()
            .filter(|m| m.is_live() && m.lease.is_none() && m.info.expires_at.is_some_and(|t| t <= now))
            .map(|m| m.info.id)
            .collect();
        for id in expired {
            match self.policy.on_expire {
                ExpiryAction::Drop => {
                    self.messages.remove(&id);
                }
                ExpiryAction::DeadLetter => {
                    if let Some(m) = self.messages.get_mut(&id) {
                        m.dead_letter(DeadLetterReason::Expired);
                    }
                }
            }
        }
        self.promote_groups();
    }

    /// Gives every group that has live messages but no active one its lowest-id blocked message.
    fn promote_groups(&mut self) {
        let mut has_active: BTreeMap<String, bool> = BTreeMap::new();
        for m in self.messages.values().filter(|m| m.is_live()) {
            if let Some(g) = &m.info.ordering_group {
                *has_active.entry(g.clone()).or_default() |= !m.blocked;
            }
        }
        for (group, active) in has_active {
            if active {
                continue;
            }
            let first_blocked = self
                .messages
                .values_mut()
                .find(|m| m.is_live() && m.blocked && m.info.ordering_group.as_deref() == Some(group.as_str()));
            if let Some(m) = first_blocked {
                m.blocked = false;
            }
        }
    }

    /// The earliest delayed `visible_at` or in-flight deadline.
    fn next_due(&self, now: Timestamp) -> Option<Timestamp> {
        self.messages
            .values()
            .filter_map(|m| match m.status(now) {
                MessageStatus::Delayed => Some(m.info.visible_at),
                MessageStatus::InFlight => m.lease.map(|l| l.deadline),
                _ => None,
            })
            .min()
    }

    fn page(&self, opts: ListOptions, now: Timestamp, keep: impl Fn(&Stored) -> bool) -> Page<MessageInfo> {
        let mut matching = self
            .messages
            .values()
            .filter(|m| opts.after.is_none_or(|after| m.info.id > after))
            .filter(|m| keep(m));
        let items: Vec<MessageInfo> = matching.by_ref().take(opts.limit).map(|m| m.snapshot(now)).collect();
        let more = matching.next().is_some();
        let next_after = if more { items.last().map(|m| m.id) } else { None };
        Page { items, next_after }
    }
}

fn new_stored(policy: &QueuePolicy, id: MessageId, m: NewMessage, now: Timestamp) -> Stored {
    let ttl = m.ttl.or(policy.ttl());
    Stored {
        info: MessageInfo {
            id,
            status: MessageStatus::Ready,
            payload: m.payload,
            content_type: m.content_type,
            attributes: m.attributes,
            correlation_id: m.correlation_id,
            ordering_group: m.ordering_group,
            enqueued_at: now,
            visible_at: now.saturating_add(m.delay),
            expires_at: ttl.map(|ttl| now.saturating_add(ttl)),
            failures: 0,
            deliveries: 0,
            max_attempts: m.max_attempts.unwrap_or(policy.max_attempts),
            last_error: None,
            dead_letter_reason: None,
        },
        lease_override: m.lease,
        blocked: false,
        lease: None,
        last_token: 0,
        state: Value::Null,
        state_version: 0,
    }
}

/// Refuses a lease extension outside 100 ms ..= 12 h.
fn check_extension(by: Duration) -> Result<(), InvalidInput> {
    courier_core::policy::check_duration(
        "by_ms",
        courier_core::message::millis(by),
        limits::LEASE_MIN,
        limits::LEASE_MAX,
    )
}

/// The error text as stored: at most [`limits::ERROR_TEXT_BYTES_MAX`] bytes, cut at a char boundary.
pub fn truncate_error(error: &str) -> String {
    let mut end = error.len().min(limits::ERROR_TEXT_BYTES_MAX);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error[..end].to_owned()
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
