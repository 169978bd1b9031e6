//! Reading message rows into the core message model.

use bytes::Bytes;
use courier_core::{DeadLetterReason, MessageId, MessageInfo, MessageStatus, Timestamp};
use rusqlite::Row;

use crate::schema::status;

/// The columns [`read_message`] expects, in order.
pub(crate) const MESSAGE_COLUMNS: &str = "seq, id, status, visible_at, enqueued_at, expires_at, failures, \
     deliveries, max_attempts, ordering_group, payload, content_type, attributes, correlation_id, last_error, \
     dead_reason, lease_ms, fencing_token";

/// A message row plus the columns the engine needs beyond the public model.
pub(crate) struct MessageRow {
    pub(crate) seq: i64,
    pub(crate) info: MessageInfo,
    pub(crate) lease_ms: Option<u64>,
    pub(crate) fencing_token: u64,
}

pub(crate) const DEAD_MAX_ATTEMPTS: i64 = 1;
pub(crate) const DEAD_EXPIRED: i64 = 2;

/// Reads a row selected with [`MESSAGE_COLUMNS`]; `now` decides ready versus delayed.
pub(crate) fn read_message(row: &Row<'_>, now: Timestamp) -> rusqlite::Result<MessageRow> {
    let id: [u8; 16] = row.get(1)?;
    let raw_status: i64 = row.get(2)?;
    let visible_at = Timestamp(row.get(3)?);
    let attributes: Option<String> = row.get(12)?;
    let dead_reason: Option<i64> = row.get(15)?;
    let info = MessageInfo {
        id: MessageId::from_bytes(id),
        status: status_of(raw_status, visible_at, now),
        payload: Bytes::from(row.get::<_, Vec<u8>>(10)?),
        content_type: row.get(11)?,
        attributes: attributes
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_default(),
        correlation_id: row.get(13)?,
        ordering_group: row.get(9)?,
        enqueued_at: Timestamp(row.get(4)?),
        visible_at,
        expires_at: row.get::<_, Option<i64>>(5)?.map(Timestamp),
        failures: to_u32(row.get(6)?),
        deliveries: to_u32(row.get(7)?),
        max_attempts: to_u32(row.get(8)?),
        last_error: row.get(14)?,
        dead_letter_reason: dead_reason.map(|r| match r {
            DEAD_EXPIRED => DeadLetterReason::Expired,
            _ => DeadLetterReason::MaxAttempts,
        }),
    };
    Ok(MessageRow {
        seq: row.get(0)?,
        info,
        lease_ms: row.get::<_, Option<i64>>(16)?.map(|ms| u64::try_from(ms).unwrap_or(0)),
        fencing_token: u64::try_from(row.get::<_, i64>(17)?).unwrap_or(0),
    })
}

fn status_of(raw: i64, visible_at: Timestamp, now: Timestamp) -> MessageStatus {
    match raw {
        status::IN_FLIGHT => MessageStatus::InFlight,
        status::BLOCKED => MessageStatus::Blocked,
        status::DEAD => MessageStatus::DeadLettered,
        _ if visible_at > now => MessageStatus::Delayed,
        _ => MessageStatus::Ready,
    }
}

/// Counts stored as INTEGER are never negative; clamp defensively instead of panicking.
pub(crate) fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// Milliseconds as SQLite's INTEGER.
pub(crate) fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}
