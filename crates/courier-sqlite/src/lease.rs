//! Operations that need a valid lease: ack, nack, extend and the state document; plus the
//! ordering-group bookkeeping they trigger.

use std::time::Duration;

use courier_core::limits::ERROR_TEXT_BYTES_MAX;
use courier_core::{
    Etag, FencingToken, Lease, LeaseError, MessageId, NackIntent, QueueRef, Receipt, StateDoc, StateError, Timestamp,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::error::{storage, SqlResult};
use crate::row::{to_u32, DEAD_MAX_ATTEMPTS};
use crate::schema::status;
use crate::writer::{Ctx, QueueMeta};

/// The columns of a message that lease checks and settlement need.
struct Leased {
    seq: i64,
    failures: u32,
    max_attempts: u32,
    group: Option<String>,
    fencing_token: u64,
    state: Option<String>,
    state_version: u64,
}

/// Loads the message behind `receipt` and checks that the lease on it is valid now.
fn check_lease(ctx: &mut Ctx<'_>, queue: &QueueRef, receipt: &Receipt) -> Result<(QueueMeta, Leased), LeaseError> {
    let not_found = || LeaseError::MessageNotFound(receipt.message_id);
    let meta = crate::queues::find(ctx, queue)?.ok_or_else(not_found)?;
    type Fetched = (
        i64,
        i64,
        i64,
        i64,
        Option<[u8; 16]>,
        i64,
        i64,
        Option<String>,
        i64,
        Option<String>,
        i64,
    );
    let row: Option<Fetched> = ctx
        .conn
        .prepare_cached(
            "SELECT seq, queue_id, status, visible_at, lease_id, failures, max_attempts, ordering_group, \
             fencing_token, state, state_version FROM messages WHERE seq = ?1 AND id = ?2",
        )
        .and_then(|mut s| {
            s.query_row(
                params![receipt.message_id.sequence(), &receipt.message_id.as_bytes()[..]],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                    ))
                },
            )
            .optional()
        })
        .map_err(storage)?;
    let (seq, queue_id, st, deadline, lease_id, failures, max_attempts, group, token, state, version) =
        row.ok_or_else(not_found)?;
    if queue_id != meta.id {
        return Err(not_found());
    }
    let holds = st == status::IN_FLIGHT
        && lease_id.map(uuid::Uuid::from_bytes) == Some(receipt.lease_id.0)
        && ctx.now.as_millis() < deadline;
    if !holds {
        return Err(LeaseError::Stale(receipt.message_id));
    }
    Ok((
        meta,
        Leased {
            seq,
            failures: to_u32(failures),
            max_attempts: to_u32(max_attempts),
            group,
            fencing_token: u64::try_from(token).unwrap_or(0),
            state,
            state_version: u64::try_from(version).unwrap_or(0),
        },
    ))
}

