//! Operations that need a valid lease: ack, nack, extend and the state document. Settling a
//! group's active message hands the group on through `groups::promote_groups`.

use std::time::Duration;

use std::collections::HashSet;

use courier_core::limits::ERROR_TEXT_BYTES_MAX;
use courier_core::{
    Etag, FencingToken, Lease, LeaseError, MessageId, NackIntent, QueueRef, Receipt, StateDoc, StateError,
};
use sqlx::Row;
use uuid::Uuid;

use crate::error::{corrupt, Db};
use crate::groups::promote_groups;
use crate::queues::QueueMeta;
use crate::row::{ms_i64, to_u32, to_u64};
use crate::schema::status;
use crate::tx::{Core, Ctx};

/// Deletes message `$2` of queue `$1` if lease `$3` is current at time `$4`.
///
/// `status + 0` and `visible_at + 0` keep those terms out of index conditions, so the only
/// plan is the primary-key probe: `status = 1 AND visible_at > now` also matches the
/// visibility index, whose in-flight range holds every leased message and the dead entries of
/// recently acked ones.
pub(crate) const ACK_SQL: &str = "DELETE FROM messages WHERE queue_id = $1 AND id = $2 AND status + 0 = 1 \
     AND lease_id = $3 AND visible_at + 0 > $4 RETURNING ordering_group, fencing_token";

/// The batch ack statement with `$probe` added to the primary-key probe's conditions and
/// `$using` to the `USING` list.
macro_rules! ack_many_sql {
    ($probe:literal, $using:literal) => {
        concat!(
            "WITH hit AS MATERIALIZED (\
               SELECT (SELECT m.ctid FROM messages m WHERE m.queue_id = $1 AND m.id = r.id AND m.lease_id = r.lease_id \
                 AND m.status + 0 = 1 AND m.visible_at + 0 > $4",
            $probe,
            ") AS tid, r.lease_id \
               FROM unnest($2::uuid[], $3::uuid[]) AS r(id, lease_id)) \
             DELETE FROM messages m USING hit",
            $using,
            " WHERE m.ctid = ANY(ARRAY(SELECT tid FROM hit WHERE tid IS NOT NULL)) AND m.ctid = hit.tid \
               AND m.lease_id = hit.lease_id AND m.status + 0 = 1 AND m.visible_at + 0 > $4 \
             RETURNING m.id, m.ordering_group, m.fencing_token"
        )
    };
}

/// [`ACK_SQL`] for many receipts at once: message ids `$2` and lease ids `$3` (`uuid[]`s).
///
/// Each receipt is checked by a primary-key probe (a subquery with both key columns equal has
/// only that plan, whatever the statistics say) and the matches are deleted by `ctid`. The
/// lease conditions are repeated on the deleted row: if another transaction changed the row
/// after the probe (a reclaim, a nack), the delete waits for it and then re-checks them on the
/// new version (PostgreSQL's EvalPlanQual recheck), so a dead lease is never accepted, whether
/// or not the server's TID scan rechecks the ctid itself. Receipts that did not match are
/// settled one by one with [`ACK_SQL`] by the caller.
pub(crate) const ACK_MANY_SQL: &str = ack_many_sql!("", "");

/// [`ACK_MANY_SQL`] for messages outside ordering groups only: nothing else has to happen in
/// the same transaction (no group hands on), so it runs on its own, autocommitted.
/// `ordering_group` never changes, so checking it in the probe is enough.
///
/// It commits without waiting for the WAL flush (`synchronous_commit` off for its own implicit
/// transaction, as the receive statement does) unless the engine was opened with
/// [`crate::PostgresOptions::durable_acks`]: [`ACK_UNGROUPED_DURABLE_SQL`]. Grouped messages
/// keep the flush: an ack lost with a crash would otherwise let the group's next message be
/// handled before the lost one comes again.
pub(crate) const ACK_UNGROUPED_SQL: &str = ack_many_sql!(
    " AND m.ordering_group IS NULL",
    ", (SELECT set_config('synchronous_commit', 'off', true)) AS ack_commit"
);

/// [`ACK_UNGROUPED_SQL`], committed with the session's `synchronous_commit = on`.
pub(crate) const ACK_UNGROUPED_DURABLE_SQL: &str = ack_many_sql!(" AND m.ordering_group IS NULL", "");

