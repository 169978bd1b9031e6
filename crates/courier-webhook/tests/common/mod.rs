//! What both HTTP publishers' tests build: outbound messages.

use std::collections::BTreeMap;

use bytes::Bytes;
use courier_core::{OutboundMessage, Timestamp};
use uuid::Uuid;

pub(crate) fn message(destination: &str, key: Option<&str>, payload: &[u8]) -> OutboundMessage {
    OutboundMessage {
        id: Uuid::new_v4(),
        destination: destination.to_owned(),
        key: key.map(str::to_owned),
        payload: Bytes::copy_from_slice(payload),
        headers: BTreeMap::new(),
        content_type: None,
        created_at: Timestamp(1_700_000_000_000),
    }
}
