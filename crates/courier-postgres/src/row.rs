//! Reading message rows into the core message model.

use bytes::Bytes;
use courier_core::{DeadLetterReason, MessageId, MessageInfo, MessageStatus, Timestamp};
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{corrupt, Db};
use crate::schema::status;

/// The columns [`read_message`] expects, in order, of `messages` aliased `m`.
pub(crate) const MESSAGE_COLUMNS: &str = "m.id, m.status, m.visible_at, m.enqueued_at, m.expires_at, \
     m.failures, m.deliveries, m.max_attempts, m.ordering_group, m.payload, m.content_type, m.attributes, \
     m.correlation_id, m.last_error, m.dead_reason, m.fencing_token, m.lease_id";

/// A message row plus the columns the engine needs beyond the public model.
pub(crate) struct MessageRow {
    pub(crate) info: MessageInfo,
    pub(crate) fencing_token: u64,
    pub(crate) lease_id: Option<Uuid>,
}

/// `messages.dead_reason` of a message whose TTL ran out; 1 is "max attempts".
const DEAD_EXPIRED: i16 = 2;

/// Reads a row selected with [`MESSAGE_COLUMNS`] starting at column `first`; `now` decides
/// ready versus delayed.
pub(crate) fn read_message(row: &PgRow, first: usize, now: Timestamp) -> Db<MessageRow> {
    let col = |i: usize| first + i;
    let visible_at = Timestamp(row.try_get(col(2))?);
    let attributes: Option<String> = row.try_get(col(11))?;
    let attributes = match attributes {
        Some(text) => serde_json::from_str::<Map<String, Value>>(&text).map_err(|e| corrupt("attributes", e))?,
        None => Map::new(),
    };
    let dead_reason: Option<i16> = row.try_get(col(14))?;
    let info = MessageInfo {
        id: MessageId(row.try_get(col(0))?),
        status: status_of(row.try_get(col(1))?, visible_at, now),
        payload: Bytes::from(row.try_get::<Vec<u8>, _>(col(9))?),
        content_type: row.try_get(col(10))?,
        attributes,
        correlation_id: row.try_get(col(12))?,
        ordering_group: row.try_get(col(8))?,
        enqueued_at: Timestamp(row.try_get(col(3))?),
        visible_at,
        expires_at: row.try_get::<Option<i64>, _>(col(4))?.map(Timestamp),
        failures: to_u32(row.try_get(col(5))?),
        deliveries: to_u32(row.try_get(col(6))?),
        max_attempts: to_u32(row.try_get(col(7))?),
        last_error: row.try_get(col(13))?,
        dead_letter_reason: dead_reason.map(|r| match r {
            DEAD_EXPIRED => DeadLetterReason::Expired,
            _ => DeadLetterReason::MaxAttempts,
        }),
    };
    Ok(MessageRow {
        info,
        fencing_token: to_u64(row.try_get(col(15))?),
        lease_id: row.try_get(col(16))?,
    })
}

fn status_of(raw: i16, visible_at: Timestamp, now: Timestamp) -> MessageStatus {
    match raw {
        status::IN_FLIGHT => MessageStatus::InFlight,
        status::BLOCKED => MessageStatus::Blocked,
        status::DEAD => MessageStatus::DeadLettered,
        _ if visible_at > now => MessageStatus::Delayed,
        _ => MessageStatus::Ready,
    }
}

/// Counts stored as `integer` are never negative; clamp defensively instead of panicking.
pub(crate) fn to_u32(v: i32) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(0)
}

/// Tokens and versions stored as `bigint` are never negative; clamp defensively.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v.max(0)).unwrap_or(0)
}

/// Milliseconds as a `bigint` parameter, saturating.
pub(crate) fn ms_i64(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
