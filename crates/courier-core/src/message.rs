//! The message model: what a producer sends, what the queue stores, what a consumer gets.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::InvalidInput;
use crate::id::{FencingToken, LeaseId, MessageId};
use crate::limits;
use crate::policy::{check_attempts, check_duration};
use crate::time::Timestamp;

/// A message to enqueue. Build with [`NewMessage::new`] and the `with_*` setters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewMessage {
    /// The body: any bytes.
    pub payload: Bytes,
    /// MIME type of the payload, if the producer knows it.
    pub content_type: Option<String>,
    /// Free-form metadata.
    pub attributes: Map<String, Value>,
    /// Ties the message to a request or conversation, for tracing.
    pub correlation_id: Option<String>,
    /// The message stays invisible this long after enqueue.
    pub delay: Duration,
    /// Expires unseen after this long; default from the queue policy.
    pub ttl: Option<Duration>,
    /// Failed attempts before dead-lettering; default from the queue policy.
    pub max_attempts: Option<u32>,
    /// Lease given to receivers of this message; default from the queue policy.
    pub lease: Option<Duration>,
    /// A repeat enqueue with the same key within the dedup window adds nothing.
    pub idempotency_key: Option<String>,
    /// Messages of one group are delivered in enqueue order, one at a time.
    pub ordering_group: Option<String>,
}

impl NewMessage {
    /// A message with this payload and every option at its default.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Sets the delay before the message becomes visible.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the time to live.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the failed-attempt limit.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the ordering group.
    pub fn with_ordering_group(mut self, group: impl Into<String>) -> Self {
        self.ordering_group = Some(group.into());
        self
    }

    /// Sets the content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Checks every field against [`limits`].
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.payload.len() > limits::PAYLOAD_BYTES_MAX {
            return Err(InvalidInput::new(format!(
                "payload is {} bytes; the limit is {}",
                self.payload.len(),
                limits::PAYLOAD_BYTES_MAX
            )));
        }
        check_text("content_type", self.content_type.as_deref())?;
        check_text("correlation_id", self.correlation_id.as_deref())?;
        check_text("idempotency_key", self.idempotency_key.as_deref())?;
        check_text("ordering_group", self.ordering_group.as_deref())?;
        check_duration("delay_ms", millis(self.delay), Duration::ZERO, limits::DELAY_MAX)?;
        if let Some(ttl) = self.ttl {
            check_duration("ttl_ms", millis(ttl), Duration::from_millis(1), limits::TTL_MAX)?;
        }
        if let Some(lease) = self.lease {
            check_duration("lease_ms", millis(lease), limits::LEASE_MIN, limits::LEASE_MAX)?;
        }
        if let Some(n) = self.max_attempts {
            check_attempts("max_attempts", n)?;
        }
        let attributes_bytes = serde_json::to_vec(&self.attributes)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if attributes_bytes > limits::ATTRIBUTES_BYTES_MAX {
            return Err(InvalidInput::new(format!(
                "attributes are {attributes_bytes} bytes serialized; the limit is {}",
                limits::ATTRIBUTES_BYTES_MAX
            )));
        }
        Ok(())
    }
}

/// Whole milliseconds of `d`, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn check_text(field: &str, value: Option<&str>) -> Result<(), InvalidInput> {
    match value {
        Some("") => Err(InvalidInput::new(format!("{field} must not be empty when given"))),
        Some(v) if v.len() > limits::TEXT_FIELD_BYTES_MAX => Err(InvalidInput::new(format!(
            "{field} is {} bytes; the limit is {}",
            v.len(),
            limits::TEXT_FIELD_BYTES_MAX
        ))),
        // PostgreSQL text cannot hold NUL; refused on every engine so they accept the same input.
        Some(v) if v.contains('\0') => Err(InvalidInput::new(format!("{field} must not contain a NUL character"))),
        _ => Ok(()),
    }
}

