//! Receive: reclaiming lapsed leases, expiring messages, then leasing the oldest ready ones.

use courier_core::{
    Delivery, ExpiryAction, FencingToken, Lease, LeaseId, MessageStatus, QueueError, QueueRef, ReceiveBatch,
    ReceiveOptions, Timestamp,
};
use rusqlite::params;

use crate::error::{storage, SqlResult};
use crate::lease::promote_group;
use crate::row::{read_message, MessageRow, DEAD_EXPIRED, DEAD_MAX_ATTEMPTS, MESSAGE_COLUMNS};
use crate::schema::status;
use crate::writer::{Ctx, QueueMeta};

/// Leases up to `opts.max_messages` ready messages of `queue`.
pub(crate) fn try_receive(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    opts: &ReceiveOptions,
) -> Result<ReceiveBatch, QueueError> {
    let Some(meta) = crate::queues::find(ctx, queue)? else {
        return Ok(ReceiveBatch::default());
    };
    maintain(ctx, queue, &meta)?;
    let rows = ready_messages(ctx, &meta, opts.max_messages)?;
    if rows.is_empty() {
        return Ok(ReceiveBatch {
            deliveries: Vec::new(),
            next_due: next_due(ctx, &meta)?,
        });
    }
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in rows {
        deliveries.push(lease_message(ctx, &meta, opts, row)?);
    }
    Ok(ReceiveBatch {
        deliveries,
        next_due: None,
    })
}

fn ready_messages(ctx: &Ctx<'_>, meta: &QueueMeta, max: usize) -> SqlResult<Vec<MessageRow>> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE queue_id = ?1 AND status = {} AND visible_at <= ?2 \
         ORDER BY visible_at, seq LIMIT ?3",
        status::READY
    );
    let mut stmt = ctx.conn.prepare_cached(&sql).map_err(storage)?;
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![meta.id, ctx.now.as_millis(), limit], |r| {
            read_message(r, ctx.now)
        })
        .map_err(storage)?;
    rows.collect::<Result<_, _>>().map_err(storage)
}

fn lease_message(ctx: &Ctx<'_>, meta: &QueueMeta, opts: &ReceiveOptions, row: MessageRow) -> SqlResult<Delivery> {
    let lease = opts
        .lease
        .or(row.lease_ms.map(std::time::Duration::from_millis))
        .unwrap_or(meta.policy.lease());
    let deadline = ctx.now.saturating_add(lease);
    let lease_id = LeaseId::random();
    ctx.conn
        .prepare_cached(
            "UPDATE messages SET status = ?2, visible_at = ?3, lease_id = ?4, fencing_token = fencing_token + 1, \
             deliveries = deliveries + 1 WHERE seq = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                row.seq,
                status::IN_FLIGHT,
                deadline.as_millis(),
                &lease_id.0.as_bytes()[..]
            ])
        })
        .map_err(storage)?;
    let mut message = row.info;
    message.status = MessageStatus::InFlight;
    message.visible_at = deadline;
    message.deliveries += 1;
    let fencing_token = FencingToken(row.fencing_token + 1);
    debug_assert!(
        fencing_token.0 >= u64::from(message.deliveries),
        "fencing token grows with every lease"
    );
    Ok(Delivery {
        lease: Lease {
            lease_id,
            fencing_token,
            attempt: message.failures + 1,
            deadline,
        },
        message,
    })
}

