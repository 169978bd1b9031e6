//! Extractors whose rejections are `ApiError`s, so axum's plain-text rejections never reach
//! a client: JSON bodies, query strings, raw bodies, and validated queue and message paths.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use courier_core::{MessageId, QueueRef};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// A JSON body. Syntax errors are `malformed_json`, wrong fields or types are
/// `invalid_input` with serde's message, and an empty body reads as `{}` so that
/// `POST .../receive` with no body uses every default.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = RawBody::from_request(req, state).await?.0;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse_json(body).map(Self)
    }
}

/// Parses a JSON body, mapping serde's error categories to our codes.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => ErrorCode::InvalidInput,
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => ErrorCode::MalformedJson,
            serde_json::error::Category::Io => ErrorCode::Internal,
        };
        ApiError::new(code, format!("request body: {e}"))
    })
}

/// The request body as bytes, within the route's body limit (413 `payload_too_large` beyond it).
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(Self).map_err(body_rejection)
    }
}

fn body_rejection(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!("request body is over this route's limit: {}", e.body_text()))
    } else {
        ApiError::invalid(format!("cannot read request body: {}", e.body_text()))
    }
}

/// A query string; unknown or mistyped parameters are `invalid_input`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// The `{ns}/{q}` of a queue route, validated: 400 `invalid_name` naming the problem.
#[derive(Debug)]
pub struct QueuePath(pub QueueRef);

impl<S: Send + Sync> FromRequestParts<S> for QueuePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = path_params(parts, state).await?;
        queue_from(&params).map(Self)
    }
}

/// The `{ns}/{q}` and `{id}` of a message route, validated.
#[derive(Debug)]
pub struct MessagePath {
    /// The queue.
    pub queue: QueueRef,
    /// The message.
    pub id: MessageId,
}

impl<S: Send + Sync> FromRequestParts<S> for MessagePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = path_params(parts, state).await?;
        let queue = queue_from(&params)?;
        let id = parse_message_id(param(&params, "id"))?;
        Ok(Self { queue, id })
    }
}

async fn path_params<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<Vec<(String, String)>, ApiError> {
    Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map(|p| p.0)
        .map_err(|e| ApiError::new(ErrorCode::InvalidName, format!("path: {}", e.body_text())))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
}

fn queue_from(params: &[(String, String)]) -> Result<QueueRef, ApiError> {
    Ok(QueueRef::parse(param(params, "ns"), param(params, "q"))?)
}

/// Parses a message id, naming the bad value.
pub fn parse_message_id(text: &str) -> Result<MessageId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid(format!("message id {text:?} is not a UUID")))
}
