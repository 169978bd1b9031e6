//! The relay's statements on SQLite: claim, renew, settle, delete old published rows, with the
//! same names and meanings as `postgres::store`. Lists of rows travel as one JSON array
//! parameter (`json_each`), so each step is one statement whatever the batch size.

use std::sync::Arc;

use async_trait::async_trait;
use courier_core::Timestamp;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::sqlite::SqliteOutbox;
use crate::store::{Claim, ClaimedRow, ClaimedTuple, OnPublish, Retry, Store};

/// Claims a batch in one statement (?1 now, ?2 limit, ?3 relay id, ?4 deadline, ?5 window).
/// The same shape as PostgreSQL's claim (see `postgres::store::CLAIM`): unkeyed due rows, key
/// heads among the first ?5 due keyed rows or, when those are all held back, from a walk over
/// the keys, then each claimed head's unbroken run of ready followers, cut by seq. SQLite's
/// single writer makes the statement atomic, so no locking clauses are needed.
const CLAIM: &str = "\
WITH RECURSIVE
unkeyed AS (
    SELECT seq, key, next_attempt_at FROM outbox
    WHERE status = 'pending' AND key IS NULL AND next_attempt_at <= ?1
    ORDER BY next_attempt_at, seq
    LIMIT ?2
),
keyed_window AS (
    SELECT seq, key FROM outbox
    WHERE status = 'pending' AND key IS NOT NULL AND next_attempt_at <= ?1
    ORDER BY next_attempt_at, seq
    LIMIT ?5
),
window_heads AS (
    SELECT o.seq, o.key, o.next_attempt_at FROM outbox o
    WHERE o.seq IN (SELECT min(seq) FROM keyed_window GROUP BY key)
      AND NOT EXISTS (
            SELECT 1 FROM outbox p
            WHERE p.key = o.key AND p.seq < o.seq AND p.status <> 'published')
    ORDER BY o.next_attempt_at, o.seq
    LIMIT ?2
),
active_keys(key) AS (
    SELECT (SELECT key FROM outbox WHERE key IS NOT NULL AND status <> 'published' ORDER BY key LIMIT 1)
    WHERE (SELECT count(*) FROM keyed_window) >= ?5
      AND (SELECT count(*) FROM window_heads) + (SELECT count(*) FROM unkeyed) < ?2
    UNION ALL
    SELECT (SELECT o.key FROM outbox o WHERE o.key > a.key AND o.status <> 'published' ORDER BY o.key LIMIT 1)
    FROM active_keys a WHERE a.key IS NOT NULL
),
key_heads AS (
    SELECT o.seq, o.key, o.next_attempt_at FROM outbox o
    WHERE o.seq IN (
            SELECT (SELECT p.seq FROM outbox p WHERE p.key = a.key AND p.status <> 'published'
                    ORDER BY p.seq LIMIT 1)
            FROM active_keys a WHERE a.key IS NOT NULL)
      AND o.seq NOT IN (SELECT seq FROM window_heads)
      AND o.status = 'pending' AND o.next_attempt_at <= ?1
),
heads AS (
    SELECT seq, key FROM (
        SELECT * FROM unkeyed UNION ALL SELECT * FROM window_heads UNION ALL SELECT * FROM key_heads
    )
    ORDER BY next_attempt_at, seq
    LIMIT ?2
),
room AS (
    SELECT ?2 - count(*) AS free, count(key) AS keyed FROM heads
),
followers AS (
    SELECT o.seq,
           min(o.status = 'pending' AND o.next_attempt_at <= ?1)
               OVER (PARTITION BY o.key ORDER BY o.seq) AS ready,
           row_number() OVER (PARTITION BY o.key ORDER BY o.seq) AS position
    FROM heads h JOIN outbox o ON o.key = h.key AND o.seq > h.seq AND o.status <> 'published'
),
chosen AS (
    SELECT seq FROM heads
    UNION ALL
    SELECT seq FROM (
        SELECT f.seq FROM followers f, room r
        WHERE f.ready AND f.position <= (r.free + r.keyed - 1) / max(r.keyed, 1)
        ORDER BY f.seq LIMIT (SELECT free FROM room))
)
UPDATE outbox SET claimed_by = ?3, claimed_until = ?4, next_attempt_at = ?4
WHERE seq IN (SELECT seq FROM chosen)
RETURNING seq, id, destination, key, CAST(payload AS BLOB), headers, content_type, created_at, attempts";

