//! Wire types shared by several resources: how a message and a lease look in responses,
//! payload encodings, and the path parameters documented in OpenAPI.
//!
//! These are the server's own DTOs (with `ToSchema`), so `courier-core` stays free of HTTP concerns.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use courier_core::{Delivery, Lease, MessageInfo, Page};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// How a payload is written in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    /// The payload is text. On responses, used only when the bytes are valid UTF-8.
    #[default]
    Utf8,
    /// The payload is standard base64 (with padding).
    Base64,
}

impl PayloadEncoding {
    /// Decodes a payload written in this encoding.
    pub fn decode(self, text: String) -> Result<Vec<u8>, ApiError> {
        match self {
            Self::Utf8 => Ok(text.into_bytes()),
            Self::Base64 => BASE64
                .decode(text.as_bytes())
                .map_err(|e| ApiError::invalid(format!("payload is not valid base64: {e}"))),
        }
    }

    /// Encodes `bytes` as asked; UTF-8 falls back to base64 when the bytes are not text.
    /// Returns the text and the encoding actually used.
    pub fn encode(self, bytes: &[u8]) -> (String, Self) {
        match (self, std::str::from_utf8(bytes)) {
            (Self::Utf8, Ok(text)) => (text.to_owned(), Self::Utf8),
            _ => (BASE64.encode(bytes), Self::Base64),
        }
    }
}

/// A lease as sent to the consumer holding it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    /// Pass back to ack, nack, extend or the state endpoints.
    pub lease_id: String,
    /// Grows with every lease of this message.
    pub fencing_token: u64,
    /// Which attempt this is (failures so far + 1).
    pub attempt: u32,
    /// The lease ends at this time (ms since the epoch) unless extended.
    pub deadline_ms: i64,
}

impl From<Lease> for LeaseView {
    fn from(l: Lease) -> Self {
        Self {
            lease_id: l.lease_id.to_string(),
            fencing_token: l.fencing_token.0,
            attempt: l.attempt,
            deadline_ms: l.deadline.as_millis(),
        }
    }
}

/// A message as seen by a consumer (with its lease) or by a peek (without).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    /// The id (a UUIDv7).
    pub id: String,
    /// `ready`, `delayed`, `in_flight`, `blocked` or `dead_lettered`.
    pub status: String,
    /// The body, written in `payload_encoding`.
    pub payload: String,
    /// How `payload` is written.
    pub payload_encoding: PayloadEncoding,
    /// MIME type given at enqueue.
    pub content_type: Option<String>,
    /// Free-form metadata given at enqueue.
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Correlation id given at enqueue.
    pub correlation_id: Option<String>,
    /// Ordering group given at enqueue.
    pub ordering_group: Option<String>,
    /// Enqueue time, ms since the epoch.
    pub enqueued_at_ms: i64,
    /// When it becomes visible; for an in-flight message, its lease deadline.
    pub visible_at_ms: i64,
    /// When it expires, if it has a TTL.
    pub expires_at_ms: Option<i64>,
    /// For a delivery: which attempt this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Failed attempts so far.
    pub failures: u32,
    /// Leases granted so far.
    pub deliveries: u32,
    /// Failed attempts after which it is dead-lettered.
    pub max_attempts: u32,
    /// The error text of the last failure.
    pub last_error: Option<String>,
    /// `max_attempts` or `expired` for a dead-lettered message.
    pub dead_letter_reason: Option<String>,
    /// For a delivery: the lease the receiver now holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseView>,
}

impl MessageView {
    /// A message seen without a lease.
    pub fn peek(m: MessageInfo, encoding: PayloadEncoding) -> Self {
        let (payload, payload_encoding) = encoding.encode(&m.payload);
        Self {
            id: m.id.to_string(),
            status: wire_name(&m.status),
            payload,
            payload_encoding,
            content_type: m.content_type,
            attributes: m.attributes,
            correlation_id: m.correlation_id,
            ordering_group: m.ordering_group,
            enqueued_at_ms: m.enqueued_at.as_millis(),
            visible_at_ms: m.visible_at.as_millis(),
            expires_at_ms: m.expires_at.map(|t| t.as_millis()),
            attempt: None,
            failures: m.failures,
            deliveries: m.deliveries,
            max_attempts: m.max_attempts,
            last_error: m.last_error,
            dead_letter_reason: m.dead_letter_reason.as_ref().map(wire_name),
            lease: None,
        }
    }

    /// A delivered message with its lease.
    pub fn delivery(d: Delivery, encoding: PayloadEncoding) -> Self {
        let mut view = Self::peek(d.message, encoding);
        view.attempt = Some(d.lease.attempt);
        view.lease = Some(d.lease.into());
        view
    }
}

/// The snake_case name serde gives a unit enum variant (`in_flight`, `max_attempts`).
fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::from("unknown"),
    }
}

/// A page of messages.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    /// The messages, in enqueue order.
    pub messages: Vec<MessageView>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next_after: Option<String>,
}

impl MessagePage {
    /// Renders an engine page.
    pub fn new(page: Page<MessageInfo>, encoding: PayloadEncoding) -> Self {
        Self {
            messages: page.items.into_iter().map(|m| MessageView::peek(m, encoding)).collect(),
            next_after: page.next_after.map(|id| id.to_string()),
        }
    }
}

/// Paging query of message and dead-letter listings.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Start after this message id (exclusive).
    pub after: Option<String>,
    /// Page size, 1 to 1000. Default 100.
    pub limit: Option<usize>,
    /// How to write payloads. Default `utf8` (base64 for non-text payloads).
    pub payload_encoding: Option<PayloadEncoding>,
}

impl ListQuery {
    /// The engine's list options, validated.
    pub fn options(&self) -> Result<courier_core::ListOptions, ApiError> {
        let after = match self.after.as_deref() {
            None | Some("") => None,
            Some(text) => Some(crate::extract::parse_message_id(text)?),
        };
        let defaults = courier_core::ListOptions::default();
        let opts = courier_core::ListOptions {
            after,
            limit: self.limit.unwrap_or(defaults.limit),
        };
        opts.validate()?;
        Ok(opts)
    }
}

/// Path parameters of queue routes.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only read by the OpenAPI derive; handlers use `extract::QueuePath`.
pub struct QueueParams {
    /// Namespace, `[a-z0-9][a-z0-9._-]{0,127}`.
    pub ns: String,
    /// Queue name, `[a-z0-9][a-z0-9._-]{0,127}`.
    pub q: String,
}

/// Path parameters of message routes.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only read by the OpenAPI derive; handlers use `extract::MessagePath`.
pub struct MessageParams {
    /// Namespace.
    pub ns: String,
    /// Queue name.
    pub q: String,
    /// Message id (UUID).
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_falls_back_to_base64_for_binary_payloads() {
        assert_eq!(
            PayloadEncoding::Utf8.encode(b"hi"),
            ("hi".to_owned(), PayloadEncoding::Utf8)
        );
        assert_eq!(
            PayloadEncoding::Utf8.encode(&[0xff, 0x00]),
            ("/wA=".to_owned(), PayloadEncoding::Base64)
        );
        assert_eq!(
            PayloadEncoding::Base64.encode(b"hi"),
            ("aGk=".to_owned(), PayloadEncoding::Base64)
        );
    }

    #[test]
    fn base64_decode_names_the_problem() {
        let err = PayloadEncoding::Base64.decode("not base64!".into()).unwrap_err();
        assert!(err.message.contains("base64"));
    }
}
