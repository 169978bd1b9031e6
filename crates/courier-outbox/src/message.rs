//! What an application writes to the outbox ([`OutboxMessage`]) and the limits every write is
//! checked against before anything reaches the database.
//!
//! A message that breaks a limit is refused at write time, in the caller's transaction, rather
//! than failing later in the relay where nobody is waiting for the answer.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::WriteError;

/// Longest destination (queue name, subject, routing key, URL path), in bytes.
pub const DESTINATION_BYTES_MAX: usize = 1024;
/// Longest ordering key, in bytes.
pub const KEY_BYTES_MAX: usize = 256;
/// Longest content type, in bytes.
pub const CONTENT_TYPE_BYTES_MAX: usize = 256;
/// Largest headers object, serialized as JSON, in bytes.
pub const HEADERS_BYTES_MAX: usize = 64 * 1024;
/// Largest payload, in bytes (the same bound Courier's queue engines use).
pub const PAYLOAD_BYTES_MAX: usize = courier_core::limits::PAYLOAD_BYTES_MAX;
/// Most messages in one call of `write`.
pub const WRITE_BATCH_MAX: usize = 10_000;

/// One message to publish once the writing transaction commits.
///
/// ```
/// use courier_outbox::OutboxMessage;
///
/// let message = OutboxMessage::new("orders", r#"{"order":42}"#)
///     .with_key("order-42")
///     .with_header("tenant", "acme")
///     .with_content_type("application/json");
/// assert!(message.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Where it goes; its meaning is the publisher's (a queue name, subject, routing key, …).
    pub destination: String,
    /// Messages with one key are published in write order, one key's failure holding back only
    /// that key; messages without a key are unordered.
    pub key: Option<String>,
    /// The body, opaque bytes.
    pub payload: Bytes,
    /// Application headers, passed to the destination as its headers or attributes.
    pub headers: BTreeMap<String, String>,
    /// MIME type of the payload, if known.
    pub content_type: Option<String>,
}

impl OutboxMessage {
    /// A message for `destination` with this payload, no key, headers or content type.
    pub fn new(destination: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            destination: destination.into(),
            key: None,
            payload: payload.into(),
            headers: BTreeMap::new(),
            content_type: None,
        }
    }

    /// Sets the ordering key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds (or replaces) one header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Checks every field against the limits of this module. PostgreSQL text cannot hold a NUL
    /// character, so text fields refuse it on both databases alike.
    pub fn validate(&self) -> Result<(), String> {
        check_text("destination", &self.destination, DESTINATION_BYTES_MAX)?;
        if let Some(key) = &self.key {
            check_text("key", key, KEY_BYTES_MAX)?;
        }
        if let Some(content_type) = &self.content_type {
            check_text("content_type", content_type, CONTENT_TYPE_BYTES_MAX)?;
        }
        if self.payload.len() > PAYLOAD_BYTES_MAX {
            return Err(format!(
                "payload is {} bytes; the limit is {PAYLOAD_BYTES_MAX}",
                self.payload.len()
            ));
        }
        let headers_bytes = headers_json(&self.headers).len();
        if headers_bytes > HEADERS_BYTES_MAX {
            return Err(format!(
                "headers are {headers_bytes} bytes as JSON; the limit is {HEADERS_BYTES_MAX}"
            ));
        }
        let has_nul = self.headers.iter().any(|(k, v)| k.contains('\0') || v.contains('\0'));
        if has_nul {
            return Err("headers must not contain a NUL character".into());
        }
        Ok(())
    }
}

fn check_text(field: &str, value: &str, bytes_max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.len() > bytes_max {
        return Err(format!("{field} is {} bytes; the limit is {bytes_max}", value.len()));
    }
    if value.contains('\0') {
        return Err(format!("{field} must not contain a NUL character"));
    }
    Ok(())
}

/// Validates a whole write: its size, then each message, naming the first bad one.
pub(crate) fn validate_batch(messages: &[OutboxMessage]) -> Result<(), WriteError> {
    if messages.len() > WRITE_BATCH_MAX {
        return Err(WriteError::TooMany {
            count: messages.len(),
            max: WRITE_BATCH_MAX,
        });
    }
    for (index, message) in messages.iter().enumerate() {
        message
            .validate()
            .map_err(|reason| WriteError::Invalid { index, reason })?;
    }
    Ok(())
}

/// The headers as the JSON object text stored in the `headers` column.
pub(crate) fn headers_json(headers: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes; the fallback only keeps this function total.
    serde_json::to_string(headers).unwrap_or_else(|_| "{}".to_owned())
}

/// Reads a stored `headers` column back. Rows written with plain SQL may hold non-string
/// values; those are passed on as their JSON text rather than dropped.
pub(crate) fn parse_headers(text: &str) -> Result<BTreeMap<String, String>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("headers are not valid JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("headers are not a JSON object".into());
    };
    Ok(map
        .into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(s) => (name, s),
            other => (name, other.to_string()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(message: OutboxMessage, expected: Result<(), &str>) {
        let got = message.validate();
        match expected {
            Ok(()) => assert_eq!(got, Ok(()), "{message:?}"),
            Err(fragment) => {
                let error = got.expect_err("should be refused");
                assert!(error.contains(fragment), "{error:?} should mention {fragment:?}");
            }
        }
    }

    #[test]
    fn limits_are_checked() {
        let ok = || OutboxMessage::new("orders", "x");
        check(ok(), Ok(()));
        check(
            ok().with_key("k").with_header("a", "b").with_content_type("text/plain"),
            Ok(()),
        );
        check(OutboxMessage::new("", "x"), Err("destination must not be empty"));
        check(
            OutboxMessage::new("a".repeat(1025), "x"),
            Err("destination is 1025 bytes"),
        );
        check(ok().with_key(""), Err("key must not be empty"));
        check(ok().with_key("k".repeat(257)), Err("key is 257 bytes"));
        check(ok().with_key("a\0b"), Err("NUL"));
        check(ok().with_content_type(""), Err("content_type must not be empty"));
        check(ok().with_header("a", "b\0"), Err("NUL"));
        check(ok().with_header("h", "v".repeat(70_000)), Err("headers are"));
    }

    #[test]
    fn headers_round_trip_and_tolerate_non_strings() {
        let mut headers = BTreeMap::new();
        headers.insert("a".to_owned(), "1".to_owned());
        assert_eq!(parse_headers(&headers_json(&headers)), Ok(headers));
        let parsed = parse_headers(r#"{"n": 5, "s": "x", "o": {"k": true}}"#).expect("object");
        assert_eq!(parsed["n"], "5");
        assert_eq!(parsed["s"], "x");
        assert_eq!(parsed["o"], r#"{"k":true}"#);
        assert!(parse_headers("[1]").is_err());
        assert!(parse_headers("{").is_err());
    }
}
