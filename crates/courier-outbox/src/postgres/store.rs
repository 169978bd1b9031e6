//! The relay's statements on PostgreSQL: claim, renew, settle, delete old published rows.
//! Each is one statement for the whole batch (arrays bound as parameters), so a batch costs a
//! few round trips however many messages it holds.
//!
//! `{t}` stands for the schema-qualified table, filled in by `Statements::new`.

use std::sync::Arc;

use async_trait::async_trait;
use courier_core::Timestamp;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::postgres::{wake, PgOutbox};
use crate::store::{Claim, ClaimedRow, ClaimedTuple, OnPublish, Retry, Store};

/// Claims a batch in one statement ($1 now, $2 limit, $3 relay id, $4 deadline, $5 window).
///
/// Heads are due pending rows that are unkeyed or their key's oldest unpublished row, locked
/// with SKIP LOCKED so concurrent relays take different heads. A key's later rows are never
/// heads while an earlier one is unpublished, whoever holds it, so two relays cannot both hold
/// rows of one key. Keyed heads are looked for among the first $5 due keyed rows (`window`);
/// rows held back behind an earlier row of their key are not walked past that. Only when the
/// window is full of such rows and gave too few heads does `active_keys` walk the key index from
/// key to key (a loose index scan), so a key whose rows lie beyond the window is never starved.
///
/// `followers`: with room left in the batch, the next rows of each claimed keyed head, locked
/// (waiting, not skipping: a skipped row would look like a gap) and re-read at their latest
/// version. `runs` keeps each key's unbroken prefix of ready followers, and the final cut by seq
/// keeps a prefix per key. A claimed row's next_attempt_at becomes its deadline, which takes it
/// out of the due range until the claim lapses.
pub(super) const CLAIM: &str = "\
WITH RECURSIVE
unkeyed AS MATERIALIZED (
    SELECT o.seq, o.key, o.next_attempt_at FROM {t} o
    WHERE o.status = 'pending' AND o.key IS NULL AND o.next_attempt_at <= $1
    ORDER BY o.next_attempt_at, o.seq
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
keyed_window AS MATERIALIZED (
    SELECT o.seq, o.key FROM {t} o
    WHERE o.status = 'pending' AND o.key IS NOT NULL AND o.next_attempt_at <= $1
    ORDER BY o.next_attempt_at, o.seq
    LIMIT $5
),
window_heads AS MATERIALIZED (
    SELECT o.seq, o.key, o.next_attempt_at FROM {t} o
    WHERE o.seq = ANY(ARRAY(SELECT DISTINCT ON (key) seq FROM keyed_window ORDER BY key, seq))
      AND o.status = 'pending' AND o.next_attempt_at <= $1
      AND NOT EXISTS (
            SELECT 1 FROM {t} p
            WHERE p.key = o.key AND p.seq < o.seq AND p.status <> 'published')
    ORDER BY o.next_attempt_at, o.seq
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
active_keys AS (
    (SELECT o.key FROM {t} o
     WHERE o.key IS NOT NULL AND o.status <> 'published'
       AND (SELECT count(*) FROM keyed_window) >= $5
       AND (SELECT count(*) FROM window_heads) + (SELECT count(*) FROM unkeyed) < $2
     ORDER BY o.key LIMIT 1)
    UNION ALL
    SELECT (SELECT o.key FROM {t} o
            WHERE o.key > k.key AND o.status <> 'published'
            ORDER BY o.key LIMIT 1)
    FROM active_keys k WHERE k.key IS NOT NULL
),
key_heads AS MATERIALIZED (
    SELECT o.seq, o.key, o.next_attempt_at FROM {t} o
    WHERE o.seq = ANY(ARRAY(
            SELECT h.seq FROM active_keys k
            CROSS JOIN LATERAL (
                SELECT p.seq FROM {t} p
                WHERE p.key = k.key AND p.status <> 'published'
                ORDER BY p.seq LIMIT 1
            ) h
            WHERE k.key IS NOT NULL))
      AND o.seq <> ALL(ARRAY(SELECT seq FROM window_heads))
      AND o.status = 'pending' AND o.next_attempt_at <= $1
    ORDER BY o.next_attempt_at, o.seq
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
heads AS MATERIALIZED (
    SELECT seq, key FROM (
        SELECT * FROM unkeyed UNION ALL SELECT * FROM window_heads UNION ALL SELECT * FROM key_heads
    ) c
    ORDER BY next_attempt_at, seq
    LIMIT $2
),
room AS MATERIALIZED (
    SELECT $2 - count(*) AS free, count(key) AS keyed FROM heads
),
followers AS MATERIALIZED (
    SELECT f.seq, f.key, f.status, f.next_attempt_at
    FROM heads h
    CROSS JOIN LATERAL (
        SELECT o.seq, o.key, o.status, o.next_attempt_at FROM {t} o
        WHERE o.key = h.key AND o.seq > h.seq AND o.status <> 'published'
        ORDER BY o.seq
        LIMIT (SELECT CASE WHEN keyed = 0 THEN 0 ELSE (free + keyed - 1) / keyed END FROM room)
        FOR UPDATE
    ) f
    WHERE h.key IS NOT NULL
),
runs AS (
    SELECT seq, bool_and(status = 'pending' AND next_attempt_at <= $1)
        OVER (PARTITION BY key ORDER BY seq) AS ready
    FROM followers
),
chosen AS (
    SELECT seq FROM heads
    UNION ALL
    (SELECT seq FROM runs WHERE ready ORDER BY seq LIMIT (SELECT free FROM room))
)
UPDATE {t} o SET claimed_by = $3, claimed_until = $4, next_attempt_at = $4
WHERE o.seq = ANY(ARRAY(SELECT seq FROM chosen))
RETURNING o.seq, o.id, o.destination, o.key, o.payload, o.headers::text, o.content_type,
          o.created_at, o.attempts";

/// $1 seqs, $2 relay id, $3 new deadline.
pub(super) const RENEW: &str = "\
UPDATE {t} SET claimed_until = $3, next_attempt_at = $3
WHERE seq = ANY($1) AND claimed_by = $2 AND status = 'pending'";

/// $1 seqs, $2 relay id, $3 now.
pub(super) const PUBLISH_KEEP: &str = "\
UPDATE {t} SET status = 'published', published_at = $3, last_attempt_at = $3,
    attempts = attempts + 1, claimed_by = NULL, claimed_until = NULL
WHERE seq = ANY($1) AND claimed_by = $2 AND status = 'pending'";

/// $1 seqs, $2 relay id.
pub(super) const PUBLISH_DELETE: &str = "\
DELETE FROM {t} WHERE seq = ANY($1) AND claimed_by = $2 AND status = 'pending'";

/// One row per retry from parallel arrays: $1 seqs, $2 relay id, $3 now, $4 statuses,
/// $5 attempted (0 or 1), $6 next attempt times, $7 errors (NULL keeps the previous one).
/// The `seq = ANY($1)` term gives the planner a primary-key probe whatever it guesses about unnest.
pub(super) const RETRY: &str = "\
UPDATE {t} o SET status = r.status, attempts = o.attempts + r.attempted,
    next_attempt_at = r.next_at, last_error = COALESCE(r.error, o.last_error),
    last_attempt_at = CASE WHEN r.attempted > 0 THEN $3 ELSE o.last_attempt_at END,
    claimed_by = NULL, claimed_until = NULL
FROM unnest($1::bigint[], $4::text[], $5::int[], $6::bigint[], $7::text[])
    AS r(seq, status, attempted, next_at, error)
WHERE o.seq = r.seq AND o.seq = ANY($1) AND o.claimed_by = $2 AND o.status = 'pending'";

/// $1 cutoff, $2 limit. Oldest first, a bounded chunk per statement so locks stay short.
pub(super) const DELETE_PUBLISHED: &str = "\
DELETE FROM {t} WHERE seq = ANY(ARRAY(
    SELECT seq FROM {t} WHERE status = 'published' AND published_at < $1
    ORDER BY published_at LIMIT $2))";

#[async_trait]
impl Store for PgOutbox {
    async fn claim(&self, claim: Claim<'_>) -> Result<Vec<ClaimedRow>, sqlx::Error> {
        let rows: Vec<ClaimedTuple> = sqlx::query_as(&self.sql.claim)
            .bind(claim.now.as_millis())
            .bind(i64::try_from(claim.limit).unwrap_or(i64::MAX))
            .bind(claim.relay_id)
            .bind(claim.deadline.as_millis())
            .bind(i64::try_from(claim.window()).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let mut claimed: Vec<ClaimedRow> = rows.into_iter().map(ClaimedRow::from).collect();
        claimed.sort_unstable_by_key(|row| row.seq);
        Ok(claimed)
    }

    async fn renew(&self, relay_id: &str, seqs: &[i64], deadline: Timestamp) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(&self.sql.renew)
            .bind(seqs)
            .bind(relay_id)
            .bind(deadline.as_millis())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn settle_published(
        &self,
        relay_id: &str,
        seqs: &[i64],
        now: Timestamp,
        on_publish: OnPublish,
    ) -> Result<(), sqlx::Error> {
        let query = match on_publish {
            OnPublish::Delete => sqlx::query(&self.sql.publish_delete).bind(seqs).bind(relay_id),
            OnPublish::Keep => sqlx::query(&self.sql.publish_keep)
                .bind(seqs)
                .bind(relay_id)
                .bind(now.as_millis()),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    async fn settle_retries(&self, relay_id: &str, retries: &[Retry], now: Timestamp) -> Result<(), sqlx::Error> {
        let seqs: Vec<i64> = retries.iter().map(|r| r.seq).collect();
        let statuses: Vec<&str> = retries.iter().map(|r| r.status).collect();
        let attempted: Vec<i32> = retries.iter().map(|r| i32::from(r.attempted)).collect();
        let next: Vec<i64> = retries.iter().map(|r| r.next_attempt_at).collect();
        let errors: Vec<Option<&str>> = retries.iter().map(|r| r.error.as_deref()).collect();
        sqlx::query(&self.sql.retry)
            .bind(&seqs)
            .bind(relay_id)
            .bind(now.as_millis())
            .bind(&statuses)
            .bind(&attempted)
            .bind(&next)
            .bind(&errors)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_published_before(&self, cutoff: Timestamp, limit: usize) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(&self.sql.delete_published)
            .bind(cutoff.as_millis())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    fn listen(&self, wake: Arc<Notify>) -> Option<JoinHandle<()>> {
        Some(wake::spawn_listener(
            self.pool.clone(),
            wake::channel(self.schema()),
            wake,
        ))
    }
}
