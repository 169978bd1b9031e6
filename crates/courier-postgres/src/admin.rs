//! Reading and housekeeping: get, list, purge, stats and the dead-letter queue.

use courier_core::{ListOptions, MessageId, MessageInfo, Page, QueueError, QueueRef, QueueStats, Redrive};
use sqlx::Row;

use crate::error::Db;
use crate::groups::{lock_groups, lock_queue_exclusive, lock_queue_shared};
use crate::receive::{maintain, maintain_fully};
use crate::row::{read_message, to_u64, MESSAGE_COLUMNS};
use crate::schema::status;
use crate::tx::Ctx;

/// Binds `$meta` to the queue's row, or returns `QueueNotFound` (rolling the transaction back).
macro_rules! with_queue {
    ($ctx:ident, $queue:expr, $meta:ident) => {
        let $meta = match crate::queues::require($ctx, $queue).await? {
            Ok(meta) => meta,
            Err(e) => return Ok(Err(e)),
        };
    };
}

/// How far a read sweeps the queue (lapsed leases, expired messages) before it looks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sweep {
    /// One step of [`maintain`]. Should it hit its row limit (rows may be left due), the
    /// read ends with nothing (`Ok(Ok(None))`), committing the step; its caller works the
    /// backlog off in steps of their own ([`catch_up`](crate::receive::catch_up)) and reads
    /// again.
    Step,
    /// Step after step, until nothing is due as of the transaction's start.
    Fully,
}

/// Sweeps as `sweep` says; false when a step hit its row limit, leaving the rest to the caller.
async fn swept(ctx: &mut Ctx<'_>, queue: &QueueRef, meta: &crate::queues::QueueMeta, sweep: Sweep) -> Db<bool> {
    match sweep {
        Sweep::Step => Ok(!maintain(ctx, queue, meta).await?),
        Sweep::Fully => {
            maintain_fully(ctx, queue, meta).await?;
            Ok(true)
        }
    }
}

/// Binds `$meta` like `with_queue!`, then sweeps as `$sweep` says, ending the read with
/// nothing when rows due were left.
macro_rules! with_swept_queue {
    ($ctx:ident, $queue:expr, $meta:ident, $sweep:expr) => {
        with_queue!($ctx, $queue, $meta);
        if !swept($ctx, $queue, &$meta, $sweep).await? {
            return Ok(Ok(None));
        }
    };
}

/// One message of the queue, live or dead; `Some(None)` when the queue holds no such message.
/// An unknown id is not an error here, so the sweep before the look commits all the same.
pub(crate) async fn get_message(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    id: MessageId,
    sweep: Sweep,
) -> Db<Result<Option<Option<MessageInfo>>, QueueError>> {
    with_swept_queue!(ctx, queue, meta, sweep);
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.queue_id = $1 AND m.id = $2");
    let row = sqlx::query(&sql)
        .bind(meta.id)
        .bind(id.0)
        .fetch_optional(ctx.conn())
        .await?;
    let found = row.map(|r| read_message(&r, 0, ctx.now)).transpose()?;
    Ok(Ok(Some(found.map(|m| m.info))))
}

/// Which side of the dead-letter line a listing shows.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Live,
    Dead,
}

impl Side {
    fn filter(self) -> &'static str {
        match self {
            Side::Live => "m.status <> 3",
            Side::Dead => "m.status = 3",
        }
    }
}

/// A page of live or dead messages in id order (the primary key's order within the queue).
pub(crate) async fn list(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    side: Side,
    opts: ListOptions,
    sweep: Sweep,
) -> Db<Result<Option<Page<MessageInfo>>, QueueError>> {
    with_swept_queue!(ctx, queue, meta, sweep);
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.queue_id = $1 AND {} AND m.id > $2 ORDER BY m.id LIMIT $3",
        side.filter()
    );
    // The nil UUID sorts before every UUIDv7.
    let after = opts.after.map_or(uuid::Uuid::nil(), |id| id.0);
    let rows = sqlx::query(&sql)
        .bind(meta.id)
        .bind(after)
        .bind(i64::try_from(opts.limit + 1).unwrap_or(i64::MAX))
        .fetch_all(ctx.conn())
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(read_message(row, 0, ctx.now)?.info);
    }
    let more = items.len() > opts.limit;
    items.truncate(opts.limit);
    let next_after = if more { items.last().map(|m| m.id) } else { None };
    Ok(Ok(Some(Page { items, next_after })))
}

