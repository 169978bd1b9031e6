//! Hard limits on everything a request can ask for, with the unit in each name.
//!
//! Engines and the HTTP layer check these; a request outside them is refused with a
//! clear error rather than clamped, so callers learn about their mistake.

use std::time::Duration;

/// Largest payload an engine accepts. The server's configurable limit (default 1 MiB)
/// sits below this.
pub const PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most messages in one enqueue batch.
pub const ENQUEUE_BATCH_MAX: usize = 1_000;
/// Most messages one receive call may return.
pub const RECEIVE_BATCH_MAX: usize = 1_000;
/// Longest long-poll wait.
pub const WAIT_MAX: Duration = Duration::from_secs(60);
/// Shortest lease; shorter leases expire before a consumer can act on them.
pub const LEASE_MIN: Duration = Duration::from_millis(100);
/// Longest lease or lease extension.
pub const LEASE_MAX: Duration = Duration::from_secs(12 * 3600);
/// Longest enqueue delay or nack delay.
pub const DELAY_MAX: Duration = Duration::from_secs(15 * 24 * 3600);
/// Longest time to live.
pub const TTL_MAX: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest idempotency (dedup) window.
pub const DEDUP_WINDOW_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest max-attempts setting.
pub const MAX_ATTEMPTS_MAX: u32 = 1_000;
/// Longest short text field: content type, correlation id, idempotency key, ordering group.
pub const TEXT_FIELD_BYTES_MAX: usize = 256;
/// Longest error text kept on a nacked message; longer text is truncated.
pub const ERROR_TEXT_BYTES_MAX: usize = 4 * 1024;
/// Largest attributes object, serialized.
pub const ATTRIBUTES_BYTES_MAX: usize = 64 * 1024;
/// Largest per-message state document, serialized.
pub const STATE_BYTES_MAX: usize = 256 * 1024;
/// Most items in one listing page.
pub const LIST_PAGE_MAX: usize = 1_000;
