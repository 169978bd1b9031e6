//! Courier's core: the message model, validated names, queue policy, typed errors, the
//! [`QueueEngine`] trait every storage engine implements, and the long-poll loop they share.
//!
//! It is not:
//! - a storage engine (see `courier-sqlite`, `courier-postgres`);
//! - an HTTP API (see `courier-server`);
//! - a place for I/O: nothing here touches files, sockets or databases. The only runtime
//!   dependency is tokio's `sync` and `time`, for the long-poll wait in [`wait`].

#![warn(clippy::unwrap_used)]

pub mod engine;
pub mod error;
pub mod id;
pub mod key_order;
pub mod limits;
pub mod message;
pub mod name;
pub mod ops;
pub mod policy;
pub mod publish;
pub mod time;
pub mod url_query;
pub mod wait;

pub use engine::QueueEngine;
pub use error::{EnqueueError, ErrorKind, InvalidInput, LeaseError, QueueError, StateError, StorageError};
pub use id::{Etag, FencingToken, LeaseId, MessageId, MessageIdGenerator};
pub use message::{
    DeadLetterReason, Delivery, Enqueued, Lease, MessageInfo, MessageStatus, NackIntent, NewMessage, Receipt,
};
pub use name::{NameError, Namespace, QueueName, QueueRef};
pub use ops::{ListOptions, Page, QueueStats, QueueSummary, ReceiveBatch, ReceiveOptions, Redrive, StateDoc};
pub use policy::{ExpiryAction, QueuePolicy};
pub use publish::{OutboundMessage, PublishError, Publisher};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use wait::WaitHub;
