//! An application's outbox, for operators: counts by status, failed messages page by page, and
//! retrying them. Served when the server was given an outbox ([`AppState::with_outbox`]);
//! otherwise these routes answer 404 `outbox_not_configured`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::Json;
use courier_outbox::admin::PAGE_SIZE_MAX;
use courier_outbox::postgres::PgOutbox;
use courier_outbox::sqlite::SqliteOutbox;
use courier_outbox::{FailedMessage, FailedPage, OutboxError, PageRequest, StatusCounts};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::views::PayloadEncoding;

/// What the server needs of an outbox, on either database.
#[async_trait]
pub trait OutboxAdmin: Send + Sync + 'static {
    /// Rows by status.
    async fn counts(&self) -> Result<StatusCounts, OutboxError>;
    /// A page of failed rows in write order.
    async fn list_failed(&self, page: PageRequest) -> Result<FailedPage, OutboxError>;
    /// Puts the failed rows `ids` back to pending; returns how many were failed.
    async fn retry_failed(&self, ids: &[Uuid]) -> Result<u64, OutboxError>;
    /// Puts every failed row back to pending; returns how many.
    async fn retry_all_failed(&self) -> Result<u64, OutboxError>;
}

/// Implements [`OutboxAdmin`] by forwarding to the outbox's own methods of the same names.
macro_rules! forward_admin {
    ($outbox:ty) => {
        #[async_trait]
        impl OutboxAdmin for $outbox {
            async fn counts(&self) -> Result<StatusCounts, OutboxError> {
                <$outbox>::counts(self).await
            }
            async fn list_failed(&self, page: PageRequest) -> Result<FailedPage, OutboxError> {
                <$outbox>::list_failed(self, page).await
            }
            async fn retry_failed(&self, ids: &[Uuid]) -> Result<u64, OutboxError> {
                <$outbox>::retry_failed(self, ids).await
            }
            async fn retry_all_failed(&self) -> Result<u64, OutboxError> {
                <$outbox>::retry_all_failed(self).await
            }
        }
    };
}

forward_admin!(PgOutbox);
forward_admin!(SqliteOutbox);

/// The outbox, or the answer that there is none.
fn outbox(st: &AppState) -> Result<&Arc<dyn OutboxAdmin>, ApiError> {
    st.outbox.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::OutboxNotConfigured,
            "this server has no outbox; start it with --outbox-database",
        )
    })
}

/// Outbox rows by status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OutboxStats {
    /// Waiting to be published, claimed by a relay or not.
    pub pending: u64,
    /// Published and kept by the relay's retention.
    pub published: u64,
    /// Gave up after max attempts; waiting for an operator.
    pub failed: u64,
}

/// Counts of the outbox's rows by status.
#[utoipa::path(get, path = "/v1/outbox/stats", tag = "outbox",
    responses((status = 200, body = OutboxStats), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn stats(State(st): State<AppState>) -> Result<Json<OutboxStats>, ApiError> {
    let c = outbox(&st)?.counts().await?;
    Ok(Json(OutboxStats {
        pending: c.pending,
        published: c.published,
        failed: c.failed,
    }))
}

/// Paging query of the failed listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FailedQuery {
    /// Start after this cursor (a previous page's `next_after`).
    pub after: Option<i64>,
    /// Page size, 1 to 1000. Default 100.
    pub limit: Option<usize>,
    /// How to write payloads. Default `utf8` (base64 for non-text payloads).
    pub payload_encoding: Option<PayloadEncoding>,
}

/// A failed outbox message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FailedView {
    /// The message id publishers pass on.
    pub id: String,
    /// Write order.
    pub seq: i64,
    /// Where it was going.
    pub destination: String,
    /// Its ordering key; it holds back the later messages of its key until retried.
    pub key: Option<String>,
    /// The body, as `payload_encoding` says.
    pub payload: String,
    /// `utf8` or `base64`.
    pub payload_encoding: PayloadEncoding,
    /// Application headers.
    pub headers: BTreeMap<String, String>,
    /// MIME type of the payload.
    pub content_type: Option<String>,
    /// When it was written, epoch ms.
    pub created_at_ms: i64,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When the last attempt was made, epoch ms.
    pub last_attempt_at_ms: Option<i64>,
}

impl FailedView {
    fn new(m: FailedMessage, encoding: PayloadEncoding) -> Self {
        let (payload, payload_encoding) = encoding.encode(&m.payload);
        Self {
            id: m.id.to_string(),
            seq: m.seq,
            destination: m.destination,
            key: m.key,
            payload,
            payload_encoding,
            headers: m.headers,
            content_type: m.content_type,
            created_at_ms: m.created_at.as_millis(),
            attempts: m.attempts,
            last_error: m.last_error,
            last_attempt_at_ms: m.last_attempt_at.map(|t| t.as_millis()),
        }
    }
}

/// A page of failed outbox messages.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FailedList {
    /// The messages, in write order.
    pub messages: Vec<FailedView>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next_after: Option<i64>,
}

/// Outbox messages that reached their max attempts, oldest first.
#[utoipa::path(get, path = "/v1/outbox/failed", tag = "outbox", params(FailedQuery),
    responses((status = 200, body = FailedList), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn failed(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<FailedQuery>,
) -> Result<Json<FailedList>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > PAGE_SIZE_MAX {
        return Err(ApiError::invalid(format!(
            "limit must be 1 to {PAGE_SIZE_MAX}, got {limit}"
        )));
    }
    let page = match q.after {
        Some(after) => PageRequest::after(after, limit),
        None => PageRequest::first(limit),
    };
    let page = outbox(&st)?.list_failed(page).await?;
    let encoding = q.payload_encoding.unwrap_or_default();
    Ok(Json(FailedList {
        messages: page
            .messages
            .into_iter()
            .map(|m| FailedView::new(m, encoding))
            .collect(),
        next_after: page.next_after,
    }))
}

/// Which failed messages to retry: `{}` for all, `{"ids":[...]}` for some.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetryRequest {
    /// Ids to retry (at most 1000); absent means all. Ids not failed are skipped.
    pub ids: Option<Vec<String>>,
}

/// How many failed messages went back to pending.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Retried {
    /// Messages put back to pending, attempts reset.
    pub retried: u64,
}

/// Puts failed outbox messages back to pending, due at once.
#[utoipa::path(post, path = "/v1/outbox/failed/retry", tag = "outbox", request_body = RetryRequest,
    responses((status = 200, body = Retried), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn retry(State(st): State<AppState>, ApiJson(req): ApiJson<RetryRequest>) -> Result<Json<Retried>, ApiError> {
    let outbox = outbox(&st)?;
    let retried = match req.ids {
        None => outbox.retry_all_failed().await?,
        Some(ids) if ids.is_empty() || ids.len() > PAGE_SIZE_MAX => {
            return Err(ApiError::invalid(format!(
                "ids must hold 1 to {PAGE_SIZE_MAX} ids (leave it out to retry all), got {}",
                ids.len()
            )));
        }
        Some(ids) => {
            let ids = ids
                .iter()
                .map(|id| {
                    Uuid::parse_str(id).map_err(|e| ApiError::invalid(format!("ids: {id:?} is not a message id: {e}")))
                })
                .collect::<Result<Vec<Uuid>, ApiError>>()?;
            outbox.retry_failed(&ids).await?
        }
    };
    Ok(Json(Retried { retried }))
}
