//! Receive: reclaiming lapsed leases and expiring messages when a sweep is due, then leasing
//! the oldest ready ones with one `FOR UPDATE SKIP LOCKED` statement, so receivers on any
//! number of nodes take disjoint messages without waiting for each other.

use std::sync::LazyLock;
use std::time::Duration;

use courier_core::{
    Delivery, ExpiryAction, FencingToken, Lease, LeaseId, QueueRef, ReceiveBatch, StorageError, Timestamp,
};
use sqlx::{PgConnection, Row};

use crate::combine::split_by;
use crate::epoch::FLOOR_SETTING;
use crate::error::{corrupt, storage, Db};
use crate::groups::promote_groups;
use crate::queues::QueueMeta;
use crate::row::{ms_i64, read_message, MESSAGE_COLUMNS};
use crate::schema::status;
use crate::tx::{transaction, Core, Ctx};

/// Most rows one maintenance step handles. A bigger backlog (say a million leases lapsing in
/// the same second) is worked off step by step (by the next receives, or by a read's
/// [`catch_up`]) instead of in one huge transaction that would hold a lock per touched
/// ordering group.
pub(crate) const MAINTENANCE_ROWS_MAX: i64 = 1_000;

/// The statement that leases up to `max` ready messages: `$1` queue id, `$2` now, `$3` max,
/// `$4` the receive's lease in ms (or NULL), `$5` the policy's lease in ms, `$6` at least `$3`
/// fresh lease ids, the `n`th for the `n`th message picked. Each row comes back
/// with its 1-based position in the pick order, `(visible_at, seq)`, to sort by, and the
/// `visible_at` it had before, to give it its place back should no one take the lease.
///
/// The statement commits without waiting for the WAL flush (`synchronous_commit` off for its
/// own implicit transaction only), and its tokens are at least the connection's lease floor:
/// see `epoch.rs` for what a database crash does to such leases.
///
/// Lease ids are minted by the node rather than by `gen_random_uuid()`, which draws from the
/// server's strong random source once per row: ~1.5 µs each; the array costs less, and a full
/// 100-row lease took ~5 % less time (`pgbench` of this statement on a scratch schema,
/// docs/BENCHMARKS.md, runs 51–54). The `COALESCE` only guards against a short array: a
/// leased row must never be left without a lease id.
///
/// The picked rows are updated by their `ctid` (a TID scan: the row lock taken by the pick
/// keeps it valid; the join to `ranked` only brings back position and former `visible_at`),
/// never by a `queue_id` term the planner could cost on stale statistics, say a bitmap scan
/// over the whole queue for a table analyzed while it was small.
pub(crate) fn receive_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH picked AS MATERIALIZED (\
       SELECT ctid AS tid, id, visible_at, seq FROM messages \
       WHERE queue_id = $1 AND status = 0 AND visible_at <= $2 AND (expires_at IS NULL OR expires_at > $2) \
       ORDER BY visible_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED), \
     ranked AS (SELECT tid, visible_at AS was, row_number() OVER (ORDER BY visible_at, seq) AS pos \
       FROM picked) \
     UPDATE messages m SET status = 1, visible_at = $2 + COALESCE($4, m.lease_ms, $5), \
       lease_id = COALESCE(($6::uuid[])[ranked.pos], gen_random_uuid()), deliveries = m.deliveries + 1, \
       fencing_token = GREATEST(m.fencing_token + 1, current_setting('{FLOOR_SETTING}')::bigint) \
     FROM ranked, (SELECT set_config('synchronous_commit', 'off', true)) AS lease_commit \
     WHERE m.ctid = ANY(ARRAY(SELECT tid FROM picked)) AND m.ctid = ranked.tid \
     RETURNING ranked.pos, ranked.was, {MESSAGE_COLUMNS}"
        )
    });
    &SQL
}

/// In-flight messages whose lease ran out count a failure: ready again at their deadline, or
/// dead-lettered at max attempts. `$1` queue id, `$2` now, `$3` row limit. Updated by `ctid`,
/// as in [`receive_sql`].
///
/// A lease granted before the database's last crash (its token is below the connection's
/// lease floor, see `epoch.rs`) counts no failure and keeps its last error: its holder may have
/// acked it with an ack the crash took back, or found the database gone. Such a message is
/// ready again, never dead-lettered by the lapse. `COALESCE` counts the failure on a session
/// without a floor, as before epochs existed.
pub(crate) fn reclaim_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let counted =
            format!("COALESCE(m.fencing_token >= NULLIF(current_setting('{FLOOR_SETTING}', true), '')::bigint, true)");
        format!(
            "WITH lapsed AS MATERIALIZED (\
       SELECT ctid AS tid FROM messages WHERE queue_id = $1 AND status = 1 AND visible_at <= $2 \
       ORDER BY visible_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
     UPDATE messages m SET failures = m.failures + ({counted})::int, lease_id = NULL, \
       last_error = CASE WHEN {counted} THEN 'lease expired' ELSE m.last_error END, \
       status = CASE WHEN {counted} AND m.failures + 1 >= m.max_attempts THEN 3 ELSE 0 END, \
       dead_reason = CASE WHEN {counted} AND m.failures + 1 >= m.max_attempts THEN 1 ELSE NULL END \
     WHERE m.ctid = ANY(ARRAY(SELECT tid FROM lapsed)) \
     RETURNING m.status, m.ordering_group"
        )
    });
    &SQL
}

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

