//! The SQLite writer: one prepared `INSERT` per message in the caller's transaction. SQLite
//! runs in-process, so a statement per row costs microseconds, not a round trip.
//!
//! Ids are UUIDv7 (time-ordered) made here, stored as their 16 bytes.

use courier_core::Timestamp;
use sqlx::SqliteConnection;
use uuid::Uuid;

use crate::error::WriteError;
use crate::message::{headers_json, validate_batch, OutboxMessage};

const INSERT: &str = "\
INSERT INTO outbox (id, destination, key, payload, headers, content_type, created_at, next_attempt_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)";

/// Validates `messages` and inserts them, created and due at `now`. Nothing is written when
/// any message is invalid; a database error midway leaves the caller's transaction to roll back.
pub(super) async fn write(
    conn: &mut SqliteConnection,
    messages: &[OutboxMessage],
    now: Timestamp,
) -> Result<Vec<Uuid>, WriteError> {
    validate_batch(messages)?;
    let mut ids = Vec::with_capacity(messages.len());
    for message in messages {
        let id = Uuid::now_v7();
        sqlx::query(INSERT)
            .bind(id)
            .bind(&message.destination)
            .bind(message.key.as_deref())
            .bind(message.payload.as_ref())
            .bind(headers_json(&message.headers))
            .bind(message.content_type.as_deref())
            .bind(now.as_millis())
            .execute(&mut *conn)
            .await?;
        ids.push(id);
    }
    Ok(ids)
}
