//! Request and result types of queue operations other than enqueue.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::InvalidInput;
use crate::id::{Etag, MessageId};
use crate::limits;
use crate::message::{millis, Delivery};
use crate::name::QueueRef;
use crate::policy::{check_duration, QueuePolicy};
use crate::time::Timestamp;

/// Options of a receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Most messages to return (1 to [`limits::RECEIVE_BATCH_MAX`]). Default 1.
    pub max_messages: usize,
    /// How long to wait for a first message (long poll). Default zero: return at once.
    pub wait: Duration,
    /// Lease to grant; default the message's own, else the queue's.
    pub lease: Option<Duration>,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        Self {
            max_messages: 1,
            wait: Duration::ZERO,
            lease: None,
        }
    }
}

impl ReceiveOptions {
    /// Checks the options against [`limits`].
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.max_messages == 0 || self.max_messages > limits::RECEIVE_BATCH_MAX {
            return Err(InvalidInput::new(format!(
                "max_messages must be between 1 and {}, got {}",
                limits::RECEIVE_BATCH_MAX,
                self.max_messages
            )));
        }
        check_duration("wait_ms", millis(self.wait), Duration::ZERO, limits::WAIT_MAX)?;
        if let Some(lease) = self.lease {
            check_duration("lease_ms", millis(lease), limits::LEASE_MIN, limits::LEASE_MAX)?;
        }
        Ok(())
    }
}

/// What one non-blocking receive attempt found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceiveBatch {
    /// The leased messages, oldest-visible first.
    pub deliveries: Vec<Delivery>,
    /// When nothing was ready: the earliest time something may become ready
    /// (a delayed message, a retry, or a lease that expires).
    pub next_due: Option<Timestamp>,
}

/// Paging through messages in enqueue order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOptions {
    /// Start after this message (exclusive); `None` starts at the oldest.
    pub after: Option<MessageId>,
    /// Page size (1 to [`limits::LIST_PAGE_MAX`]).
    pub limit: usize,
}

impl Default for ListOptions {
    fn default() -> Self {
        Self {
            after: None,
            limit: 100,
        }
    }
}

impl ListOptions {
    /// Checks the page size.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.limit == 0 || self.limit > limits::LIST_PAGE_MAX {
            return Err(InvalidInput::new(format!(
                "limit must be between 1 and {}, got {}",
                limits::LIST_PAGE_MAX,
                self.limit
            )));
        }
        Ok(())
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next_after: Option<MessageId>,
}

/// Which dead-lettered messages to send back to their queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    /// Every dead-lettered message of the queue.
    All,
    /// Only these; ids that are not dead-lettered in this queue are skipped.
    Ids(Vec<MessageId>),
}

/// A snapshot of one queue's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Visible now.
    pub ready: u64,
    /// Leased to consumers.
    pub in_flight: u64,
    /// Invisible until a delay or backoff passes.
    pub delayed: u64,
    /// Waiting behind an earlier message of their ordering group.
    pub blocked: u64,
    /// In the dead-letter queue.
    pub dead_lettered: u64,
    /// Age of the oldest ready message in milliseconds (0 when none is ready).
    pub oldest_ready_age_ms: u64,
    /// Receivers long-polling this queue on this node right now.
    pub waiting_receivers: u64,
}

/// A queue and its policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueSummary {
    /// The queue.
    pub queue: QueueRef,
    /// Its policy.
    pub policy: QueuePolicy,
}

/// A message's state document and its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDoc {
    /// The document; `null` until first written.
    pub value: Value,
    /// Pass back as `if_match` to write it.
    pub etag: Etag,
}