/// One receiver's share of a combined receive, with what it takes to give the leases back
/// should the receiver have gone away meanwhile.
#[derive(Debug, Default)]
pub(crate) struct Dealt {
    pub(crate) batch: ReceiveBatch,
    queue_id: i64,
    /// Each delivery's `visible_at` before it was leased, in delivery order.
    was_visible_at: Vec<i64>,
}

/// Leases ready messages of `queue` for several receivers at once, the `i`th wanting up to
/// `wants[i]`, with the receive's `lease` if given: one sweep (if due) and one statement for
/// all, the deliveries dealt out in pick order, so the oldest go to the earliest receiver. A
/// receiver left with nothing is told when something next falls due.
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
) -> Vec<Result<Dealt, StorageError>> {
    match lease_for(core, queue, wants, lease).await {
        Ok(shares) => shares,
        Err(e) => wants.iter().map(|_| Err(e.clone())).collect(),
    }
}

async fn lease_for(
    core: &Core,
    queue: &QueueRef,
    wants: &[usize],
    lease: Option<Duration>,
) -> Result<Vec<Result<Dealt, StorageError>>, StorageError> {
    let Some(meta) = crate::queues::find_cached(core, queue).await.map_err(storage)? else {
        return Ok(wants.iter().map(|_| Ok(Dealt::default())).collect());
    };
    if core.cache.maintenance_due(queue, core.clock.now()) {
        let (swept_at, next) = transaction!(core, finish_ok, |ctx| sweep(&mut ctx, queue, &meta)).await?;
        core.cache.maintained(queue, swept_at, next);
    }
    let now = core.clock.now();
    let total = wants.iter().sum();
    let leased = core
        .on_warm(async |conn| lease_ready(conn, now, &meta, total, lease).await)
        .await
        .map_err(storage)?;
    if let Some(first_deadline) = leased.iter().map(|(d, _)| d.lease.deadline).min() {
        core.cache.sweep_by(queue, first_deadline);
    }
    let dealt = split_by(leased, wants);
    let next_due = if dealt.iter().any(Vec::is_empty) {
        Some(next_due(core, queue, meta.id, now).await.map_err(storage))
    } else {
        None
    };
    Ok(dealt
        .into_iter()
        .map(|share| {
            let next_due = match (&next_due, share.is_empty()) {
                (Some(Err(e)), true) => return Err(e.clone()),
                (Some(Ok(due)), true) => *due,
                _ => None,
            };
            let (deliveries, was_visible_at) = share.into_iter().unzip();
            Ok(Dealt {
                batch: ReceiveBatch { deliveries, next_due },
                queue_id: meta.id,
                was_visible_at,
            })
        })
        .collect())
}

/// Gives leases back: each row still under its lease is ready again in the place it had
/// (`visible_at` restored), without counting an attempt; deliveries and the fencing token keep
/// their new values, so a later lease still outranks this one. A lease that already ran out is
/// left to the sweep, which counts the failed attempt as for any lapsed lease. `$1` queue id,
/// `$2` message ids, `$3` lease ids, `$4` former `visible_at`s, `$5` now. Rows are probed by
/// primary key and updated by `ctid` as in [`ACK_MANY_SQL`](crate::lease::ACK_MANY_SQL); the
/// lease is checked again on the updated row. The group's active message stays its active one,
/// so no transaction is needed.
pub(crate) const RELEASE_SQL: &str = "WITH hit AS MATERIALIZED (\
       SELECT (SELECT m.ctid FROM messages m WHERE m.queue_id = $1 AND m.id = r.id AND m.lease_id = r.lease_id \
         AND m.status + 0 = 1 AND m.visible_at + 0 > $5) AS tid, r.lease_id, r.was \
       FROM unnest($2::uuid[], $3::uuid[], $4::bigint[]) AS r(id, lease_id, was)) \
     UPDATE messages m SET status = 0, visible_at = hit.was, lease_id = NULL \
     FROM hit WHERE m.ctid = ANY(ARRAY(SELECT tid FROM hit)) AND m.ctid = hit.tid \
       AND m.status + 0 = 1 AND m.lease_id = hit.lease_id AND m.visible_at + 0 > $5";