/// The result of enqueueing one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The message's id; for a duplicate, the id of the first message with the key.
    pub id: MessageId,
    /// True when the idempotency key was seen within the dedup window and nothing was added.
    pub duplicate: bool,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Visible: the next receive may lease it.
    Ready,
    /// Not visible yet (enqueue delay or retry backoff).
    Delayed,
    /// Leased to a consumer.
    InFlight,
    /// Waiting behind an earlier message of its ordering group.
    Blocked,
    /// In the dead-letter queue.
    DeadLettered,
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// It failed `max_attempts` times.
    MaxAttempts,
    /// Its time to live ran out.
    Expired,
}

/// A stored message as seen without leasing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageInfo {
    /// The id.
    pub id: MessageId,
    /// Where it stands now.
    pub status: MessageStatus,
    /// The body.
    pub payload: Bytes,
    /// MIME type of the payload.
    pub content_type: Option<String>,
    /// Free-form metadata.
    pub attributes: Map<String, Value>,
    /// Correlation id given at enqueue.
    pub correlation_id: Option<String>,
    /// Ordering group, if any.
    pub ordering_group: Option<String>,
    /// When it was enqueued.
    pub enqueued_at: Timestamp,
    /// When it becomes (or became) visible; for an in-flight message, its lease deadline.
    pub visible_at: Timestamp,
    /// When it expires, if it has a TTL.
    pub expires_at: Option<Timestamp>,
    /// Failed attempts so far.
    pub failures: u32,
    /// Leases granted so far (deferrals and failures both count).
    pub deliveries: u32,
    /// Failed attempts after which it is dead-lettered.
    pub max_attempts: u32,
    /// The error text of the last failure.
    pub last_error: Option<String>,
    /// Why it was dead-lettered, if it was.
    pub dead_letter_reason: Option<DeadLetterReason>,
}

/// A lease on one message: proof that the holder may ack, nack, extend it or touch its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Identifies this lease; pass it back to ack, nack or extend.
    pub lease_id: LeaseId,
    /// Grows with every lease of this message.
    pub fencing_token: FencingToken,
    /// Which attempt this is (failures so far + 1).
    pub attempt: u32,
    /// The lease ends at this time unless extended.
    pub deadline: Timestamp,
}

/// A received message and its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The message.
    pub message: MessageInfo,
    /// The lease the receiver now holds.
    pub lease: Lease,
}

impl Delivery {
    /// The receipt to ack, nack or extend this delivery.
    pub fn receipt(&self) -> Receipt {
        Receipt {
            message_id: self.message.id,
            lease_id: self.lease.lease_id,
        }
    }
}

/// What a consumer presents to settle a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt {
    /// The message.
    pub message_id: MessageId,
    /// The lease held on it.
    pub lease_id: LeaseId,
}

/// How a consumer gives a message back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NackIntent {
    /// Processing failed: counts toward max attempts and keeps the error text.
    /// Without a delay the queue's backoff decides when it is retried.
    Failure {
        /// What went wrong, kept on the message (truncated to a limit).
        error: String,
        /// When to retry; `None` uses the queue's exponential backoff.
        delay: Option<Duration>,
    },
    /// Not now: put it back after `delay` without counting an attempt.
    Defer {
        /// How long it stays invisible.
        delay: Duration,
    },
}

impl NackIntent {
    /// Checks the delay against [`limits::DELAY_MAX`], and that the error text has no NUL
    /// character (PostgreSQL text cannot hold one).
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let delay = match self {
            Self::Failure { error, .. } if error.contains('\0') => {
                return Err(InvalidInput::new("error must not contain a NUL character"));
            }
            Self::Failure { delay, .. } => delay.unwrap_or_default(),
            Self::Defer { delay } => *delay,
        };
        check_duration("delay_ms", millis(delay), Duration::ZERO, limits::DELAY_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_in_text_fields_are_refused() {
        let with_nul = NewMessage::new("x").with_content_type("a\0b");
        let refused = with_nul.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("content_type") && refused.contains("NUL"), "{refused}");
        let nack = NackIntent::Failure {
            error: "bad\0".into(),
            delay: None,
        };
        assert!(nack.validate().is_err());
        assert!(NewMessage::new("x").with_content_type("fine").validate().is_ok());
    }
}
