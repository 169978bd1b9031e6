//! Operators' statements on SQLite: list failed rows by page, retry them, count by status.
//! The same names and meanings as `postgres::admin`.

use uuid::Uuid;

use crate::admin::{FailedMessage, FailedPage, FailedTuple, PageRequest, StatusCounts};
use crate::error::OutboxError;
use crate::sqlite::SqliteOutbox;

/// ?1 after seq, ?2 limit. Walks the small `outbox_failed` index.
const LIST_FAILED: &str = "\
SELECT seq, id, destination, key, CAST(payload AS BLOB), headers, content_type, created_at,
       attempts, last_error, last_attempt_at
FROM outbox WHERE status = 'failed' AND seq > ?1 ORDER BY seq LIMIT ?2";

/// ?1 ids as a JSON array of hex strings, ?2 now. Failed rows are few, so matching them by
/// `hex(id)` over the failed index costs nothing and needs no blob parameters.
const RETRY_FAILED: &str = "\
UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2,
    claimed_by = NULL, claimed_until = NULL
WHERE status = 'failed' AND hex(id) IN (SELECT upper(value) FROM json_each(?1))";

/// ?1 now.
const RETRY_ALL_FAILED: &str = "\
UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?1,
    claimed_by = NULL, claimed_until = NULL
WHERE status = 'failed'";

const COUNTS: &str = "SELECT status, count(*) FROM outbox GROUP BY status";

pub(super) async fn list_failed(outbox: &SqliteOutbox, page: PageRequest) -> Result<FailedPage, OutboxError> {
    let rows: Vec<FailedTuple> = sqlx::query_as(LIST_FAILED)
        .bind(page.sql_after())
        .bind(page.sql_limit()?)
        .fetch_all(&outbox.pool)
        .await?;
    let messages = rows.into_iter().map(FailedMessage::from).collect();
    Ok(FailedPage::from_rows(messages, page.limit))
}

pub(super) async fn retry_failed(outbox: &SqliteOutbox, ids: &[Uuid]) -> Result<u64, OutboxError> {
    let hex: Vec<String> = ids.iter().map(|id| id.simple().to_string()).collect();
    let done = sqlx::query(RETRY_FAILED)
        .bind(serde_json::Value::from(hex).to_string())
        .bind(outbox.clock.now().as_millis())
        .execute(&outbox.pool)
        .await?;
    outbox.wake();
    Ok(done.rows_affected())
}

pub(super) async fn retry_all_failed(outbox: &SqliteOutbox) -> Result<u64, OutboxError> {
    let done = sqlx::query(RETRY_ALL_FAILED)
        .bind(outbox.clock.now().as_millis())
        .execute(&outbox.pool)
        .await?;
    outbox.wake();
    Ok(done.rows_affected())
}

pub(super) async fn counts(outbox: &SqliteOutbox) -> Result<StatusCounts, OutboxError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(COUNTS).fetch_all(&outbox.pool).await?;
    Ok(StatusCounts::from_rows(rows))
}
