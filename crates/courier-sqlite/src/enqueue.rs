//! Enqueue: idempotency keys, ordering-group placement and the insert itself.

use courier_core::{EnqueueError, Enqueued, MessageId, NewMessage, QueueRef};
use rusqlite::{params, OptionalExtension};

use crate::error::{storage, SqlResult};
use crate::lease::group_has_live_message;
use crate::row::ms_i64;
use crate::schema::status;
use crate::writer::{Ctx, QueueMeta};

/// Adds `messages` (already validated) to `queue`, creating it on first use.
pub(crate) fn enqueue(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    messages: Vec<NewMessage>,
) -> Result<Vec<Enqueued>, EnqueueError> {
    let meta = crate::queues::find_or_create(ctx, queue)?;
    let mut out = Vec::with_capacity(messages.len());
    for message in messages {
        out.push(enqueue_one(ctx, &meta, message)?);
    }
    ctx.wake(queue);
    Ok(out)
}

fn enqueue_one(ctx: &mut Ctx<'_>, meta: &QueueMeta, m: NewMessage) -> SqlResult<Enqueued> {
    let dedup_window = meta.policy.dedup_window();
    let key = m.idempotency_key.as_deref().filter(|_| !dedup_window.is_zero());
    if let Some(key) = key {
        if let Some(id) = remembered_key(ctx, meta.id, key)? {
            return Ok(Enqueued { id, duplicate: true });
        }
    }
    let id = ctx.ids.next(ctx.now);
    let blocked = match &m.ordering_group {
        Some(group) => group_has_live_message(ctx.conn, meta.id, group)?,
        None => false,
    };
    insert(ctx, meta, id, &m, if blocked { status::BLOCKED } else { status::READY })?;
    if let Some(key) = key {
        remember_key(ctx, meta.id, key, id, ctx.now.saturating_add(dedup_window).as_millis())?;
    }
    Ok(Enqueued { id, duplicate: false })
}

fn insert(ctx: &Ctx<'_>, meta: &QueueMeta, id: MessageId, m: &NewMessage, status: i64) -> SqlResult<()> {
    let expires_at = m
        .ttl
        .or(meta.policy.ttl())
        .map(|ttl| ctx.now.saturating_add(ttl).as_millis());
    let attributes = if m.attributes.is_empty() {
        None
    } else {
        serde_json::to_string(&m.attributes).ok()
    };
    ctx.conn
        .prepare_cached(
            "INSERT INTO messages (id, queue_id, status, visible_at, enqueued_at, expires_at, max_attempts, \
             lease_ms, ordering_group, payload, content_type, attributes, correlation_id, seq) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .and_then(|mut s| {
            s.execute(params![
                &id.as_bytes()[..],
                meta.id,
                status,
                ctx.now.saturating_add(m.delay).as_millis(),
                ctx.now.as_millis(),
                expires_at,
                m.max_attempts.unwrap_or(meta.policy.max_attempts),
                m.lease.map(|l| ms_i64(courier_core::message::millis(l))),
                m.ordering_group,
                &m.payload[..],
                m.content_type,
                attributes,
                m.correlation_id,
                id.sequence(),
            ])
        })
        .map_err(storage)?;
    Ok(())
}

fn remembered_key(ctx: &Ctx<'_>, queue_id: i64, key: &str) -> SqlResult<Option<MessageId>> {
    let found: Option<[u8; 16]> = ctx
        .conn
        .prepare_cached("SELECT message_id FROM idempotency WHERE queue_id = ?1 AND key = ?2 AND expires_at > ?3")
        .and_then(|mut s| {
            s.query_row(params![queue_id, key, ctx.now.as_millis()], |r| r.get(0))
                .optional()
        })
        .map_err(storage)?;
    Ok(found.map(MessageId::from_bytes))
}

fn remember_key(ctx: &Ctx<'_>, queue_id: i64, key: &str, id: MessageId, expires_at: i64) -> SqlResult<()> {
    ctx.conn
        .prepare_cached(
            "INSERT OR REPLACE INTO idempotency (queue_id, key, message_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![queue_id, key, &id.as_bytes()[..], expires_at]))
        .map_err(storage)?;
    Ok(())
}
