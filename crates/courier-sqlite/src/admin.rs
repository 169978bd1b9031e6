//! Reading and housekeeping: get, list, purge, stats and the dead-letter queue.

use courier_core::{ListOptions, MessageId, MessageInfo, Page, QueueError, QueueRef, QueueStats, Redrive};
use rusqlite::params;

use crate::error::{storage, SqlResult};
use crate::lease::{group_has_live_message, seq_of};
use crate::receive::maintain;
use crate::row::{read_message, MESSAGE_COLUMNS};
use crate::schema::status;
use crate::writer::{Ctx, QueueMeta};

/// One message of the queue, live or dead; `None` when the queue holds no such message. An
/// unknown id is not an error here, so the sweep before the look is kept all the same.
pub(crate) fn get_message(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    id: MessageId,
) -> Result<Option<MessageInfo>, QueueError> {
    let meta = crate::queues::require(ctx, queue)?;
    maintain(ctx, queue, &meta)?;
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq = ?3 AND id = ?1 AND queue_id = ?2");
    let mut stmt = ctx.conn.prepare_cached(&sql).map_err(storage)?;
    let mut rows = stmt
        .query_map(params![&id.as_bytes()[..], meta.id, id.sequence()], |r| {
            read_message(r, ctx.now)
        })
        .map_err(storage)?;
    rows.next().map(|row| Ok(row.map_err(storage)?.info)).transpose()
}

/// Which side of the dead-letter line a listing shows.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Live,
    Dead,
}

/// A page of live or dead messages in enqueue order.
pub(crate) fn list(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    side: Side,
    opts: ListOptions,
) -> Result<Page<MessageInfo>, QueueError> {
    let meta = crate::queues::require(ctx, queue)?;
    maintain(ctx, queue, &meta)?;
    let filter = match side {
        Side::Live => format!("status <> {}", status::DEAD),
        Side::Dead => format!("status = {}", status::DEAD),
    };
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE queue_id = ?1 AND {filter} AND seq > ?2 ORDER BY seq LIMIT ?3"
    );
    // Sequences are positive, so -1 starts before the first message.
    let after = opts.after.map_or(-1, |id| id.sequence());
    let fetch = i64::try_from(opts.limit + 1).unwrap_or(i64::MAX);
    let mut stmt = ctx.conn.prepare_cached(&sql).map_err(storage)?;
    let rows = stmt
        .query_map(params![meta.id, after, fetch], |r| read_message(r, ctx.now))
        .map_err(storage)?;
    let mut items: Vec<MessageInfo> = rows
        .map(|r| r.map(|m| m.info))
        .collect::<Result<_, _>>()
        .map_err(storage)?;
    let more = items.len() > opts.limit;
    items.truncate(opts.limit);
    let next_after = if more { items.last().map(|m| m.id) } else { None };
    Ok(Page { items, next_after })
}

/// Deletes live or dead messages of the queue; returns how many.
pub(crate) fn purge(ctx: &mut Ctx<'_>, queue: &QueueRef, side: Side) -> Result<u64, QueueError> {
    let meta = crate::queues::require(ctx, queue)?;
    let sql = match side {
        Side::Live => "DELETE FROM messages WHERE queue_id = ?1 AND status <> ?2",
        Side::Dead => "DELETE FROM messages WHERE queue_id = ?1 AND status = ?2",
    };
    let n = ctx
        .conn
        .prepare_cached(sql)
        .and_then(|mut s| s.execute(params![meta.id, status::DEAD]))
        .map_err(storage)?;
    Ok(n as u64)
}

/// Counts by status; `waiting_receivers` is filled in by the engine.
pub(crate) fn stats(ctx: &mut Ctx<'_>, queue: &QueueRef) -> Result<QueueStats, QueueError> {
    let meta = crate::queues::require(ctx, queue)?;
    maintain(ctx, queue, &meta)?;
    let now = ctx.now.as_millis();
    let mut stmt = ctx
        .conn
        .prepare_cached(
            "SELECT status, visible_at <= ?2, COUNT(*), MIN(enqueued_at) FROM messages WHERE queue_id = ?1 \
             GROUP BY 1, 2",
        )
        .map_err(storage)?;
    let rows = stmt
        .query_map(params![meta.id, now], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(storage)?;
    let mut stats = QueueStats::default();
    for row in rows {
        let (st, visible, count, oldest) = row.map_err(storage)?;
        let count = count as u64;
        match (st, visible) {
            (status::READY, true) => {
                stats.ready += count;
                stats.oldest_ready_age_ms = u64::try_from(now - oldest).unwrap_or(0);
            }
            (status::READY, false) => stats.delayed += count,
            (status::IN_FLIGHT, _) => stats.in_flight += count,
            (status::BLOCKED, _) => stats.blocked += count,
            _ => stats.dead_lettered += count,
        }
    }
    Ok(stats)
}

/// Moves dead-lettered messages back to the queue; returns how many moved.
pub(crate) fn redrive(ctx: &mut Ctx<'_>, queue: &QueueRef, which: Redrive) -> Result<u64, QueueError> {
    let meta = crate::queues::require(ctx, queue)?;
    let rows = match which {
        Redrive::All => all_dead(ctx, &meta)?,
        Redrive::Ids(ids) => {
            let mut rows = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some((seq, status::DEAD)) = seq_of(ctx.conn, meta.id, id)? {
                    rows.push(seq);
                }
            }
            rows.sort_unstable();
            rows.dedup();
            rows
        }
    };
    for &seq in &rows {
        revive(ctx, &meta, seq)?;
    }
    if !rows.is_empty() {
        ctx.wake(queue);
    }
    Ok(rows.len() as u64)
}

fn all_dead(ctx: &Ctx<'_>, meta: &QueueMeta) -> SqlResult<Vec<i64>> {
    let mut stmt = ctx
        .conn
        .prepare_cached("SELECT seq FROM messages WHERE queue_id = ?1 AND status = ?2 ORDER BY seq")
        .map_err(storage)?;
    let rows = stmt
        .query_map(params![meta.id, status::DEAD], |r| r.get(0))
        .map_err(storage)?;
    rows.collect::<Result<_, _>>().map_err(storage)
}

fn revive(ctx: &Ctx<'_>, meta: &QueueMeta, seq: i64) -> SqlResult<()> {
    let group: Option<String> = ctx
        .conn
        .prepare_cached("SELECT ordering_group FROM messages WHERE seq = ?1")
        .and_then(|mut s| s.query_row([seq], |r| r.get(0)))
        .map_err(storage)?;
    let blocked = match &group {
        Some(g) => group_has_live_message(ctx.conn, meta.id, g)?,
        None => false,
    };
    ctx.conn
        .prepare_cached(
            "UPDATE messages SET status = ?2, failures = 0, dead_reason = NULL, expires_at = NULL, \
             visible_at = ?3 WHERE seq = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                seq,
                if blocked { status::BLOCKED } else { status::READY },
                ctx.now.as_millis()
            ])
        })
        .map_err(storage)?;
    Ok(())
}
