//! Operators' statements on PostgreSQL: list failed rows by page, retry them, count by status.
//! `{t}` stands for the schema-qualified table.

use uuid::Uuid;

use crate::admin::{FailedMessage, FailedPage, FailedTuple, PageRequest, StatusCounts};
use crate::error::OutboxError;
use crate::postgres::PgOutbox;

/// $1 after seq, $2 limit. Walks the small `outbox_failed` index.
pub(super) const LIST_FAILED: &str = "\
SELECT seq, id, destination, key, payload, headers::text, content_type, created_at, attempts,
       last_error, last_attempt_at
FROM {t} WHERE status = 'failed' AND seq > $1 ORDER BY seq LIMIT $2";

/// $1 ids, $2 now.
pub(super) const RETRY_FAILED: &str = "\
UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = $2,
    claimed_by = NULL, claimed_until = NULL
WHERE id = ANY($1) AND status = 'failed'";

/// $1 now.
pub(super) const RETRY_ALL_FAILED: &str = "\
UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = $1,
    claimed_by = NULL, claimed_until = NULL
WHERE status = 'failed'";

pub(super) const COUNTS: &str = "SELECT status, count(*) FROM {t} GROUP BY status";

pub(super) async fn list_failed(outbox: &PgOutbox, page: PageRequest) -> Result<FailedPage, OutboxError> {
    let rows: Vec<FailedTuple> = sqlx::query_as(&outbox.sql.list_failed)
        .bind(page.sql_after())
        .bind(page.sql_limit()?)
        .fetch_all(&outbox.pool)
        .await?;
    let messages = rows.into_iter().map(FailedMessage::from).collect();
    Ok(FailedPage::from_rows(messages, page.limit))
}

pub(super) async fn retry_failed(outbox: &PgOutbox, ids: &[Uuid]) -> Result<u64, OutboxError> {
    let done = sqlx::query(&outbox.sql.retry_failed)
        .bind(ids)
        .bind(outbox.clock.now().as_millis())
        .execute(&outbox.pool)
        .await?;
    outbox.wake();
    Ok(done.rows_affected())
}

pub(super) async fn retry_all_failed(outbox: &PgOutbox) -> Result<u64, OutboxError> {
    let done = sqlx::query(&outbox.sql.retry_all_failed)
        .bind(outbox.clock.now().as_millis())
        .execute(&outbox.pool)
        .await?;
    outbox.wake();
    Ok(done.rows_affected())
}

pub(super) async fn counts(outbox: &PgOutbox) -> Result<StatusCounts, OutboxError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(&outbox.sql.counts).fetch_all(&outbox.pool).await?;
    Ok(StatusCounts::from_rows(rows))
}
