//! A message as a CloudEvent in HTTP binary mode: the payload is the body, the attributes
//! are `ce-*` headers (CloudEvents 1.0, HTTP protocol binding 1.0.2).

use courier_core::{OutboundMessage, PublishError};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

/// Attribute names an application header may not take as an extension.
const RESERVED_ATTRIBUTES: [&str; 9] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
];
/// Header names that belong to the HTTP exchange itself, refused as application headers.
const FRAMING_HEADERS: [&str; 6] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "authorization",
];
/// Longest extension name CloudEvents recommends.
const EXTENSION_NAME_CHARS_MAX: usize = 20;

/// The headers of `m` as a binary-mode CloudEvent.
///
/// - `ce-specversion: 1.0`, `ce-id` = outbox id, `ce-source` = `source`, `ce-time` =
///   `created_at` (RFC 3339, UTC, milliseconds), `ce-subject` = key (when there is one),
///   `Content-Type` = content type (when there is one);
/// - `ce-type` = the application header `ce-type` when the message has one (any case),
///   else `default_type`;
/// - every other application header, its name lowercased and a leading `ce-` removed, is
///   sent as extension `ce-<name>` when that name is a valid CloudEvents extension name (1 to
///   20 of `a-z0-9`, not a core attribute); otherwise as a plain HTTP header under its own name.
///   A plain header named like HTTP framing (`Content-Type`, `Host`, `Authorization`, …) or
///   starting with `ce-`, or with a name or value HTTP cannot carry, refuses the message.
///
/// Attribute and extension values are percent-encoded as the binding requires (space, `"`,
/// `%` and everything outside printable ASCII).
pub(crate) fn binary_headers(m: &OutboundMessage, source: &str, default_type: &str) -> Result<HeaderMap, PublishError> {
    let mut headers = HeaderMap::new();
    let mut event_type = default_type;
    for (name, value) in &m.headers {
        let lower = name.to_ascii_lowercase();
        if lower == "ce-type" {
            event_type = value;
            continue;
        }
        let candidate = lower.strip_prefix("ce-").unwrap_or(&lower);
        if is_extension_name(candidate) && !RESERVED_ATTRIBUTES.contains(&candidate) {
            insert_attribute(&mut headers, candidate, value)?;
        } else if lower.starts_with("ce-") || FRAMING_HEADERS.contains(&lower.as_str()) {
            return Err(PublishError::Rejected(format!(
                "header {name:?} cannot be sent: it would read as a CloudEvents attribute or HTTP framing"
            )));
        } else {
            headers.insert(plain_name(name)?, plain_value(name, value)?);
        }
    }
    insert_attribute(&mut headers, "specversion", "1.0")?;
    insert_attribute(&mut headers, "id", &m.id.to_string())?;
    insert_attribute(&mut headers, "source", source)?;
    insert_attribute(&mut headers, "type", event_type)?;
    insert_attribute(&mut headers, "time", &rfc3339_millis(m.created_at.as_millis()))?;
    if let Some(key) = &m.key {
        insert_attribute(&mut headers, "subject", key)?;
    }
    if let Some(content_type) = &m.content_type {
        headers.insert(CONTENT_TYPE, plain_value("Content-Type", content_type)?);
    }
    Ok(headers)
}

fn is_extension_name(name: &str) -> bool {
    (1..=EXTENSION_NAME_CHARS_MAX).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn insert_attribute(headers: &mut HeaderMap, attribute: &str, value: &str) -> Result<(), PublishError> {
    let name = plain_name(&format!("ce-{attribute}"))?;
    let value = HeaderValue::from_str(&percent_encode(value))
        .map_err(|_| PublishError::Rejected(format!("attribute {attribute:?} cannot be encoded")))?;
    headers.insert(name, value);
    Ok(())
}

fn plain_name(name: &str) -> Result<HeaderName, PublishError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| PublishError::Rejected(format!("header name {name:?} is not valid in HTTP")))
}

/// A header value of visible ASCII, spaces and tabs. `HeaderValue` also takes bytes above
/// 0x7F (obsolete in HTTP, read as Latin-1 by some receivers), so they are refused here.
fn plain_value(name: &str, value: &str) -> Result<HeaderValue, PublishError> {
    let refused = || {
        PublishError::Rejected(format!(
            "header {name:?} has a value HTTP cannot carry (only visible ASCII)"
        ))
    };
    if !value.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b)) {
        return Err(refused());
    }
    HeaderValue::from_str(value).map_err(|_| refused())
}

/// Percent-encodes space, `"`, `%` and every byte outside printable ASCII.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `2023-11-14T22:13:20.000Z` for milliseconds since the Unix epoch (UTC, proleptic Gregorian).
pub(crate) fn rfc3339_millis(ms: i64) -> String {
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (second_of_day / 3600, second_of_day % 3600 / 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use courier_core::Timestamp;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        let check = |ms: i64, expected: &str| assert_eq!(rfc3339_millis(ms), expected, "{ms}");
        check(0, "1970-01-01T00:00:00.000Z");
        check(1_700_000_000_123, "2023-11-14T22:13:20.123Z");
        check(951_782_400_000, "2000-02-29T00:00:00.000Z");
        check(4_107_542_400_000, "2100-03-01T00:00:00.000Z");
        check(-1, "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn values_are_percent_encoded_as_the_binding_says() {
        assert_eq!(percent_encode("plain-value_1.0"), "plain-value_1.0");
        assert_eq!(percent_encode("a b\"c%d"), "a%20b%22c%25d");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    fn message(headers: &[(&str, &str)]) -> OutboundMessage {
        OutboundMessage {
            id: Uuid::nil(),
            destination: "d".into(),
            key: Some("order 7".into()),
            payload: Bytes::new(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            content_type: Some("application/json".into()),
            created_at: Timestamp(0),
        }
    }

    #[test]
    fn headers_become_attributes_extensions_or_plain_headers() {
        let h = binary_headers(
            &message(&[
                ("Tenant", "acme"),
                ("Trace-Id", "t-1"),
                ("ce-Type", "order.created"),
                ("ce-region", "eu 1"),
            ]),
            "/shop",
            "courier.message",
        )
        .unwrap();
        let get = |name: &str| h.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(get("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(get("ce-id"), Some(Uuid::nil().to_string()));
        assert_eq!(get("ce-source").as_deref(), Some("/shop"));
        assert_eq!(get("ce-type").as_deref(), Some("order.created"));
        assert_eq!(get("ce-time").as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(get("ce-subject").as_deref(), Some("order%207"));
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
        assert_eq!(get("ce-tenant").as_deref(), Some("acme"));
        assert_eq!(get("ce-region").as_deref(), Some("eu%201"));
        assert_eq!(get("trace-id").as_deref(), Some("t-1"));
        assert_eq!(h.len(), 10);
    }

    #[test]
    fn headers_http_cannot_carry_or_that_would_be_misread_refuse_the_message() {
        for bad in [
            ("Content-Type", "x"),
            ("ce-not_valid", "x"),
            ("bad name", "x"),
            ("Trace-Id", "é"),
            ("ce-id", "x"),
        ] {
            let e = binary_headers(&message(&[bad]), "/s", "t").unwrap_err();
            assert!(matches!(e, PublishError::Rejected(_)), "{bad:?}: {e:?}");
        }
    }
}
