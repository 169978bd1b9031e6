//! Typed errors, one enum per family of operations, each with a [`ErrorKind`].
//!
//! The kind is what callers branch on (and what the HTTP layer maps to a status); the
//! variants carry the detail. [`StorageError`] is shared by every family.

use crate::id::{Etag, MessageId};
use crate::name::{NameError, QueueRef};

/// The category of an error, stable across engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request itself is wrong; retrying it unchanged fails again.
    InvalidInput,
    /// The queue or message does not exist.
    NotFound,
    /// The lease is stale, expired or unknown.
    LeaseConflict,
    /// A compare-and-swap found another version.
    EtagMismatch,
    /// The engine cannot serve now (database down, shutting down); retry later.
    Unavailable,
    /// A bug or corruption; the operation may not be retried blindly.
    Internal,
}

/// A request that breaks a rule; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

impl InvalidInput {
    /// An invalid-input error with this explanation.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl From<NameError> for InvalidInput {
    fn from(e: NameError) -> Self {
        Self(e.to_string())
    }
}

/// A failure of the storage underneath an engine. `Clone`, so an engine that runs many callers'
/// operations in one transaction can hand each of them the transaction's failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The store cannot be reached or is shutting down; a later retry may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A commit failed earlier, so the engine refuses all writes until restarted: after a
    /// failed fsync the state on disk is unknown and carrying on could lose acknowledged data.
    #[error("storage refuses writes after an earlier commit failure: {0}")]
    Poisoned(String),
    /// Anything else: a bug, corruption, or an unexpected database error.
    #[error("storage failure: {0}")]
    Internal(String),
}

impl StorageError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Poisoned(_) | Self::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// Errors of enqueue.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// A message or the batch breaks a rule; nothing was enqueued.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// Storage failed; nothing was enqueued.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl EnqueueError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::InvalidInput,
            Self::Storage(e) => e.kind(),
        }
    }
}

/// Errors of operations that need a valid lease: ack, nack, extend.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// No message with this id exists in this queue (it may have been acked already).
    #[error("message {0} not found")]
    MessageNotFound(MessageId),
    /// The lease is not the message's current lease, or it has expired.
    #[error("lease of message {0} is stale, expired or unknown")]
    Stale(MessageId),
    /// The request is malformed (e.g. an absurd duration).
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// Storage failed; nothing changed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl LeaseError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::MessageNotFound(_) => ErrorKind::NotFound,
            Self::Stale(_) => ErrorKind::LeaseConflict,
            Self::Invalid(_) => ErrorKind::InvalidInput,
            Self::Storage(e) => e.kind(),
        }
    }
}

/// Errors of the per-message state document.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The caller does not hold a valid lease on the message.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The document changed since the caller read it.
    #[error("state etag mismatch: expected {expected}, current {current}")]
    EtagMismatch {
        /// The etag the caller sent.
        expected: Etag,
        /// The etag the document has now.
        current: Etag,
    },
    /// The document is too large or otherwise invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
}

impl From<StorageError> for StateError {
    fn from(e: StorageError) -> Self {
        Self::Lease(LeaseError::Storage(e))
    }
}

impl StateError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Lease(e) => e.kind(),
            Self::EtagMismatch { .. } => ErrorKind::EtagMismatch,
            Self::Invalid(_) => ErrorKind::InvalidInput,
        }
    }
}

/// Errors of queue-level operations: receive, listing, stats, DLQ, policy, purge.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue does not exist.
    #[error("queue {0} not found")]
    QueueNotFound(QueueRef),
    /// The message does not exist in this queue.
    #[error("message {0} not found")]
    MessageNotFound(MessageId),
    /// The request breaks a rule.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl QueueError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::QueueNotFound(_) | Self::MessageNotFound(_) => ErrorKind::NotFound,
            Self::Invalid(_) => ErrorKind::InvalidInput,
            Self::Storage(e) => e.kind(),
        }
    }
}
