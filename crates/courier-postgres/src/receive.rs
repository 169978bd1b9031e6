//! Receive: reclaiming lapsed leases and expiring messages when a sweep is due, then leasing
//! the oldest ready ones with one `FOR UPDATE SKIP LOCKED` statement, so receivers on any
//! number of nodes take disjoint messages without waiting for each other.

use std::time::Duration;

use courier_core::{
    Delivery, ExpiryAction, FencingToken, Lease, LeaseId, NackIntent, QueueRef, ReceiveBatch, StorageError, Timestamp,
};
use sqlx::{PgPool, Row};

use crate::combine::split_by;
use crate::error::{corrupt, storage, Db};
use crate::groups::promote_groups;
use crate::queues::QueueMeta;
use crate::row::{ms_i64, read_message, MESSAGE_COLUMNS};
use crate::schema::status;
use crate::tx::{transaction, Core, Ctx};

/// Most rows one maintenance step handles. A bigger backlog (say a million leases lapsing in
/// the same second) is worked off by the next calls instead of in one huge transaction that
/// would hold a lock per touched ordering group.
pub(crate) const MAINTENANCE_ROWS_MAX: i64 = 1_000;

/// The statement that leases up to `max` ready messages: `$1` queue id, `$2` now, `$3` max,
/// `$4` the receive's lease in ms (or NULL), `$5` the policy's lease in ms. Each row comes back
/// with its 1-based position in the pick order, `(visible_at, seq)`, to sort by.
///
/// The picked rows are updated by their `ctid` alone (a TID scan: the row lock taken by the
/// pick keeps it valid), never by a join or a `queue_id` term the planner could cost on stale
/// statistics, say a bitmap scan over the whole queue for a table analyzed while it was small.
pub(crate) fn receive_sql() -> String {
    let pick = "WITH picked AS MATERIALIZED (\
       SELECT ctid AS tid, id, visible_at, seq FROM messages \
       WHERE queue_id = $1 AND status = 0 AND visible_at <= $2 AND (expires_at IS NULL OR expires_at > $2) \
       ORDER BY visible_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED), \
     batch AS (SELECT array_agg(id ORDER BY visible_at, seq) AS ids FROM picked) \
     UPDATE messages m SET status = 1, visible_at = $2 + COALESCE($4, m.lease_ms, $5), \
       lease_id = gen_random_uuid(), fencing_token = m.fencing_token + 1, deliveries = m.deliveries + 1 \
     FROM batch WHERE m.ctid = ANY(ARRAY(SELECT tid FROM picked)) \
     RETURNING array_position(batch.ids, m.id), ";
    format!("{pick}{MESSAGE_COLUMNS}")
}

/// In-flight messages whose lease ran out count a failure: ready again at their deadline, or
/// dead-lettered at max attempts. `$1` queue id, `$2` now, `$3` row limit. Updated by `ctid`,
/// as in [`receive_sql`].
pub(crate) const RECLAIM_SQL: &str = "WITH lapsed AS MATERIALIZED (\
       SELECT ctid AS tid FROM messages WHERE queue_id = $1 AND status = 1 AND visible_at <= $2 \
       ORDER BY visible_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
     UPDATE messages m SET failures = m.failures + 1, last_error = 'lease expired', lease_id = NULL, \
       status = CASE WHEN m.failures + 1 >= m.max_attempts THEN 3 ELSE 0 END, \
       dead_reason = CASE WHEN m.failures + 1 >= m.max_attempts THEN 1 ELSE NULL END \
     WHERE m.ctid = ANY(ARRAY(SELECT tid FROM lapsed)) \
     RETURNING m.status, m.ordering_group";

/// Live, unleased messages past their TTL, with the status they had. `$1` queue id, `$2` now,
/// `$3` row limit. The `expires_at IS NOT NULL AND status IN (0, 2)` terms match the partial
/// index's predicate.
pub(crate) const EXPIRED_CTE: &str = "WITH expired AS MATERIALIZED (\
       SELECT ctid AS tid, status AS was FROM messages \
       WHERE queue_id = $1 AND expires_at <= $2 AND expires_at IS NOT NULL AND status IN (0, 2) \
       LIMIT $3 FOR UPDATE SKIP LOCKED) ";

/// See [`EXPIRED_CTE`]: dead-letters them with reason "expired". The `ANY` term makes the scan
/// a TID scan; the join to `expired` only brings back the old status.
pub(crate) const EXPIRE_DEAD_LETTER_SQL: &str = "UPDATE messages m SET status = 3, dead_reason = 2, lease_id = NULL \
     FROM expired WHERE m.ctid = ANY(ARRAY(SELECT tid FROM expired)) AND m.ctid = expired.tid \
     RETURNING expired.was, m.ordering_group";

/// See [`EXPIRED_CTE`]: deletes them.
pub(crate) const EXPIRE_DROP_SQL: &str = "DELETE FROM messages m USING expired \
     WHERE m.ctid = ANY(ARRAY(SELECT tid FROM expired)) AND m.ctid = expired.tid \
     RETURNING expired.was, m.ordering_group";