/// Acks the receipts of ungrouped messages in queue `queue_id` with one autocommitted
/// statement ([`ACK_UNGROUPED_SQL`] or [`ACK_UNGROUPED_DURABLE_SQL`]); returns the ids it
/// acked. The receipts must name distinct messages. The rest (grouped, refused, changed
/// meanwhile) are for [`ack_many`].
pub(crate) async fn ack_ungrouped(core: &Core, queue_id: i64, receipts: &[Receipt]) -> Db<HashSet<Uuid>> {
    let ids: Vec<Uuid> = receipts.iter().map(|r| r.message_id.0).collect();
    let leases: Vec<Uuid> = receipts.iter().map(|r| r.lease_id.0).collect();
    let sql = if core.durable_acks {
        ACK_UNGROUPED_DURABLE_SQL
    } else {
        ACK_UNGROUPED_SQL
    };
    let deleted: Vec<(Uuid, Option<String>, i64)> = core
        .on_warm(async |conn| {
            sqlx::query_as(sql)
                .bind(queue_id)
                .bind(&ids)
                .bind(&leases)
                .bind(core.clock.now().as_millis())
                .fetch_all(conn)
                .await
        })
        .await?;
    debug_assert!(deleted.iter().all(|(_, group, _)| group.is_none()));
    Ok(deleted.into_iter().map(|(id, _, _)| id).collect())
}

/// Why a conditional settle touched no row: the message is gone, or its lease is not this one.
async fn refusal(ctx: &mut Ctx<'_>, queue_id: i64, id: MessageId) -> Db<LeaseError> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM messages WHERE queue_id = $1 AND id = $2")
        .bind(queue_id)
        .bind(id.0)
        .fetch_optional(ctx.conn())
        .await?;
    Ok(match exists {
        Some(_) => LeaseError::Stale(id),
        None => LeaseError::MessageNotFound(id),
    })
}

/// The columns of a leased message that settlement needs.
struct Leased {
    failures: u32,
    max_attempts: u32,
    group: Option<String>,
    state_version: u64,
}

