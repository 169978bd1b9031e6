//! Retry logic for HTTP pushes, as Knative's: which answers count as delivered, which may heal
//! by themselves (`Unavailable`) and which are refusals (`Rejected`). Both HTTP publishers use
//! the same policy, so it is two functions rather than a trait with a single implementation.

use std::error::Error as _;

use courier_core::PublishError;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode};

/// How much of an error body is quoted in the error message, in bytes.
const BODY_QUOTED_BYTES_MAX: usize = 300;
/// How much of a response body is read (and dropped) so the connection can be reused; a
/// longer body closes the connection instead.
const BODY_DRAINED_BYTES_MAX: usize = 64 * 1024;

/// What an answer means for the message: 2xx delivered; 408, 409, 429 and 5xx may heal
/// (`Unavailable`, with `Retry-After` quoted when the receiver sent one: the relay's backoff,
/// not this header, decides when to try again); every other status is a refusal (`Rejected`),
/// 3xx included, since redirects are not followed (a POST must not turn into a GET).
pub(crate) fn classify_status(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<(), PublishError> {
    if status.is_success() {
        return Ok(());
    }
    let mut detail = format!("HTTP {status}");
    if let Some(after) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        detail.push_str(&format!(" (Retry-After: {after})"));
    }
    if !body.is_empty() {
        let quoted = &body[..body.len().min(BODY_QUOTED_BYTES_MAX)];
        detail.push_str(&format!(": {}", String::from_utf8_lossy(quoted).trim()));
    }
    match status.as_u16() {
        408 | 409 | 429 | 500..=599 => Err(PublishError::Unavailable(detail)),
        _ => Err(PublishError::Rejected(detail)),
    }
}

/// A request that got no answer (refused, reset, timed out) may heal: `Unavailable`, with
/// the cause chain, since reqwest's own message alone ("error sending request") hides it.
pub(crate) fn classify_transport(error: &reqwest::Error) -> PublishError {
    let mut detail = if error.is_timeout() {
        format!("no answer in time: {error}")
    } else {
        error.to_string()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    PublishError::Unavailable(detail)
}

/// Reads the start of the body for error messages, draining a little more so the connection
/// can be reused.
pub(crate) async fn read_body_start(response: &mut Response) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut read = 0;
    while read < BODY_DRAINED_BYTES_MAX {
        let Ok(Some(chunk)) = response.chunk().await else {
            break;
        };
        read += chunk.len();
        let room = BODY_QUOTED_BYTES_MAX.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: u16, expected: &str) {
        let outcome = classify_status(StatusCode::from_u16(status).unwrap(), &HeaderMap::new(), b"why");
        let got = match outcome {
            Ok(()) => "ok",
            Err(PublishError::Unavailable(_)) => "unavailable",
            Err(PublishError::Rejected(_)) => "rejected",
        };
        assert_eq!(got, expected, "HTTP {status}");
    }

    #[test]
    fn statuses_are_classified_like_knative() {
        for s in [200, 201, 202, 204] {
            check(s, "ok");
        }
        for s in [408, 409, 429, 500, 501, 502, 503, 504] {
            check(s, "unavailable");
        }
        for s in [301, 302, 307, 400, 401, 403, 404, 405, 410, 413, 415, 422] {
            check(s, "rejected");
        }
    }

    #[test]
    fn the_message_quotes_status_retry_after_and_body() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        let e = classify_status(StatusCode::SERVICE_UNAVAILABLE, &headers, b" busy \n").unwrap_err();
        assert_eq!(
            e,
            PublishError::Unavailable("HTTP 503 Service Unavailable (Retry-After: 7): busy".into())
        );
    }
}
