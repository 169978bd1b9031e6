//! Queue rows: lookup through the writer's cache, creation on first use, policy, listing.

use courier_core::{Namespace, QueueError, QueuePolicy, QueueRef, QueueSummary, StorageError};
use rusqlite::OptionalExtension;

use crate::error::{storage, SqlResult};
use crate::writer::{Ctx, QueueMeta};

fn decode_policy(json: &str) -> SqlResult<QueuePolicy> {
    serde_json::from_str(json).map_err(|e| StorageError::Internal(format!("stored queue policy is unreadable: {e}")))
}

fn encode_policy(policy: &QueuePolicy) -> SqlResult<String> {
    serde_json::to_string(policy).map_err(|e| StorageError::Internal(format!("cannot encode queue policy: {e}")))
}

/// The queue's id and policy, if it exists.
pub(crate) fn find(ctx: &mut Ctx<'_>, queue: &QueueRef) -> SqlResult<Option<QueueMeta>> {
    if let Some(meta) = ctx.queues.get(queue) {
        return Ok(Some(meta.clone()));
    }
    let row: Option<(i64, String)> = ctx
        .conn
        .prepare_cached("SELECT id, policy FROM queues WHERE namespace = ?1 AND name = ?2")
        .and_then(|mut s| {
            s.query_row([queue.namespace.as_str(), queue.name.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(storage)?;
    let Some((id, policy)) = row else { return Ok(None) };
    let meta = QueueMeta {
        id,
        policy: decode_policy(&policy)?,
    };
    ctx.queues.insert(queue.clone(), meta.clone());
    Ok(Some(meta))
}

/// The queue's id and policy, or `QueueNotFound`.
pub(crate) fn require(ctx: &mut Ctx<'_>, queue: &QueueRef) -> Result<QueueMeta, QueueError> {
    find(ctx, queue)?.ok_or_else(|| QueueError::QueueNotFound(queue.clone()))
}

/// The queue's id and policy, creating it with the default policy if needed.
pub(crate) fn find_or_create(ctx: &mut Ctx<'_>, queue: &QueueRef) -> SqlResult<QueueMeta> {
    if let Some(meta) = find(ctx, queue)? {
        return Ok(meta);
    }
    let policy = QueuePolicy::default();
    ctx.conn
        .prepare_cached("INSERT INTO queues (namespace, name, policy, created_at) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut s| {
            s.execute(rusqlite::params![
                queue.namespace.as_str(),
                queue.name.as_str(),
                encode_policy(&policy).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                ctx.now.as_millis()
            ])
        })
        .map_err(storage)?;
    let meta = QueueMeta {
        id: ctx.conn.last_insert_rowid(),
        policy,
    };
    ctx.queues.insert(queue.clone(), meta.clone());
    Ok(meta)
}

/// Sets the policy, creating the queue if needed.
pub(crate) fn set_policy(ctx: &mut Ctx<'_>, queue: &QueueRef, policy: QueuePolicy) -> Result<(), QueueError> {
    let meta = find_or_create(ctx, queue)?;
    let json = encode_policy(&policy)?;
    ctx.conn
        .prepare_cached("UPDATE queues SET policy = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(rusqlite::params![meta.id, json]))
        .map_err(storage)?;
    ctx.queues.insert(queue.clone(), QueueMeta { id: meta.id, policy });
    Ok(())
}

/// All queues (of one namespace, if given) in name order.
pub(crate) fn list(ctx: &mut Ctx<'_>, namespace: Option<&Namespace>) -> SqlResult<Vec<QueueSummary>> {
    let mut stmt = ctx
        .conn
        .prepare_cached(
            "SELECT namespace, name, policy FROM queues WHERE ?1 IS NULL OR namespace = ?1 ORDER BY namespace, name",
        )
        .map_err(storage)?;
    let rows = stmt
        .query_map([namespace.map(Namespace::as_str)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })
        .map_err(storage)?;
    let mut out = Vec::new();
    for row in rows {
        let (ns, name, policy) = row.map_err(storage)?;
        let queue = QueueRef::parse(&ns, &name)
            .map_err(|e| StorageError::Internal(format!("stored queue name is invalid: {e}")))?;
        out.push(QueueSummary {
            queue,
            policy: decode_policy(&policy)?,
        });
    }
    Ok(out)
}

/// Deletes the queue with its messages, dead letters and idempotency records.
pub(crate) fn delete(ctx: &mut Ctx<'_>, queue: &QueueRef) -> Result<(), QueueError> {
    let meta = require(ctx, queue)?;
    for sql in [
        "DELETE FROM messages WHERE queue_id = ?1",
        "DELETE FROM idempotency WHERE queue_id = ?1",
        "DELETE FROM queues WHERE id = ?1",
    ] {
        ctx.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([meta.id]))
            .map_err(storage)?;
    }
    ctx.queues.remove(queue);
    ctx.wake(queue);
    Ok(())
}