/// Acks each receipt independently.
pub(crate) fn ack_many(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    receipts: &[Receipt],
) -> SqlResult<Vec<Result<(), LeaseError>>> {
    let mut out = Vec::with_capacity(receipts.len());
    for receipt in receipts {
        match ack(ctx, queue, receipt) {
            Err(LeaseError::Storage(e)) => return Err(e),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Deletes the message if the receipt's lease is current, in one statement; only a refused
/// ack pays for a second lookup that tells "unknown message" from "stale lease".
fn ack(ctx: &mut Ctx<'_>, queue: &QueueRef, receipt: &Receipt) -> Result<(), LeaseError> {
    let not_found = || LeaseError::MessageNotFound(receipt.message_id);
    let meta = crate::queues::find(ctx, queue)?.ok_or_else(not_found)?;
    let deleted: Option<Option<String>> = ctx
        .conn
        .prepare_cached(
            "DELETE FROM messages WHERE seq = ?6 AND id = ?1 AND queue_id = ?2 AND status = ?3 \
             AND lease_id = ?4 AND visible_at > ?5 RETURNING ordering_group",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    &receipt.message_id.as_bytes()[..],
                    meta.id,
                    status::IN_FLIGHT,
                    &receipt.lease_id.0.as_bytes()[..],
                    ctx.now.as_millis(),
                    receipt.message_id.sequence()
                ],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(storage)?;
    match deleted {
        Some(group) => {
            if let Some(group) = group {
                if promote_group(ctx.conn, meta.id, &group)? {
                    ctx.wake(queue);
                }
            }
            Ok(())
        }
        None => match seq_of(ctx.conn, meta.id, receipt.message_id)? {
            Some(_) => Err(LeaseError::Stale(receipt.message_id)),
            None => Err(not_found()),
        },
    }
}

/// Returns a leased message to the queue as a failure or a deferral.
pub(crate) fn nack(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    receipt: &Receipt,
    intent: NackIntent,
) -> Result<(), LeaseError> {
    let (meta, leased) = check_lease(ctx, queue, receipt)?;
    match intent {
        NackIntent::Defer { delay } => {
            retry_at(
                ctx.conn,
                leased.seq,
                leased.failures,
                None,
                ctx.now.saturating_add(delay),
            )?;
        }
        NackIntent::Failure { error, delay } => {
            let failures = leased.failures + 1;
            let error = truncate_at_char_boundary(error, ERROR_TEXT_BYTES_MAX);
            debug_assert!(
                leased.failures < leased.max_attempts,
                "a leased message is below its attempt limit"
            );
            if failures >= leased.max_attempts {
                dead_letter(ctx.conn, leased.seq, failures, &error)?;
                if let Some(group) = &leased.group {
                    promote_group(ctx.conn, meta.id, group)?;
                }
            } else {
                let delay = delay.unwrap_or_else(|| meta.policy.retry_delay(failures));
                retry_at(
                    ctx.conn,
                    leased.seq,
                    failures,
                    Some(&error),
                    ctx.now.saturating_add(delay),
                )?;
            }
        }
    }
    ctx.wake(queue);
    Ok(())
}

fn retry_at(conn: &Connection, seq: i64, failures: u32, error: Option<&str>, at: Timestamp) -> SqlResult<()> {
    conn.prepare_cached(
        "UPDATE messages SET status = ?2, visible_at = ?3, failures = ?4, lease_id = NULL, \
         last_error = COALESCE(?5, last_error) WHERE seq = ?1",
    )
    .and_then(|mut s| s.execute(params![seq, status::READY, at.as_millis(), failures, error]))
    .map_err(storage)?;
    Ok(())
}

fn dead_letter(conn: &Connection, seq: i64, failures: u32, error: &str) -> SqlResult<()> {
    conn.prepare_cached(
        "UPDATE messages SET status = ?2, failures = ?3, last_error = ?4, dead_reason = ?5, lease_id = NULL \
         WHERE seq = ?1",
    )
    .and_then(|mut s| s.execute(params![seq, status::DEAD, failures, error, DEAD_MAX_ATTEMPTS]))
    .map_err(storage)?;
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

/// Moves the lease deadline to now + `by`.
pub(crate) fn extend(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    receipt: &Receipt,
    by: Duration,
) -> Result<Lease, LeaseError> {
    let (_, leased) = check_lease(ctx, queue, receipt)?;
    let deadline = ctx.now.saturating_add(by);
    ctx.conn
        .prepare_cached("UPDATE messages SET visible_at = ?2 WHERE seq = ?1")
        .and_then(|mut s| s.execute(params![leased.seq, deadline.as_millis()]))
        .map_err(storage)?;
    Ok(Lease {
        lease_id: receipt.lease_id,
        fencing_token: FencingToken(leased.fencing_token),
        attempt: leased.failures + 1,
        deadline,
    })
}

/// Reads the state document of a leased message.
pub(crate) fn get_state(ctx: &mut Ctx<'_>, queue: &QueueRef, receipt: &Receipt) -> Result<StateDoc, StateError> {
    let (_, leased) = check_lease(ctx, queue, receipt)?;
    let value = match leased.state {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| LeaseError::Storage(courier_core::StorageError::Internal(format!("stored state: {e}"))))?,
        None => Value::Null,
    };
    Ok(StateDoc {
        value,
        etag: Etag::from_version(leased.state_version),
    })
}

/// Replaces the state document of a leased message, if `if_match` matches.
pub(crate) fn put_state(
    ctx: &mut Ctx<'_>,
    queue: &QueueRef,
    receipt: &Receipt,
    encoded: String,
    if_match: Option<Etag>,
) -> Result<Etag, StateError> {
    let (_, leased) = check_lease(ctx, queue, receipt)?;
    let current = Etag::from_version(leased.state_version);
    if let Some(expected) = if_match {
        if expected != current {
            return Err(StateError::EtagMismatch { expected, current });
        }
    }
    let version = leased.state_version + 1;
    ctx.conn
        .prepare_cached("UPDATE messages SET state = ?2, state_version = ?3 WHERE seq = ?1")
        .and_then(|mut s| s.execute(params![leased.seq, encoded, i64::try_from(version).unwrap_or(i64::MAX)]))
        .map_err(storage)?;
    Ok(Etag::from_version(version))
}

/// Whether `group` has a message that is not dead-lettered.
pub(crate) fn group_has_live_message(conn: &Connection, queue_id: i64, group: &str) -> SqlResult<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE queue_id = ?1 AND ordering_group = ?2 AND status IN (?3, ?4, ?5))",
    )
    .and_then(|mut s| {
        s.query_row(
            params![queue_id, group, status::READY, status::IN_FLIGHT, status::BLOCKED],
            |r| r.get(0),
        )
    })
    .map_err(storage)
}

/// When `group` has no active message, makes its oldest blocked one active.
/// Returns whether a message was promoted.
pub(crate) fn promote_group(conn: &Connection, queue_id: i64, group: &str) -> SqlResult<bool> {
    let active: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE queue_id = ?1 AND ordering_group = ?2 AND status IN (?3, ?4))",
        )
        .and_then(|mut s| s.query_row(params![queue_id, group, status::READY, status::IN_FLIGHT], |r| r.get(0)))
        .map_err(storage)?;
    if active {
        return Ok(false);
    }
    let changed = conn
        .prepare_cached(
            "UPDATE messages SET status = ?3 WHERE seq = (SELECT seq FROM messages \
             WHERE queue_id = ?1 AND ordering_group = ?2 AND status = ?4 ORDER BY seq LIMIT 1)",
        )
        .and_then(|mut s| s.execute(params![queue_id, group, status::READY, status::BLOCKED]))
        .map_err(storage)?;
    Ok(changed > 0)
}

/// Finds a message's row by id within a queue.
pub(crate) fn seq_of(conn: &Connection, queue_id: i64, id: MessageId) -> SqlResult<Option<(i64, i64)>> {
    conn.prepare_cached("SELECT seq, status FROM messages WHERE seq = ?3 AND id = ?1 AND queue_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![&id.as_bytes()[..], queue_id, id.sequence()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(storage)
}