/// When something in queue `$1` may next become ready, as of `$2`: the earliest delayed
/// `visible_at`, and the earliest lease deadline, lapsed or not (a lapsed one comes back at the
/// next sweep). Two index probes.
pub(crate) const NEXT_DUE_SQL: &str = "SELECT \
       (SELECT MIN(visible_at) FROM messages WHERE queue_id = $1 AND status = 0 AND visible_at > $2), \
       (SELECT MIN(visible_at) FROM messages WHERE queue_id = $1 AND status = 1)";

/// The earliest lease deadline or expiry after `$2` in queue `$1`: when the queue next needs a
/// sweep. Two index probes.
pub(crate) const NEXT_SWEEP_SQL: &str = "SELECT LEAST(\
       (SELECT MIN(visible_at) FROM messages WHERE queue_id = $1 AND status = 1 AND visible_at > $2), \
       (SELECT MIN(expires_at) FROM messages WHERE queue_id = $1 AND expires_at > $2 \
          AND expires_at IS NOT NULL AND status IN (0, 2)))";

/// Leases ready messages of `queue` for several receivers at once, the `i`th wanting up to
/// `wants[i]`, with the receive's `lease` if given: one sweep (if due) and one statement for
/// all, the deliveries dealt out in pick order. A receiver left with nothing is told when
/// something next falls due.
///
/// The queue is swept (lapsed leases, expired messages) in a transaction of its own, and only
/// when [`QueueCache`](crate::cache::QueueCache) says something may be due; the lease itself is
/// one statement outside any explicit transaction. In the steady state this is one round
/// trip. The sweep and the lease need not be atomic: the lease only takes ready messages, and
/// a sweep that comes a little later only makes more of them ready.
///
/// An `Err` for a receiver means it leased nothing (a sweep before may have committed: those
/// changes are due by the clock and any receive would make them). A receiver that got
/// messages always gets them, even if looking up the next due time for the others fails.
pub(crate) async fn receive_for(
    core: &Core,
    queue: &QueueRef,
    wants: &[usize],
    lease: Option<Duration>,
) -> Vec<Result<ReceiveBatch, StorageError>> {
    match lease_for(core, queue, wants, lease).await {
        Ok(batches) => batches,
        Err(e) => wants.iter().map(|_| Err(e.clone())).collect(),
    }
}

async fn lease_for(
    core: &Core,
    queue: &QueueRef,
    wants: &[usize],
    lease: Option<Duration>,
) -> Result<Vec<Result<ReceiveBatch, StorageError>>, StorageError> {
    let Some(meta) = crate::queues::find_cached(core, queue).await.map_err(storage)? else {
        return Ok(wants.iter().map(|_| Ok(ReceiveBatch::default())).collect());
    };
    if core.cache.maintenance_due(queue, core.clock.now()) {
        let (swept_at, next) = transaction!(core, finish_ok, |ctx| sweep(&mut ctx, queue, &meta)).await?;
        core.cache.maintained(queue, swept_at, next);
    }
    let now = core.clock.now();
    let total = wants.iter().sum();
    let deliveries = lease_ready(&core.pool, now, &meta, total, lease)
        .await
        .map_err(storage)?;
    if let Some(first_deadline) = deliveries.iter().map(|d| d.lease.deadline).min() {
        core.cache.sweep_by(queue, first_deadline);
    }
    let dealt = split_by(deliveries, wants);
    let next_due = if dealt.iter().any(Vec::is_empty) {
        Some(next_due(core, queue, meta.id, now).await.map_err(storage))
    } else {
        None
    };
    Ok(dealt
        .into_iter()
        .map(|deliveries| match (&next_due, deliveries.is_empty()) {
            (Some(Err(e)), true) => Err(e.clone()),
            (Some(Ok(due)), true) => Ok(ReceiveBatch {
                deliveries,
                next_due: *due,
            }),
            _ => Ok(ReceiveBatch {
                deliveries,
                next_due: None,
            }),
        })
        .collect())
}

/// Gives back leases taken for a receiver that went away before it got them: each message is
/// ready again at once, without counting an attempt. One that cannot be given back (the
/// database is away) comes back when its lease runs out, as if its receiver had crashed.
pub(crate) async fn release(core: &Core, queue: &QueueRef, deliveries: Vec<Delivery>) {
    for delivery in deliveries {
        let receipt = delivery.receipt();
        let back_now = NackIntent::Defer { delay: Duration::ZERO };
        let released = transaction!(core, finish, |ctx| crate::lease::nack(
            &mut ctx,
            queue,
            &receipt,
            back_now.clone()
        ))
        .await;
        if !matches!(released, Ok(Ok(()))) {
            tracing::warn!(%queue, message = %receipt.message_id, "a lease taken for a receiver that left was not given back; it runs out instead");
        }
    }
}

