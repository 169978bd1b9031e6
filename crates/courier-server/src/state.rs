//! The per-message state document: read and compare-and-swap write by a lease holder.
//!
//! The lease travels in the `X-Courier-Lease` header (or `?lease_id=`); the version in
//! `ETag` / `If-Match`, quoted as HTTP wants, while JSON bodies carry it bare (`"v3"`).

use axum::extract::State;
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::Json;
use courier_core::{Etag, LeaseId, Receipt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiQuery, MessagePath, RawBody};
use crate::views::MessageParams;

/// Header that carries the lease id.
pub const LEASE_HEADER: &str = "x-courier-lease";

/// The lease, when not sent in the header.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LeaseQuery {
    /// Lease id; the `X-Courier-Lease` header takes precedence.
    pub lease_id: Option<String>,
}

/// A state document and its version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StateView {
    /// The document; `null` until first written.
    #[schema(value_type = Object)]
    pub value: Value,
    /// Its version, e.g. `v3`; send as `If-Match` to write.
    pub etag: String,
}

/// The version a write produced.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EtagView {
    /// The new version.
    pub etag: String,
}

/// Reads a leased message's state document.
#[utoipa::path(get, path = "/v1/queues/{ns}/{q}/messages/{id}/state", tag = "state", params(MessageParams, LeaseQuery,
        ("X-Courier-Lease" = Option<String>, Header, description = "The lease id")),
    responses((status = 200, body = StateView, headers(("ETag" = String))), (status = 409, body = ErrorBody),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    path: MessagePath,
    ApiQuery(q): ApiQuery<LeaseQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let receipt = Receipt {
        message_id: path.id,
        lease_id: lease_id(&headers, &q)?,
    };
    let doc = st.engine.get_state(&path.queue, &receipt).await?;
    let etag = etag_header(&doc.etag)?;
    let view = StateView {
        value: doc.value,
        etag: doc.etag.0,
    };
    Ok((AppendHeaders([(ETAG, etag)]), Json(view)).into_response())
}

/// Replaces a leased message's state document; with `If-Match`, only from that version.
#[utoipa::path(put, path = "/v1/queues/{ns}/{q}/messages/{id}/state", tag = "state", params(MessageParams, LeaseQuery,
        ("X-Courier-Lease" = Option<String>, Header, description = "The lease id"),
        ("If-Match" = Option<String>, Header, description = "Write only if the current etag is this")),
    request_body(content = Object, description = "Any JSON document, at most 256 KiB"),
    responses((status = 200, body = EtagView, headers(("ETag" = String))), (status = 409, body = ErrorBody),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn put(
    State(st): State<AppState>,
    path: MessagePath,
    ApiQuery(q): ApiQuery<LeaseQuery>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let receipt = Receipt {
        message_id: path.id,
        lease_id: lease_id(&headers, &q)?,
    };
    let value: Value = parse_json(&body)?;
    let if_match = if_match(&headers)?;
    let etag = st.engine.put_state(&path.queue, &receipt, value, if_match).await?;
    let header = etag_header(&etag)?;
    Ok((AppendHeaders([(ETAG, header)]), Json(EtagView { etag: etag.0 })).into_response())
}

fn lease_id(headers: &HeaderMap, q: &LeaseQuery) -> Result<LeaseId, ApiError> {
    let text = match headers.get(LEASE_HEADER) {
        Some(v) => v
            .to_str()
            .map_err(|_| ApiError::invalid("X-Courier-Lease header is not visible ASCII"))?,
        None => q.lease_id.as_deref().ok_or_else(|| {
            ApiError::invalid("a lease id is required: X-Courier-Lease header or lease_id query parameter")
        })?,
    };
    text.parse()
        .map_err(|_| ApiError::invalid(format!("lease id {text:?} is not a UUID")))
}

/// The `If-Match` etag without its quotes; `*` (any version) is the same as no condition.
fn if_match(headers: &HeaderMap) -> Result<Option<Etag>, ApiError> {
    let Some(v) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::invalid("If-Match header is not visible ASCII"))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    Ok(Some(Etag(bare.to_owned())))
}

fn etag_header(etag: &Etag) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!("\"{}\"", etag.0))
        .map_err(|_| ApiError::new(crate::error::ErrorCode::Internal, "engine produced an unprintable etag"))
}