/// ?1 seqs (JSON), ?2 relay id, ?3 new deadline.
const RENEW: &str = "\
UPDATE outbox SET claimed_until = ?3, next_attempt_at = ?3
WHERE seq IN (SELECT value FROM json_each(?1)) AND claimed_by = ?2 AND status = 'pending'";

/// ?1 seqs (JSON), ?2 relay id, ?3 now.
const PUBLISH_KEEP: &str = "\
UPDATE outbox SET status = 'published', published_at = ?3, last_attempt_at = ?3,
    attempts = attempts + 1, claimed_by = NULL, claimed_until = NULL
WHERE seq IN (SELECT value FROM json_each(?1)) AND claimed_by = ?2 AND status = 'pending'";

/// ?1 seqs (JSON), ?2 relay id.
const PUBLISH_DELETE: &str = "\
DELETE FROM outbox
WHERE seq IN (SELECT value FROM json_each(?1)) AND claimed_by = ?2 AND status = 'pending'";

/// ?1 retries as a JSON array of `[seq, status, attempted, next_at, error]`, ?2 relay id, ?3 now.
const RETRY: &str = "\
UPDATE outbox SET status = r.status, attempts = outbox.attempts + r.attempted,
    next_attempt_at = r.next_at, last_error = COALESCE(r.error, outbox.last_error),
    last_attempt_at = CASE WHEN r.attempted > 0 THEN ?3 ELSE outbox.last_attempt_at END,
    claimed_by = NULL, claimed_until = NULL
FROM (SELECT json_extract(value, '$[0]') AS seq, json_extract(value, '$[1]') AS status,
             json_extract(value, '$[2]') AS attempted, json_extract(value, '$[3]') AS next_at,
             json_extract(value, '$[4]') AS error
      FROM json_each(?1)) AS r
WHERE outbox.seq = r.seq AND outbox.claimed_by = ?2 AND outbox.status = 'pending'";

/// ?1 cutoff, ?2 limit. Oldest first, a bounded chunk per statement so the write lock is short.
const DELETE_PUBLISHED: &str = "\
DELETE FROM outbox WHERE seq IN (
    SELECT seq FROM outbox WHERE status = 'published' AND published_at < ?1
    ORDER BY published_at LIMIT ?2)";

#[async_trait]
impl Store for SqliteOutbox {
    async fn claim(&self, claim: Claim<'_>) -> Result<Vec<ClaimedRow>, sqlx::Error> {
        let rows: Vec<ClaimedTuple> = sqlx::query_as(CLAIM)
            .bind(claim.now.as_millis())
            .bind(i64::try_from(claim.limit).unwrap_or(i64::MAX))
            .bind(claim.relay_id)
            .bind(claim.deadline.as_millis())
            .bind(i64::try_from(claim.window()).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let mut claimed: Vec<ClaimedRow> = rows.into_iter().map(ClaimedRow::from).collect();
        // RETURNING gives rows in no particular order.
        claimed.sort_unstable_by_key(|row| row.seq);
        Ok(claimed)
    }

    async fn renew(&self, relay_id: &str, seqs: &[i64], deadline: Timestamp) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(RENEW)
            .bind(json_array(seqs))
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
            OnPublish::Delete => sqlx::query(PUBLISH_DELETE).bind(json_array(seqs)).bind(relay_id),
            OnPublish::Keep => sqlx::query(PUBLISH_KEEP)
                .bind(json_array(seqs))
                .bind(relay_id)
                .bind(now.as_millis()),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    async fn settle_retries(&self, relay_id: &str, retries: &[Retry], now: Timestamp) -> Result<(), sqlx::Error> {
        sqlx::query(RETRY)
            .bind(retries_json(retries))
            .bind(relay_id)
            .bind(now.as_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_published_before(&self, cutoff: Timestamp, limit: usize) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(DELETE_PUBLISHED)
            .bind(cutoff.as_millis())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    fn listen(&self, _wake: Arc<Notify>) -> Option<JoinHandle<()>> {
        // SQLite cannot tell other processes' commits; the poll finds them.
        None
    }
}

fn json_array(seqs: &[i64]) -> String {
    serde_json::Value::from(seqs.to_vec()).to_string()
}

fn retries_json(retries: &[Retry]) -> String {
    let rows: Vec<serde_json::Value> = retries
        .iter()
        .map(|r| serde_json::json!([r.seq, r.status, i32::from(r.attempted), r.next_attempt_at, r.error]))
        .collect();
    serde_json::Value::Array(rows).to_string()
}