/// Gives back the leases of a share whose receiver went away before it got them, with one
/// autocommitted statement, and wakes this node's and other nodes' receivers for them. If that
/// fails (the database is away), they come back when their leases run out, as if the receiver
/// had crashed.
pub(crate) async fn release(core: &Core, queue: &QueueRef, share: Dealt) {
    if share.batch.deliveries.is_empty() {
        return;
    }
    let ids: Vec<uuid::Uuid> = share.batch.deliveries.iter().map(|d| d.message.id.0).collect();
    let leases: Vec<uuid::Uuid> = share.batch.deliveries.iter().map(|d| d.lease.lease_id.0).collect();
    let released = crate::tx::retry(|| {
        core.on_warm(async |conn| {
            sqlx::query(RELEASE_SQL)
                .bind(share.queue_id)
                .bind(&ids)
                .bind(&leases)
                .bind(&share.was_visible_at)
                .bind(core.clock.now().as_millis())
                .execute(conn)
                .await
        })
    })
    .await;
    match released {
        Ok(done) if done.rows_affected() > 0 => {
            core.announce_ready(queue, usize::try_from(done.rows_affected()).unwrap_or(usize::MAX));
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(
            %queue,
            %error,
            leases = ids.len(),
            "leases taken for a receiver that left were not given back; they run out instead"
        ),
    }
}

/// How long one step of [`catch_up`] may take.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StepLimit {
    /// The operation timeout, as for any call.
    Bounded,
    /// As long as the database is seen working on it, as for the bulk calls (stats): a
    /// step may wait for a group's lock that a redrive holds.
    Watched,
}

/// Works off the queue's maintenance backlog as of now in steps of [`MAINTENANCE_ROWS_MAX`]
/// rows, each in a transaction of its own, for a read whose own step hit that limit: no
/// transaction grows with the backlog, and a call cut off keeps the steps it committed. Rows
/// another transaction holds locked at the moment (sweeping or settling them) are skipped,
/// not waited for.
pub(crate) async fn catch_up(core: &Core, queue: &QueueRef, limit: StepLimit) -> Result<(), StorageError> {
    let as_of = core.clock.now();
    loop {
        let more = match limit {
            StepLimit::Bounded => transaction!(core, finish_ok, |ctx| step_as_of(&mut ctx, queue, as_of)).await?,
            StepLimit::Watched => {
                transaction!(watched: core, finish_ok, |ctx| step_as_of(&mut ctx, queue, as_of)).await?
            }
        };
        if !more {
            return Ok(());
        }
    }
}

/// One maintenance step as of `as_of` rather than the transaction's start, so a backlog that
/// grows as fast as steps work it off cannot keep [`catch_up`] going; on the queue's current
/// row, read afresh (its policy says what an expiry does). False for a queue deleted meanwhile.
async fn step_as_of(ctx: &mut Ctx<'_>, queue: &QueueRef, as_of: Timestamp) -> Db<bool> {
    ctx.now = as_of;
    match crate::queues::find(ctx, queue).await? {
        Some(meta) => maintain(ctx, queue, &meta).await,
        None => Ok(false),
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

/// Leases up to `max` ready messages; each delivery comes with its `visible_at` from before.
async fn lease_ready(
    conn: &mut PgConnection,
    now: Timestamp,
    meta: &QueueMeta,
    max: usize,
    lease: Option<Duration>,
) -> Db<Vec<(Delivery, i64)>> {
    let rows = sqlx::query(receive_sql())
        .bind(meta.id)
        .bind(now.as_millis())
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .bind(lease.map(ms_i64))
        .bind(ms_i64(meta.policy.lease()))
        .bind((0..max).map(|_| LeaseId::random().0).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
    let mut leased = Vec::with_capacity(rows.len());
    for row in &rows {
        let position: i64 = row.try_get(0)?;
        let was_visible_at: i64 = row.try_get(1)?;
        // MESSAGE_COLUMNS follow.
        let message = read_message(row, 2, now)?;
        leased.push((position, message, was_visible_at));
    }
    // UPDATE … RETURNING has no order; deliveries come in pick order, (visible_at, seq).
    leased.sort_by_key(|(position, _, _)| *position);
    leased.into_iter().map(|(_, m, was)| Ok((delivery(m)?, was))).collect()
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
    let (delayed, lease): (Option<i64>, Option<i64>) = core
        .on_warm(async |conn| {
            sqlx::query_as(NEXT_DUE_SQL)
                .bind(queue_id)
                .bind(now.as_millis())
                .fetch_one(conn)
                .await
        })
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
    let reclaimed: Vec<(i16, Option<String>)> = sqlx::query_as(reclaim_sql())
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

/// Runs [`maintain`] until nothing is left as of the transaction's start, for a read after
/// rounds of [`catch_up`]: what fell due during the last round. Terminates: a step changes
/// every row it touches (reclaimed, expired), so no later step finds them again.
pub(crate) async fn maintain_fully(ctx: &mut Ctx<'_>, queue: &QueueRef, meta: &QueueMeta) -> Db<()> {
    while maintain(ctx, queue, meta).await? {}
    Ok(())
}

fn at_limit(rows: usize) -> bool {
    i64::try_from(rows).unwrap_or(i64::MAX) >= MAINTENANCE_ROWS_MAX
}
