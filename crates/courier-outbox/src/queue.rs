//! [`QueuePublisher`]: publishes relayed messages into Courier's own queues, in process, through
//! any [`QueueEngine`]. The outbox id becomes the idempotency key, so a re-publish after a lost
//! settle is dropped by the queue's dedup window; the key becomes the ordering group, so
//! consumers see one key's messages in write order too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use courier_core::limits::ENQUEUE_BATCH_MAX;
use courier_core::{
    EnqueueError, ErrorKind, Namespace, NewMessage, OutboundMessage, PublishError, Publisher, QueueEngine, QueueName,
    QueueRef,
};
use serde_json::{Map, Value};

/// Publishes into Courier queues: destination `orders` is the queue `orders` in the publisher's
/// namespace; `billing/orders` names the namespace itself. Headers become attributes, the
/// content type is kept. Messages bound for one queue go in one atomic enqueue (up to the
/// engine's batch limit).
#[derive(Clone)]
pub struct QueuePublisher {
    engine: Arc<dyn QueueEngine>,
    namespace: Namespace,
}

impl std::fmt::Debug for QueuePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuePublisher")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl QueuePublisher {
    /// Publishes through `engine` into `namespace` (for destinations without one).
    pub fn new(engine: Arc<dyn QueueEngine>, namespace: Namespace) -> Self {
        Self { engine, namespace }
    }

    fn queue_of(&self, destination: &str) -> Result<QueueRef, PublishError> {
        let parsed = match destination.split_once('/') {
            Some((namespace, name)) => QueueRef::parse(namespace, name),
            None => QueueName::new(destination).map(|name| QueueRef {
                namespace: self.namespace.clone(),
                name,
            }),
        };
        parsed.map_err(|e| PublishError::Rejected(format!("destination {destination:?} is not a queue: {e}")))
    }
}

/// One message of the batch on its way to a queue.
struct Item {
    index: usize,
    queue: QueueRef,
    message: NewMessage,
}

#[async_trait]
impl Publisher for QueuePublisher {
    async fn publish(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PublishError>> {
        let mut results: Vec<Option<Result<(), PublishError>>> = vec![None; batch.len()];
        // Where each key first failed to convert: that key's later messages are not attempted.
        let mut refused_at: HashMap<&str, usize> = HashMap::new();
        let mut items = Vec::with_capacity(batch.len());
        for (index, outbound) in batch.iter().enumerate() {
            match self.convert(outbound) {
                Ok((queue, message)) => items.push(Item { index, queue, message }),
                Err(error) => {
                    results[index] = Some(Err(error));
                    if let Some(key) = outbound.key.as_deref() {
                        refused_at.entry(key).or_insert(index);
                    }
                }
            }
        }
        let mut failed_keys: HashSet<&str> = HashSet::new();
        for chunk in chunks(items) {
            let mut send = Vec::with_capacity(chunk.len());
            for item in chunk {
                let key = batch[item.index].key.as_deref();
                let held_back = key
                    .is_some_and(|k| failed_keys.contains(k) || refused_at.get(k).is_some_and(|&at| at < item.index));
                if held_back {
                    results[item.index] = Some(Err(not_attempted(key)));
                } else {
                    send.push(item);
                }
            }
            if send.is_empty() {
                continue;
            }
            let outcome = self.enqueue(&send).await;
            for item in &send {
                if outcome.is_err() {
                    failed_keys.extend(batch[item.index].key.as_deref());
                }
                results[item.index] = Some(outcome.clone());
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(PublishError::Unavailable("message was not published".into()))))
            .collect()
    }

    fn name(&self) -> &str {
        "courier-queue"
    }
}

impl QueuePublisher {
    fn convert(&self, outbound: &OutboundMessage) -> Result<(QueueRef, NewMessage), PublishError> {
        let queue = self.queue_of(&outbound.destination)?;
        let attributes: Map<String, Value> = outbound
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect();
        let message = NewMessage {
            payload: outbound.payload.clone(),
            content_type: outbound.content_type.clone(),
            attributes,
            idempotency_key: Some(outbound.id.to_string()),
            ordering_group: outbound.key.clone(),
            ..NewMessage::default()
        };
        message
            .validate()
            .map_err(|e| PublishError::Rejected(format!("not a valid queue message: {e}")))?;
        Ok((queue, message))
    }

    /// Enqueues one chunk (all for one queue) atomically. Duplicates count as published: the
    /// queue already has the message.
    async fn enqueue(&self, items: &[Item]) -> Result<(), PublishError> {
        let queue = &items[0].queue;
        debug_assert!(items.iter().all(|i| &i.queue == queue));
        let messages = items.iter().map(|i| i.message.clone()).collect();
        self.engine
            .enqueue(queue, messages)
            .await
            .map(|_| ())
            .map_err(publish_error)
    }
}

/// The batch split into enqueue calls, each for one queue, keeping every key's messages in
/// order across calls. Messages are grouped by queue (in order of first appearance) unless a
/// key goes to more than one queue; then consecutive runs of one queue keep the exact order.
fn chunks(items: Vec<Item>) -> Vec<Vec<Item>> {
    let groups = if keys_span_queues(&items) {
        consecutive_runs(items)
    } else {
        group_by_queue(items)
    };
    groups
        .into_iter()
        .flat_map(|group| {
            let mut group = group.into_iter().peekable();
            let mut out = Vec::new();
            while group.peek().is_some() {
                out.push(group.by_ref().take(ENQUEUE_BATCH_MAX).collect::<Vec<_>>());
            }
            out
        })
        .collect()
}

fn keys_span_queues(items: &[Item]) -> bool {
    let mut queue_of_key: HashMap<&str, &QueueRef> = HashMap::new();
    items.iter().any(|item| match item.message.ordering_group.as_deref() {
        Some(key) => *queue_of_key.entry(key).or_insert(&item.queue) != &item.queue,
        None => false,
    })
}

fn group_by_queue(items: Vec<Item>) -> Vec<Vec<Item>> {
    let mut groups: Vec<Vec<Item>> = Vec::new();
    let mut position: HashMap<QueueRef, usize> = HashMap::new();
    for item in items {
        let at = *position.entry(item.queue.clone()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(item);
    }
    groups
}

fn consecutive_runs(items: Vec<Item>) -> Vec<Vec<Item>> {
    let mut runs: Vec<Vec<Item>> = Vec::new();
    for item in items {
        match runs.last_mut() {
            Some(run) if run[0].queue == item.queue => run.push(item),
            _ => runs.push(vec![item]),
        }
    }
    runs
}

fn not_attempted(key: Option<&str>) -> PublishError {
    PublishError::Unavailable(format!(
        "not attempted: an earlier message of key {:?} failed in this batch",
        key.unwrap_or_default()
    ))
}

/// Refusals of the message itself are `Rejected`; everything else may pass on a retry.
fn publish_error(error: EnqueueError) -> PublishError {
    match error.kind() {
        ErrorKind::InvalidInput | ErrorKind::NotFound => PublishError::Rejected(error.to_string()),
        _ => PublishError::Unavailable(error.to_string()),
    }
}