/// Locks the message behind `receipt` (`FOR UPDATE`, so no node changes it until we commit)
/// and checks that the lease on it is valid now.
async fn lock_leased(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    receipt: &Receipt,
) -> Db<Result<(QueueMeta, Leased), LeaseError>> {
    let not_found = LeaseError::MessageNotFound(receipt.message_id);
    let Some(meta) = crate::queues::find(ctx, queue).await? else {
        return Ok(Err(not_found));
    };
    let row = sqlx::query(
        "SELECT status, lease_id, visible_at, failures, max_attempts, ordering_group, state_version \
         FROM messages WHERE queue_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(meta.id)
    .bind(receipt.message_id.0)
    .fetch_optional(ctx.conn())
    .await?;
    let Some(row) = row else {
        return Ok(Err(not_found));
    };
    if !holds(ctx, receipt, row.try_get(0)?, row.try_get(1)?, row.try_get(2)?) {
        return Ok(Err(LeaseError::Stale(receipt.message_id)));
    }
    let leased = Leased {
        failures: to_u32(row.try_get(3)?),
        max_attempts: to_u32(row.try_get(4)?),
        group: row.try_get(5)?,
        state_version: to_u64(row.try_get(6)?),
    };
    Ok(Ok((meta, leased)))
}

/// A lease is valid while the message is in flight under this lease id and `T < deadline`.
fn holds(ctx: &Ctx<'_>, receipt: &Receipt, st: i16, lease_id: Option<Uuid>, deadline: i64) -> bool {
    st == status::IN_FLIGHT && lease_id == Some(receipt.lease_id.0) && ctx.now.as_millis() < deadline
}

/// Acks each receipt independently, in order, in one transaction.
pub(crate) async fn ack_many(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    receipts: &[Receipt],
) -> Db<Vec<Result<(), LeaseError>>> {
    // Read afresh, in this transaction: the caller's cached queue id may be stale (the queue
    // deleted and recreated on another node), and a refusal must come from the current row.
    let Some(meta) = crate::queues::find(ctx, queue).await? else {
        return Ok(receipts
            .iter()
            .map(|r| Err(LeaseError::MessageNotFound(r.message_id)))
            .collect());
    };
    let mut ids: Vec<MessageId> = receipts.iter().map(|r| r.message_id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() == receipts.len() {
        return ack_distinct(ctx, queue, &meta, receipts).await;
    }
    // A message named twice: the second receipt's answer depends on the first's effect, so
    // settle them one by one, in order.
    let mut out = Vec::with_capacity(receipts.len());
    for receipt in receipts {
        out.push(ack(ctx, queue, &meta, receipt).await?);
    }
    Ok(out)
}

/// Acks receipts for distinct messages with one statement: no receipt's outcome depends on
/// another's, so this answers exactly what acking them one by one would.
async fn ack_distinct(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    meta: &QueueMeta,
    receipts: &[Receipt],
) -> Db<Vec<Result<(), LeaseError>>> {
    let ids: Vec<Uuid> = receipts.iter().map(|r| r.message_id.0).collect();
    let leases: Vec<Uuid> = receipts.iter().map(|r| r.lease_id.0).collect();
    let deleted: Vec<(Uuid, Option<String>, i64)> = sqlx::query_as(ACK_MANY_SQL)
        .bind(meta.id)
        .bind(&ids)
        .bind(&leases)
        .bind(ctx.now.as_millis())
        .fetch_all(ctx.conn())
        .await?;
    let mut groups = Vec::new();
    let mut acked = Vec::with_capacity(deleted.len());
    for (id, group, fencing_token) in deleted {
        debug_assert!(fencing_token >= 1, "an acked message was leased at least once");
        acked.push(id);
        groups.extend(group);
    }
    if !groups.is_empty() {
        // At most one message of a group is in flight, so each group appears once.
        promote_groups(ctx, queue, meta.id, &groups).await?;
    }
    let acked: HashSet<Uuid> = acked.into_iter().collect();
    let mut out = Vec::with_capacity(receipts.len());
    for receipt in receipts {
        out.push(if acked.contains(&receipt.message_id.0) {
            Ok(())
        } else {
            // Refused, or changed by another transaction between the check and the delete:
            // the single-receipt statement decides, on the row as it is now.
            ack(ctx, queue, meta, receipt).await?
        });
    }
    Ok(out)
}

/// Deletes the message if the receipt's lease is current, in one statement whose row lock
/// makes the check and the delete one step on every node; only a refused ack pays for a
/// second lookup that tells "unknown message" from "stale lease".
async fn ack(ctx: &mut Ctx<'_>, queue: &QueueRef, meta: &QueueMeta, receipt: &Receipt) -> Db<Result<(), LeaseError>> {
    let deleted: Option<(Option<String>, i64)> = sqlx::query_as(ACK_SQL)
        .bind(meta.id)
        .bind(receipt.message_id.0)
        .bind(receipt.lease_id.0)
        .bind(ctx.now.as_millis())
        .fetch_optional(ctx.conn())
        .await?;
    let Some((group, fencing_token)) = deleted else {
        return Ok(Err(refusal(ctx, meta.id, receipt.message_id).await?));
    };
    debug_assert!(fencing_token >= 1, "an acked message was leased at least once");
    if let Some(group) = group {
        promote_groups(ctx, queue, meta.id, &[group]).await?;
    }
    Ok(Ok(()))
}

/// Returns a leased message to the queue as a failure or a deferral.
pub(crate) async fn nack(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    receipt: &Receipt,
    intent: NackIntent,
) -> Db<Result<(), LeaseError>> {
    let (meta, leased) = match lock_leased(ctx, queue, receipt).await? {
        Ok(found) => found,
        Err(refused) => return Ok(Err(refused)),
    };
    let id = receipt.message_id;
    match intent {
        NackIntent::Defer { delay } => {
            let at = ctx.now.saturating_add(delay).as_millis();
            retry_at(ctx, meta.id, id, leased.failures, None, at).await?;
        }
        NackIntent::Failure { error, delay } => {
            let failures = leased.failures + 1;
            let error = truncate_at_char_boundary(error, ERROR_TEXT_BYTES_MAX);
            debug_assert!(
                leased.failures < leased.max_attempts,
                "a leased message is below its attempt limit"
            );
            if failures >= leased.max_attempts {
                dead_letter(ctx, meta.id, id, failures, &error).await?;
                if let Some(group) = leased.group {
                    promote_groups(ctx, queue, meta.id, &[group]).await?;
                }
            } else {
                let delay = delay.unwrap_or_else(|| meta.policy.retry_delay(failures));
                let at = ctx.now.saturating_add(delay).as_millis();
                retry_at(ctx, meta.id, id, failures, Some(&error), at).await?;
            }
        }
    }
    ctx.wake(queue);
    Ok(Ok(()))
}

async fn retry_at(
    ctx: &mut Ctx<'_>,
    queue_id: i64,
    id: MessageId,
    failures: u32,
    error: Option<&str>,
    at: i64,
) -> Db<()> {
    sqlx::query(
        "UPDATE messages SET status = 0, visible_at = $3, failures = $4, lease_id = NULL, \
         last_error = COALESCE($5, last_error) WHERE queue_id = $1 AND id = $2",
    )
    .bind(queue_id)
    .bind(id.0)
    .bind(at)
    .bind(i32::try_from(failures).unwrap_or(i32::MAX))
    .bind(error)
    .execute(ctx.conn())
    .await?;
    Ok(())
}

async fn dead_letter(ctx: &mut Ctx<'_>, queue_id: i64, id: MessageId, failures: u32, error: &str) -> Db<()> {
    sqlx::query(
        "UPDATE messages SET status = 3, failures = $3, last_error = $4, dead_reason = 1, lease_id = NULL \
         WHERE queue_id = $1 AND id = $2",
    )
    .bind(queue_id)
    .bind(id.0)
    .bind(i32::try_from(failures).unwrap_or(i32::MAX))
    .bind(error)
    .execute(ctx.conn())
    .await?;
    Ok(())
}

fn truncate_at_char_boundary(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Moves the lease deadline to now + `by`, in one conditional statement.
pub(crate) async fn extend(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    receipt: &Receipt,
    by: Duration,
) -> Db<Result<Lease, LeaseError>> {
    let Some(meta) = crate::queues::find(ctx, queue).await? else {
        return Ok(Err(LeaseError::MessageNotFound(receipt.message_id)));
    };
    let deadline = ctx.now.saturating_add(by);
    let updated: Option<(i64, i32)> = sqlx::query_as(
        "UPDATE messages SET visible_at = $4 WHERE queue_id = $1 AND id = $2 AND status = 1 AND lease_id = $3 \
         AND visible_at > $5 RETURNING fencing_token, failures",
    )
    .bind(meta.id)
    .bind(receipt.message_id.0)
    .bind(receipt.lease_id.0)
    .bind(deadline.as_millis())
    .bind(ctx.now.as_millis())
    .fetch_optional(ctx.conn())
    .await?;
    let Some((token, failures)) = updated else {
        return Ok(Err(refusal(ctx, meta.id, receipt.message_id).await?));
    };
    Ok(Ok(Lease {
        lease_id: receipt.lease_id,
        fencing_token: FencingToken(to_u64(token)),
        attempt: to_u32(failures) + 1,
        deadline,
    }))
}

/// Reads the state document of a leased message.
pub(crate) async fn get_state(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    receipt: &Receipt,
) -> Db<Result<StateDoc, StateError>> {
    let not_found = LeaseError::MessageNotFound(receipt.message_id);
    let Some(meta) = crate::queues::find(ctx, queue).await? else {
        return Ok(Err(not_found.into()));
    };
    let row = sqlx::query(
        "SELECT status, lease_id, visible_at, state, state_version FROM messages WHERE queue_id = $1 AND id = $2",
    )
    .bind(meta.id)
    .bind(receipt.message_id.0)
    .fetch_optional(ctx.conn())
    .await?;
    let Some(row) = row else {
        return Ok(Err(not_found.into()));
    };
    if !holds(ctx, receipt, row.try_get(0)?, row.try_get(1)?, row.try_get(2)?) {
        return Ok(Err(LeaseError::Stale(receipt.message_id).into()));
    }
    let value = match row.try_get::<Option<String>, _>(3)? {
        Some(text) => serde_json::from_str(&text).map_err(|e| corrupt("state document", e))?,
        None => serde_json::Value::Null,
    };
    let etag = Etag::from_version(to_u64(row.try_get(4)?));
    Ok(Ok(StateDoc { value, etag }))
}

/// Replaces the state document of a leased message, if `if_match` matches.
pub(crate) async fn put_state(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    receipt: &Receipt,
    encoded: &str,
    if_match: Option<&Etag>,
) -> Db<Result<Etag, StateError>> {
    let (meta, leased) = match lock_leased(ctx, queue, receipt).await? {
        Ok(found) => found,
        Err(refused) => return Ok(Err(refused.into())),
    };
    let current = Etag::from_version(leased.state_version);
    if let Some(expected) = if_match {
        if *expected != current {
            return Ok(Err(StateError::EtagMismatch {
                expected: expected.clone(),
                current,
            }));
        }
    }
    let version = leased.state_version + 1;
    sqlx::query("UPDATE messages SET state = $3, state_version = $4 WHERE queue_id = $1 AND id = $2")
        .bind(meta.id)
        .bind(receipt.message_id.0)
        .bind(encoded)
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .execute(ctx.conn())
        .await?;
    Ok(Ok(Etag::from_version(version)))
}

/// Milliseconds of a lease override, as stored in `messages.lease_ms`.
pub(crate) fn lease_ms(lease: Option<Duration>) -> Option<i64> {
    lease.map(ms_i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_cut_at_a_char_boundary() {
        assert_eq!(truncate_at_char_boundary("€€".into(), 4), "€");
        assert_eq!(truncate_at_char_boundary("abc".into(), 3), "abc");
    }
}
