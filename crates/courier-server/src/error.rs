//! The one table from error codes to HTTP statuses, and `ApiError`, the response every
//! failure becomes: `{"error":{"code":"...","message":"..."}}`. Core errors map through
//! their `kind()`; only "which thing was not found" looks at the variant.

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use courier_core::{
    EnqueueError, ErrorKind, InvalidInput, LeaseError, NameError, QueueError, StateError, StorageError,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error code the API returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A field breaks a rule (range, size, type).
    InvalidInput,
    /// The body is not JSON.
    MalformedJson,
    /// A namespace or queue name in the path or query breaks the naming rule.
    InvalidName,
    /// The queue does not exist.
    QueueNotFound,
    /// The message does not exist in this queue.
    MessageNotFound,
    /// No such route.
    NotFound,
    /// The route exists, but not with this method.
    MethodNotAllowed,
    /// The lease is stale, expired or unknown.
    LeaseConflict,
    /// The state document changed since the caller read it.
    EtagMismatch,
    /// A payload or request body is over its limit.
    PayloadTooLarge,
    /// The bearer token is missing or wrong.
    Unauthorized,
    /// The server was started without an outbox, so it has none to show.
    OutboxNotConfigured,
    /// The engine cannot serve now, or the server is at its request limit; retry later.
    Unavailable,
    /// A bug or a storage failure.
    Internal,
}

impl ErrorCode {
    /// THE table: each code's HTTP status and its name on the wire.
    pub fn parts(self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input"),
            Self::MalformedJson => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::InvalidName => (StatusCode::BAD_REQUEST, "invalid_name"),
            Self::QueueNotFound => (StatusCode::NOT_FOUND, "queue_not_found"),
            Self::MessageNotFound => (StatusCode::NOT_FOUND, "message_not_found"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::LeaseConflict => (StatusCode::CONFLICT, "lease_conflict"),
            Self::EtagMismatch => (StatusCode::CONFLICT, "etag_mismatch"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::OutboxNotConfigured => (StatusCode::NOT_FOUND, "outbox_not_configured"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The code for a core error kind.
    pub fn from_kind(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidInput => Self::InvalidInput,
            ErrorKind::NotFound => Self::NotFound,
            ErrorKind::LeaseConflict => Self::LeaseConflict,
            ErrorKind::EtagMismatch => Self::EtagMismatch,
            ErrorKind::Unavailable => Self::Unavailable,
            // `ErrorKind` is non-exhaustive: a kind added later is a 500 until it gets a row.
            _ => Self::Internal,
        }
    }
}

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What went wrong, as a code clients branch on.
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A 400 `invalid_input`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }

    /// A 413 `payload_too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, message)
    }

    fn from_kind(kind: ErrorKind, message: String) -> Self {
        Self::new(ErrorCode::from_kind(kind), message)
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `lease_conflict`.
    pub code: String,
    /// Explanation for people.
    pub message: String,
}

impl ApiError {
    /// The body this error is sent as.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.parts().1.to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.code.parts();
        if status.is_server_error() {
            tracing::error!(code, message = %self.message, "request failed");
        } else {
            tracing::debug!(code, message = %self.message, "request refused");
        }
        (status, Json(self.body())).into_response()
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        Self::invalid(e.0)
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::new(ErrorCode::InvalidName, e.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Self::from_kind(e.kind(), e.to_string())
    }
}

impl From<courier_outbox::OutboxError> for ApiError {
    fn from(e: courier_outbox::OutboxError) -> Self {
        Self::from_kind(e.kind(), e.to_string())
    }
}

impl From<EnqueueError> for ApiError {
    fn from(e: EnqueueError) -> Self {
        Self::from_kind(e.kind(), e.to_string())
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let code = match &e {
            QueueError::QueueNotFound(_) => ErrorCode::QueueNotFound,
            QueueError::MessageNotFound(_) => ErrorCode::MessageNotFound,
            other => ErrorCode::from_kind(other.kind()),
        };
        Self::new(code, e.to_string())
    }
}

impl From<LeaseError> for ApiError {
    fn from(e: LeaseError) -> Self {
        let code = match &e {
            LeaseError::MessageNotFound(_) => ErrorCode::MessageNotFound,
            other => ErrorCode::from_kind(other.kind()),
        };
        Self::new(code, e.to_string())
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Lease(lease) => lease.into(),
            other => Self::from_kind(other.kind(), other.to_string()),
        }
    }
}

/// Fallback for unknown routes: a JSON 404, or a 400 naming the problem when the path is a
/// queue route with an empty namespace or queue segment (the router cannot match those).
pub async fn route_not_found(uri: Uri) -> ApiError {
    if let Some(rest) = uri.path().strip_prefix("/v1/queues/") {
        let mut parts = rest.split('/');
        let ns = parts.next().unwrap_or_default();
        let q = parts.next().unwrap_or_default();
        if ns.is_empty() || q.is_empty() {
            if let Err(e) = courier_core::QueueRef::parse(ns, q) {
                return e.into();
            }
        }
    }
    ApiError::new(ErrorCode::NotFound, format!("no route for {}", uri.path()))
}

/// Fallback for a known route called with a method it does not have.
pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not accept {method}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::{MessageId, QueueRef};

    fn check(err: impl Into<ApiError>, status: u16, code: &str) {
        let err = err.into();
        let (s, c) = err.code.parts();
        assert_eq!((s.as_u16(), c), (status, code), "{err:?}");
    }

    #[test]
    fn core_errors_map_to_the_documented_codes() {
        let id = MessageId::from_bytes([0; 16]);
        let queue: QueueRef = "ns/q".parse().expect("valid name");
        check(InvalidInput::new("x"), 400, "invalid_input");
        check(QueueError::QueueNotFound(queue), 404, "queue_not_found");
        check(QueueError::MessageNotFound(id), 404, "message_not_found");
        check(LeaseError::MessageNotFound(id), 404, "message_not_found");
        check(LeaseError::Stale(id), 409, "lease_conflict");
        check(StateError::Lease(LeaseError::Stale(id)), 409, "lease_conflict");
        let mismatch = StateError::EtagMismatch {
            expected: courier_core::Etag::from_version(1),
            current: courier_core::Etag::from_version(2),
        };
        check(mismatch, 409, "etag_mismatch");
        check(StorageError::Unavailable("down".into()), 503, "unavailable");
        check(StorageError::Poisoned("fsync".into()), 500, "internal");
        check(StorageError::Internal("bug".into()), 500, "internal");
        check(EnqueueError::Invalid(InvalidInput::new("x")), 400, "invalid_input");
        check(QueueRef::parse("..", "x").unwrap_err(), 400, "invalid_name");
    }
}
