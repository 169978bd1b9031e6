//! The relay's view of an outbox table: claim a batch, renew and settle claims, delete old
//! published rows. `postgres::store` and `sqlite::store` implement it with the same function
//! names; the relay sees only this trait.
//!
//! Rows are named by `seq` (the primary key) here; publishers and operators see the `id`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use courier_core::Timestamp;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Row statuses as stored in `outbox.status`.
pub(crate) mod status {
    /// Waiting to be published (claimed or not).
    pub(crate) const PENDING: &str = "pending";
    /// Max attempts reached; waits for an operator's retry.
    pub(crate) const FAILED: &str = "failed";
}

/// One claimed row, as the claim statement returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimedRow {
    pub(crate) seq: i64,
    pub(crate) id: Uuid,
    pub(crate) destination: String,
    pub(crate) key: Option<String>,
    pub(crate) payload: Vec<u8>,
    /// The `headers` column as JSON text.
    pub(crate) headers: String,
    pub(crate) content_type: Option<String>,
    pub(crate) created_at: i64,
    /// Attempts made before this claim.
    pub(crate) attempts: i32,
}

/// The claim statement's columns, as both databases decode them.
pub(crate) type ClaimedTuple = (
    i64,
    Uuid,
    String,
    Option<String>,
    Vec<u8>,
    String,
    Option<String>,
    i64,
    i32,
);

impl From<ClaimedTuple> for ClaimedRow {
    fn from(t: ClaimedTuple) -> Self {
        let (seq, id, destination, key, payload, headers, content_type, created_at, attempts) = t;
        Self {
            seq,
            id,
            destination,
            key,
            payload,
            headers,
            content_type,
            created_at,
            attempts,
        }
    }
}

/// What to claim: up to `limit` rows due at `now`, held until `deadline`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim<'a> {
    pub(crate) relay_id: &'a str,
    pub(crate) now: Timestamp,
    pub(crate) deadline: Timestamp,
    pub(crate) limit: usize,
}

impl Claim<'_> {
    /// How many due keyed rows a claim looks at for key heads before it walks the keys
    /// instead: enough for a batch of heads plus their followers in the common case.
    pub(crate) fn window(&self) -> usize {
        self.limit.saturating_mul(2)
    }
}

/// A row that goes back to waiting (or to `failed`): after a failed attempt, or unattempted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retry {
    pub(crate) seq: i64,
    /// [`status::PENDING`] or [`status::FAILED`].
    pub(crate) status: &'static str,
    /// Whether this claim made an attempt (counted in `attempts`, stamps `last_attempt_at`).
    pub(crate) attempted: bool,
    pub(crate) next_attempt_at: i64,
    /// The attempt's error; `None` keeps the row's previous one.
    pub(crate) error: Option<String>,
}

/// The outcome of one claimed batch, applied by one `settle` call. Only rows still claimed by
/// the settling relay and still pending change: a relay whose claim lapsed and was taken over
/// settles nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Settlement {
    pub(crate) published: Vec<i64>,
    pub(crate) retries: Vec<Retry>,
}

impl Settlement {
    /// Releases `seqs` without counting an attempt, due at `now` again.
    pub(crate) fn release(seqs: impl IntoIterator<Item = i64>, now: Timestamp) -> Self {
        let retries = seqs
            .into_iter()
            .map(|seq| Retry {
                seq,
                status: status::PENDING,
                attempted: false,
                next_attempt_at: now.as_millis(),
                error: None,
            })
            .collect();
        Self {
            published: Vec::new(),
            retries,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.published.is_empty() && self.retries.is_empty()
    }
}

/// What happens to published rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnPublish {
    /// Delete them in the settling statement.
    Delete,
    /// Mark them `published` with `published_at`.
    Keep,
}

/// An outbox table the relay can work on.
#[async_trait]
pub(crate) trait Store: fmt::Debug + Send + Sync + 'static {
    /// Claims up to `claim.limit` due rows: key heads (the key's oldest unpublished row) and,
    /// with room left, each claimed head's next ready rows. Returned in `seq` order.
    async fn claim(&self, claim: Claim<'_>) -> Result<Vec<ClaimedRow>, sqlx::Error>;

    /// Moves the claim deadline of `seqs` still claimed by `relay_id` to `deadline`; returns
    /// how many were renewed.
    async fn renew(&self, relay_id: &str, seqs: &[i64], deadline: Timestamp) -> Result<u64, sqlx::Error>;

    /// Records `seqs` as published (deleted or marked), if still claimed by `relay_id`.
    async fn settle_published(
        &self,
        relay_id: &str,
        seqs: &[i64],
        now: Timestamp,
        on_publish: OnPublish,
    ) -> Result<(), sqlx::Error>;

    /// Applies `retries`, each to its row if still claimed by `relay_id` and pending.
    async fn settle_retries(&self, relay_id: &str, retries: &[Retry], now: Timestamp) -> Result<(), sqlx::Error>;

    /// Applies `settlement` to rows still claimed by `relay_id` and pending: at most one
    /// statement for the published rows and one for the rest.
    async fn settle(
        &self,
        relay_id: &str,
        settlement: &Settlement,
        now: Timestamp,
        on_publish: OnPublish,
    ) -> Result<(), sqlx::Error> {
        if !settlement.published.is_empty() {
            self.settle_published(relay_id, &settlement.published, now, on_publish)
                .await?;
        }
        if !settlement.retries.is_empty() {
            self.settle_retries(relay_id, &settlement.retries, now).await?;
        }
        Ok(())
    }

    /// Deletes up to `limit` published rows published before `cutoff`; returns how many.
    async fn delete_published_before(&self, cutoff: Timestamp, limit: usize) -> Result<u64, sqlx::Error>;

    /// Starts a task that wakes `wake` when another process commits rows, if the database can
    /// tell (PostgreSQL LISTEN); `None` otherwise.
    fn listen(&self, wake: Arc<Notify>) -> Option<JoinHandle<()>>;
}