/// Sweeps the queue and tells when it next needs it: now, if rows were left for the next call.
async fn sweep(ctx: &mut Ctx<'_>, queue: &QueueRef, meta: &QueueMeta) -> Db<(Timestamp, Option<Timestamp>)> {
    if maintain(ctx, queue, meta).await? {
        return Ok((ctx.now, Some(ctx.now)));
    }
    let next: Option<i64> = sqlx::query_scalar(NEXT_SWEEP_SQL)
        .bind(meta.id)
        .bind(ctx.now.as_millis())
        .fetch_one(ctx.conn())
        .await?;
    Ok((ctx.now, next.map(Timestamp)))
}

async fn lease_ready(
    pool: &PgPool,
    now: Timestamp,
    meta: &QueueMeta,
    max: usize,
    lease: Option<Duration>,
) -> Db<Vec<Delivery>> {
    let rows = sqlx::query(&receive_sql())
        .bind(meta.id)
        .bind(now.as_millis())
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .bind(lease.map(ms_i64))
        .bind(ms_i64(meta.policy.lease()))
        .fetch_all(pool)
        .await?;
    let mut leased = Vec::with_capacity(rows.len());
    for row in &rows {
        let position: Option<i32> = row.try_get(0)?;
        // MESSAGE_COLUMNS follow the position.
        let message = read_message(row, 1, now)?;
        leased.push((position, message));
    }
    // UPDATE … RETURNING has no order; deliveries come in pick order, (visible_at, seq).
    leased.sort_by_key(|(position, _)| *position);
    leased.into_iter().map(|(_, m)| delivery(m)).collect()
}

fn delivery(m: crate::row::MessageRow) -> Db<Delivery> {
    let lease_id = m
        .lease_id
        .ok_or_else(|| corrupt("lease", "a leased row has no lease id"))?;
    let deadline = m.info.visible_at;
    debug_assert!(
        m.fencing_token >= u64::from(m.info.deliveries),
        "the fencing token grows with every lease"
    );
    Ok(Delivery {
        lease: Lease {
            lease_id: LeaseId(lease_id),
            fencing_token: FencingToken(m.fencing_token),
            attempt: m.info.failures + 1,
            deadline,
        },
        message: m.info,
    })
}

/// When a receiver that found nothing should look again: the next delayed message, the next
/// lease deadline, or, for a lease already lapsed but not yet swept, the next sweep.
async fn next_due(core: &Core, queue: &QueueRef, queue_id: i64, now: Timestamp) -> Db<Option<Timestamp>> {
    let (delayed, lease): (Option<i64>, Option<i64>) = sqlx::query_as(NEXT_DUE_SQL)
        .bind(queue_id)
        .bind(now.as_millis())
        .fetch_one(&core.pool)
        .await?;
    let lease_back = lease.map(|deadline| match Timestamp(deadline) {
        lapsed if lapsed <= now => core.cache.next_sweep(queue).unwrap_or(now).max(now),
        deadline => deadline,
    });
    Ok([delayed.map(Timestamp), lease_back].into_iter().flatten().min())
}

/// Brings the queue up to date with the clock: lapsed leases count a failed attempt,
/// expired messages are dropped or dead-lettered, and groups whose active message left move on.
/// Returns whether a step hit [`MAINTENANCE_ROWS_MAX`], so more may be left to do.
pub(crate) async fn maintain(ctx: &mut Ctx<'_>, queue: &QueueRef, meta: &QueueMeta) -> Db<bool> {
    let mut groups = Vec::new();
    let reclaimed: Vec<(i16, Option<String>)> = sqlx::query_as(RECLAIM_SQL)
        .bind(meta.id)
        .bind(ctx.now.as_millis())
        .bind(MAINTENANCE_ROWS_MAX)
        .fetch_all(ctx.conn())
        .await?;
    let mut more_left = at_limit(reclaimed.len());
    for (st, group) in reclaimed {
        match (st, group) {
            (status::DEAD, Some(group)) => groups.push(group),
            // Ready again: receivers waiting here or on other nodes should look.
            (status::READY, _) => ctx.wake(queue),
            _ => {}
        }
    }
    let expire = match meta.policy.on_expire {
        ExpiryAction::DeadLetter => EXPIRE_DEAD_LETTER_SQL,
        ExpiryAction::Drop => EXPIRE_DROP_SQL,
    };
    let expired: Vec<(i16, Option<String>)> = sqlx::query_as(&format!("{EXPIRED_CTE}{expire}"))
        .bind(meta.id)
        .bind(ctx.now.as_millis())
        .bind(MAINTENANCE_ROWS_MAX)
        .fetch_all(ctx.conn())
        .await?;
    more_left |= at_limit(expired.len());
    for (was, group) in expired {
        // Only a ready message can be a group's active one; a blocked one leaving changes nothing.
        if let (status::READY, Some(group)) = (was, group) {
            groups.push(group);
        }
    }
    groups.sort_unstable();
    groups.dedup();
    if !groups.is_empty() {
        promote_groups(ctx, queue, meta.id, &groups).await?;
    }
    Ok(more_left)
}

fn at_limit(rows: usize) -> bool {
    i64::try_from(rows).unwrap_or(i64::MAX) >= MAINTENANCE_ROWS_MAX
}