/// The earliest time a delayed message becomes visible or a lease runs out.
fn next_due(ctx: &Ctx<'_>, meta: &QueueMeta) -> SqlResult<Option<Timestamp>> {
    let mut due: Option<i64> = None;
    for status in [status::READY, status::IN_FLIGHT] {
        let found: Option<i64> = ctx
            .conn
            .prepare_cached(
                "SELECT MIN(visible_at) FROM messages WHERE queue_id = ?1 AND status = ?2 AND visible_at > ?3",
            )
            .and_then(|mut s| s.query_row(params![meta.id, status, ctx.now.as_millis()], |r| r.get(0)))
            .map_err(storage)?;
        due = match (due, found) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(due.map(Timestamp))
}

/// Brings the queue up to date with the clock: lapsed leases count a failed attempt,
/// expired messages are dropped or dead-lettered, and groups move on.
pub(crate) fn maintain(ctx: &mut Ctx<'_>, queue: &QueueRef, meta: &QueueMeta) -> SqlResult<()> {
    let mut groups = reclaim_lapsed_leases(ctx, meta)?;
    groups.extend(expire_messages(ctx, meta)?);
    groups.sort();
    groups.dedup();
    for group in groups {
        if promote_group(ctx.conn, meta.id, &group)? {
            ctx.wake(queue);
        }
    }
    Ok(())
}

/// Returns the groups whose active message was dead-lettered.
fn reclaim_lapsed_leases(ctx: &Ctx<'_>, meta: &QueueMeta) -> SqlResult<Vec<String>> {
    let mut stmt = ctx
        .conn
        .prepare_cached(
            "UPDATE messages SET failures = failures + 1, last_error = 'lease expired', lease_id = NULL, \
             status = CASE WHEN failures + 1 >= max_attempts THEN ?3 ELSE ?4 END, \
             dead_reason = CASE WHEN failures + 1 >= max_attempts THEN ?5 ELSE NULL END \
             WHERE queue_id = ?1 AND status = ?6 AND visible_at <= ?2 RETURNING status, ordering_group",
        )
        .map_err(storage)?;
    let rows = stmt
        .query_map(
            params![
                meta.id,
                ctx.now.as_millis(),
                status::DEAD,
                status::READY,
                DEAD_MAX_ATTEMPTS,
                status::IN_FLIGHT
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?)),
        )
        .map_err(storage)?;
    let mut groups = Vec::new();
    for row in rows {
        if let (status::DEAD, Some(group)) = row.map_err(storage)? {
            groups.push(group);
        }
    }
    Ok(groups)
}

/// Drops or dead-letters live, unleased messages past their TTL; returns groups whose
/// active message left.
fn expire_messages(ctx: &Ctx<'_>, meta: &QueueMeta) -> SqlResult<Vec<String>> {
    // The `expires_at IS NOT NULL AND status <> 3` terms match the partial index's WHERE.
    let expired: Vec<(i64, i64, Option<String>)> = {
        let mut stmt = ctx
            .conn
            .prepare_cached(
                "SELECT seq, status, ordering_group FROM messages INDEXED BY messages_by_expiry \
                 WHERE queue_id = ?1 AND expires_at <= ?2 AND expires_at IS NOT NULL AND status <> 3 \
                 AND status IN (?3, ?4)",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map(
                params![meta.id, ctx.now.as_millis(), status::READY, status::BLOCKED],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)?
    };
    let mut groups = Vec::new();
    for (seq, was, group) in expired {
        match meta.policy.on_expire {
            ExpiryAction::Drop => delete_row(ctx, seq)?,
            ExpiryAction::DeadLetter => dead_letter_row(ctx, seq, DEAD_EXPIRED)?,
        }
        if let (status::READY, Some(group)) = (was, group) {
            groups.push(group);
        }
    }
    Ok(groups)
}

fn delete_row(ctx: &Ctx<'_>, seq: i64) -> SqlResult<()> {
    ctx.conn
        .prepare_cached("DELETE FROM messages WHERE seq = ?1")
        .and_then(|mut s| s.execute([seq]))
        .map_err(storage)?;
    Ok(())
}

fn dead_letter_row(ctx: &Ctx<'_>, seq: i64, reason: i64) -> SqlResult<()> {
    ctx.conn
        .prepare_cached("UPDATE messages SET status = ?2, dead_reason = ?3, lease_id = NULL WHERE seq = ?1")
        .and_then(|mut s| s.execute(params![seq, status::DEAD, reason]))
        .map_err(storage)?;
    Ok(())
}
