//! Cross-cutting request guards: the bearer-token check and the in-flight request limit.
//!
//! Both answer with the same JSON errors as the handlers (401 `unauthorized`,
//! 503 `unavailable`), so a client never sees a different error shape.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ErrorCode};

/// Paths that answer without a token, so probes need no secret.
const PUBLIC_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Refuses requests without `Authorization: Bearer <token>` when a token is configured.
pub async fn require_token(State(token): State<Option<Arc<str>>>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    if PUBLIC_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme name is case-insensitive (RFC 9110 section 11.1); the token is not.
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token));
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::new(ErrorCode::Unauthorized, "the bearer token is wrong").into_response(),
        None => ApiError::new(
            ErrorCode::Unauthorized,
            "this server needs an Authorization: Bearer <token> header",
        )
        .into_response(),
    }
}

/// Compares without an early exit, so the time taken does not reveal how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        // Walk all of `a` even when lengths differ; index `b` cyclically to stay in bounds.
        let y = if b.is_empty() { 0 } else { b[i % b.len()] };
        diff |= x ^ y;
    }
    diff == 0
}

/// Sheds load: past the limit a request gets 503 at once instead of queueing without bound.
pub async fn limit_in_flight(State(permits): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    match permits.try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::new(ErrorCode::Unavailable, "too many requests in flight; retry later").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_matches_only_equal_strings() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret2", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"secret", b""));
        assert!(constant_time_eq(b"", b""));
    }
}
