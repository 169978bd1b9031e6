//! The PostgreSQL writer: one `INSERT … SELECT FROM unnest(…)` per write, in the caller's
//! transaction, whatever the number of messages.
//!
//! Ids are UUIDv7 (time-ordered, so the id index grows at its right edge) made here, so the
//! caller learns them without a `RETURNING` round trip through every row.

use courier_core::Timestamp;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::WriteError;
use crate::message::{headers_json, validate_batch, OutboxMessage};
use crate::postgres::WakeMode;

/// The insert statement for `table` (schema-qualified). In [`WakeMode::AfterCommit`] it first
/// sets `courier.outbox_wake` for the rest of the transaction, which silences the table's
/// notify trigger; the materialized CTE is joined so it runs before any row is inserted.
pub(super) fn insert_sql(table: &str, mode: WakeMode) -> String {
    let (with, from) = match mode {
        WakeMode::AfterCommit => (
            "WITH quiet AS MATERIALIZED (SELECT set_config('courier.outbox_wake', 'after_commit', true)) ",
            "quiet, ",
        ),
        WakeMode::InTransaction => ("", ""),
    };
    format!(
        "{with}INSERT INTO {table} \
             (id, destination, key, payload, headers, content_type, created_at, next_attempt_at) \
         SELECT m.id, m.destination, m.key, m.payload, m.headers::jsonb, m.content_type, $7, $7 \
         FROM {from}unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[]) \
             WITH ORDINALITY AS m(id, destination, key, payload, headers, content_type, ord) \
         ORDER BY m.ord"
    )
}

/// Validates `messages` and inserts them with `sql` (from [`insert_sql`]), created and due at
/// `now`. Nothing is written when any message is invalid.
pub(super) async fn write(
    conn: &mut PgConnection,
    sql: &str,
    messages: &[OutboxMessage],
    now: Timestamp,
) -> Result<Vec<Uuid>, WriteError> {
    validate_batch(messages)?;
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = messages.iter().map(|_| Uuid::now_v7()).collect();
    let destinations: Vec<&str> = messages.iter().map(|m| m.destination.as_str()).collect();
    let keys: Vec<Option<&str>> = messages.iter().map(|m| m.key.as_deref()).collect();
    let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_ref()).collect();
    let headers: Vec<String> = messages.iter().map(|m| headers_json(&m.headers)).collect();
    let content_types: Vec<Option<&str>> = messages.iter().map(|m| m.content_type.as_deref()).collect();
    sqlx::query(sql)
        .bind(&ids)
        .bind(&destinations)
        .bind(&keys)
        .bind(&payloads)
        .bind(&headers)
        .bind(&content_types)
        .bind(now.as_millis())
        .execute(conn)
        .await?;
    Ok(ids)
}