/// Deletes live or dead messages of the queue; returns how many.
///
/// A live purge holds the queue's lock exclusively: no enqueue can place a message behind a
/// group head the purge is deleting, so no group is left with only blocked messages.
pub(crate) async fn purge(ctx: &mut Ctx<'_>, queue: &QueueRef, side: Side) -> Db<Result<u64, QueueError>> {
    with_queue!(ctx, queue, meta);
    if let Side::Live = side {
        lock_queue_exclusive(ctx, meta.id).await?;
    }
    let sql = format!("DELETE FROM messages m WHERE m.queue_id = $1 AND {}", side.filter());
    let n = sqlx::query(&sql)
        .bind(meta.id)
        .execute(ctx.conn())
        .await?
        .rows_affected();
    Ok(Ok(n))
}

/// Counts by status; `waiting_receivers` is filled in by the engine.
pub(crate) async fn stats(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    sweep: Sweep,
) -> Db<Result<Option<QueueStats>, QueueError>> {
    with_swept_queue!(ctx, queue, meta, sweep);
    let now = ctx.now.as_millis();
    let rows = sqlx::query(
        "SELECT status, visible_at <= $2, COUNT(*), MIN(enqueued_at) FROM messages WHERE queue_id = $1 GROUP BY 1, 2",
    )
    .bind(meta.id)
    .bind(now)
    .fetch_all(ctx.conn())
    .await?;
    let mut stats = QueueStats::default();
    for row in rows {
        let (st, visible, count, oldest): (i16, bool, i64, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
        let count = to_u64(count);
        match (st, visible) {
            (status::READY, true) => {
                stats.ready += count;
                stats.oldest_ready_age_ms = to_u64(now - oldest);
            }
            (status::READY, false) => stats.delayed += count,
            (status::IN_FLIGHT, _) => stats.in_flight += count,
            (status::BLOCKED, _) => stats.blocked += count,
            _ => stats.dead_lettered += count,
        }
    }
    Ok(Ok(Some(stats)))
}

/// Moves dead-lettered messages back to the queue; returns how many moved.
///
/// Each comes back ready, or blocked when its group has a live message; grouped ones are
/// revived one by one in enqueue order, so of two dead messages of an idle group the older
/// becomes active.
pub(crate) async fn redrive(ctx: &mut Ctx<'_>, queue: &QueueRef, which: &Redrive) -> Db<Result<u64, QueueError>> {
    with_queue!(ctx, queue, meta);
    let ids: Option<Vec<uuid::Uuid>> = match which {
        Redrive::All => None,
        Redrive::Ids(ids) => Some(ids.iter().map(|id| id.0).collect()),
    };
    let dead: Vec<(uuid::Uuid, Option<String>)> = sqlx::query_as(
        "SELECT id, ordering_group FROM messages WHERE queue_id = $1 AND status = 3 \
         AND ($2::uuid[] IS NULL OR id = ANY($2)) ORDER BY seq",
    )
    .bind(meta.id)
    .bind(&ids)
    .fetch_all(ctx.conn())
    .await?;
    let mut groups: Vec<&str> = dead.iter().filter_map(|(_, g)| g.as_deref()).collect();
    groups.sort_unstable();
    groups.dedup();
    if !groups.is_empty() {
        lock_queue_shared(ctx, meta.id).await?;
        lock_groups(ctx, meta.id, &groups).await?;
    }
    let plain: Vec<uuid::Uuid> = dead.iter().filter(|(_, g)| g.is_none()).map(|(id, _)| *id).collect();
    let mut moved = sqlx::query(
        "UPDATE messages SET status = 0, failures = 0, dead_reason = NULL, expires_at = NULL, visible_at = $3 \
         WHERE queue_id = $1 AND id = ANY($2) AND status = 3",
    )
    .bind(meta.id)
    .bind(&plain)
    .bind(ctx.now.as_millis())
    .execute(ctx.conn())
    .await?
    .rows_affected();
    for (id, group) in dead.iter().filter_map(|(id, g)| g.as_ref().map(|g| (id, g))) {
        // One statement per grouped message, so each sees the ones revived before it.
        moved += sqlx::query(
            "UPDATE messages SET status = CASE WHEN EXISTS (\
               SELECT 1 FROM messages x WHERE x.queue_id = $1 AND x.ordering_group IS NOT NULL \
               AND x.ordering_group = $3 AND x.status IN (0, 1, 2)) THEN 2 ELSE 0 END, \
             failures = 0, dead_reason = NULL, expires_at = NULL, visible_at = $4 \
             WHERE queue_id = $1 AND id = $2 AND status = 3",
        )
        .bind(meta.id)
        .bind(id)
        .bind(group)
        .bind(ctx.now.as_millis())
        .execute(ctx.conn())
        .await?
        .rows_affected();
    }
    if moved > 0 {
        ctx.wake(queue);
    }
    Ok(Ok(moved))
}
