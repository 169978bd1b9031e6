//! Queue rows: lookup, creation on first use, policy, listing, deletion.
//!
//! Only receive and ack read the row through the node's cache (see `cache.rs`); everything
//! else reads it in its own transaction, since another node may change a policy or delete a
//! queue at any time.

use courier_core::{Namespace, QueueError, QueuePolicy, QueueRef, QueueSummary};
use sqlx::Row;

use crate::error::{corrupt, Db};
use crate::tx::{Core, Ctx};

/// A queue's row id and current policy.
#[derive(Debug, Clone)]
pub(crate) struct QueueMeta {
    pub(crate) id: i64,
    pub(crate) policy: QueuePolicy,
}

fn decode_policy(json: &str) -> Db<QueuePolicy> {
    serde_json::from_str(json).map_err(|e| corrupt("queue policy", e))
}

fn encode_policy(policy: &QueuePolicy) -> Db<String> {
    serde_json::to_string(policy).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// The queue's id and policy, if it exists.
pub(crate) async fn find(ctx: &mut Ctx<'_>, queue: &QueueRef) -> Db<Option<QueueMeta>> {
    find_with(ctx.conn(), queue).await
}

async fn find_with<'c, E>(executor: E, queue: &QueueRef) -> Db<Option<QueueMeta>>
where
    E: sqlx::PgExecutor<'c>,
{
    let row = sqlx::query("SELECT id, policy::text FROM queues WHERE namespace = $1 AND name = $2")
        .bind(queue.namespace.as_str())
        .bind(queue.name.as_str())
        .fetch_optional(executor)
        .await?;
    row.map(|r| meta(&r)).transpose()
}

/// The queue's id and policy from this node's cache, or read (outside any transaction) and
/// remembered. Queues that do not exist are not remembered: the next enqueue creates them.
///
/// The read is bounded by the operation timeout like the statements around it: it runs on a
/// receive combiner's task, which every later receive of the queue on this node waits for, and
/// its connection may be one that went silent.
pub(crate) async fn find_cached(core: &Core, queue: &QueueRef) -> Db<Option<QueueMeta>> {
    if let Some(meta) = core.cache.meta(queue) {
        return Ok(Some(meta));
    }
    let generation = core.cache.generation();
    let found = core.on_warm(async |conn| find_with(conn, queue).await).await?;
    if let Some(meta) = &found {
        core.cache.remember_meta(queue, meta, generation);
    }
    Ok(found)
}

fn meta(row: &sqlx::postgres::PgRow) -> Db<QueueMeta> {
    Ok(QueueMeta {
        id: row.try_get(0)?,
        policy: decode_policy(row.try_get(1)?)?,
    })
}

/// The queue's id and policy, or `QueueNotFound`.
pub(crate) async fn require(ctx: &mut Ctx<'_>, queue: &QueueRef) -> Db<Result<QueueMeta, QueueError>> {
    Ok(find(ctx, queue)
        .await?
        .ok_or_else(|| QueueError::QueueNotFound(queue.clone())))
}

/// The queue's id and policy, creating it with the default policy if needed, for an operation
/// that adds messages.
///
/// The queue row is held `FOR KEY SHARE` until commit, so a concurrent `delete_queue` (which
/// deletes the row first) waits for this transaction and then deletes its messages too,
/// instead of leaving them behind under a queue id that no longer exists.
pub(crate) async fn find_or_create(ctx: &mut Ctx<'_>, queue: &QueueRef) -> Db<QueueMeta> {
    loop {
        let row = sqlx::query("SELECT id, policy::text FROM queues WHERE namespace = $1 AND name = $2 FOR KEY SHARE")
            .bind(queue.namespace.as_str())
            .bind(queue.name.as_str())
            .fetch_optional(ctx.conn())
            .await?;
        if let Some(row) = row {
            return meta(&row);
        }
        let policy = QueuePolicy::default();
        let created: Option<i64> = sqlx::query_scalar(
            "INSERT INTO queues (namespace, name, policy, created_at) VALUES ($1, $2, $3::jsonb, $4) \
             ON CONFLICT (namespace, name) DO NOTHING RETURNING id",
        )
        .bind(queue.namespace.as_str())
        .bind(queue.name.as_str())
        .bind(encode_policy(&policy)?)
        .bind(ctx.now.as_millis())
        .fetch_optional(ctx.conn())
        .await?;
        if let Some(id) = created {
            return Ok(QueueMeta { id, policy });
        }
        // Another node created it between our lookup and our insert: look again.
    }
}

/// Sets the policy, creating the queue if needed.
pub(crate) async fn set_policy(ctx: &mut Ctx<'_>, queue: &QueueRef, policy: &QueuePolicy) -> Db<()> {
    sqlx::query(
        "INSERT INTO queues (namespace, name, policy, created_at) VALUES ($1, $2, $3::jsonb, $4) \
         ON CONFLICT (namespace, name) DO UPDATE SET policy = EXCLUDED.policy",
    )
    .bind(queue.namespace.as_str())
    .bind(queue.name.as_str())
    .bind(encode_policy(policy)?)
    .bind(ctx.now.as_millis())
    .execute(ctx.conn())
    .await?;
    Ok(())
}

/// All queues (of one namespace, if given) in name order: byte order, as on SQLite and in
/// `QueueRef`'s `Ord`, whatever the database's collation.
pub(crate) async fn list(ctx: &mut Ctx<'_>, namespace: Option<&Namespace>) -> Db<Vec<QueueSummary>> {
    let rows = sqlx::query(
        "SELECT namespace, name, policy::text FROM queues WHERE $1::text IS NULL OR namespace = $1 \
         ORDER BY namespace COLLATE \"C\", name COLLATE \"C\"",
    )
    .bind(namespace.map(Namespace::as_str))
    .fetch_all(ctx.conn())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let (ns, name): (&str, &str) = (row.try_get(0)?, row.try_get(1)?);
        let queue = QueueRef::parse(ns, name).map_err(|e| corrupt("queue name", e))?;
        out.push(QueueSummary {
            queue,
            policy: decode_policy(row.try_get(2)?)?,
        });
    }
    Ok(out)
}

/// Deletes the queue with its messages, dead letters and idempotency records.
///
/// The queue row goes first: that waits for enqueues holding it (see [`find_or_create`]), so
/// the message delete that follows sees everything they added.
pub(crate) async fn delete(ctx: &mut Ctx<'_>, queue: &QueueRef) -> Db<Result<(), QueueError>> {
    let id: Option<i64> = sqlx::query_scalar("DELETE FROM queues WHERE namespace = $1 AND name = $2 RETURNING id")
        .bind(queue.namespace.as_str())
        .bind(queue.name.as_str())
        .fetch_optional(ctx.conn())
        .await?;
    let Some(id) = id else {
        return Ok(Err(QueueError::QueueNotFound(queue.clone())));
    };
    for sql in [
        "DELETE FROM messages WHERE queue_id = $1",
        "DELETE FROM idempotency WHERE queue_id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(ctx.conn()).await?;
    }
    ctx.wake(queue);
    Ok(Ok(()))
}
