//! What operators see and do: failed rows listed page by page, retried by id or all at once,
//! and counts by status. Both databases answer with these types; the CLI and HTTP layers
//! format them.

use std::collections::BTreeMap;

use bytes::Bytes;
use courier_core::Timestamp;
use uuid::Uuid;

use crate::error::OutboxError;
use crate::message::parse_headers;

/// Most rows in one page of [`FailedPage`].
pub const PAGE_SIZE_MAX: usize = 1_000;

/// Which page of failed rows to read: those after `after` (a previous page's
/// [`FailedPage::next_after`]), at most `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Start after this `seq`; `None` for the first page.
    pub after: Option<i64>,
    /// Most rows to return, 1 to [`PAGE_SIZE_MAX`].
    pub limit: usize,
}

impl PageRequest {
    /// The first page of at most `limit` rows.
    pub fn first(limit: usize) -> Self {
        Self { after: None, limit }
    }

    /// The page following the one that ended at `after`.
    pub fn after(after: i64, limit: usize) -> Self {
        Self {
            after: Some(after),
            limit,
        }
    }

    /// The limit as a SQL parameter, refused when out of range.
    pub(crate) fn sql_limit(&self) -> Result<i64, OutboxError> {
        if self.limit == 0 || self.limit > PAGE_SIZE_MAX {
            return Err(OutboxError::Invalid(format!(
                "page limit must be 1 to {PAGE_SIZE_MAX}, got {}",
                self.limit
            )));
        }
        Ok(i64::try_from(self.limit).unwrap_or(i64::MAX))
    }

    /// The cursor as a SQL parameter: `seq` starts at 1.
    pub(crate) fn sql_after(&self) -> i64 {
        self.after.unwrap_or(0)
    }
}

/// One row that reached max attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedMessage {
    /// The row's id (what publishers passed on as the message id).
    pub id: Uuid,
    /// The write order; the page cursor.
    pub seq: i64,
    /// Where it was going.
    pub destination: String,
    /// Its ordering key; a failed row holds back the later rows of its key until retried.
    pub key: Option<String>,
    /// The body.
    pub payload: Bytes,
    /// Application headers.
    pub headers: BTreeMap<String, String>,
    /// MIME type of the payload.
    pub content_type: Option<String>,
    /// When it was written.
    pub created_at: Timestamp,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<Timestamp>,
}

/// The listing's columns, as both databases decode them.
pub(crate) type FailedTuple = (
    i64,
    Uuid,
    String,
    Option<String>,
    Vec<u8>,
    String,
    Option<String>,
    i64,
    i32,
    Option<String>,
    Option<i64>,
);

impl From<FailedTuple> for FailedMessage {
    fn from(t: FailedTuple) -> Self {
        let (
            seq,
            id,
            destination,
            key,
            payload,
            headers,
            content_type,
            created_at,
            attempts,
            last_error,
            last_attempt_at,
        ) = t;
        Self {
            id,
            seq,
            destination,
            key,
            payload: payload.into(),
            // The column's CHECK keeps it an object; a listing shows what it can rather than fail.
            headers: parse_headers(&headers).unwrap_or_default(),
            content_type,
            created_at: Timestamp(created_at),
            attempts: u32::try_from(attempts).unwrap_or(0),
            last_error,
            last_attempt_at: last_attempt_at.map(Timestamp),
        }
    }
}

/// One page of failed rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailedPage {
    /// The rows, in write order.
    pub messages: Vec<FailedMessage>,
    /// The cursor for the next page; `None` when this page was the last.
    pub next_after: Option<i64>,
}

impl FailedPage {
    /// A page from the rows read with `limit`: full pages have a successor.
    pub(crate) fn from_rows(messages: Vec<FailedMessage>, limit: usize) -> Self {
        let next_after = if messages.len() == limit {
            messages.last().map(|m| m.seq)
        } else {
            None
        };
        Self { messages, next_after }
    }
}

/// Rows by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Waiting to be published, claimed or not.
    pub pending: u64,
    /// Published and kept by retention.
    pub published: u64,
    /// Reached max attempts.
    pub failed: u64,
}

impl StatusCounts {
    /// The counts from `(status, count)` rows as the count statement returns them.
    pub(crate) fn from_rows(rows: Vec<(String, i64)>) -> Self {
        let mut counts = Self::default();
        for (status, count) in rows {
            let count = u64::try_from(count).unwrap_or(0);
            match status.as_str() {
                "pending" => counts.pending += count,
                "published" => counts.published += count,
                _ => counts.failed += count,
            }
        }
        counts
    }
}
