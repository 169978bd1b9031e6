//! Consuming: receive (with long poll) and settling leases with ack, batch ack, nack and
//! extend. Every settle names its lease; a stale one is 409 `lease_conflict` and changes nothing.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use courier_core::{limits, LeaseId, MessageId, NackIntent, Receipt, ReceiveOptions};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, MessagePath, QueuePath};
use crate::views::{LeaseView, MessageParams, MessageView, PayloadEncoding, QueueParams};

/// Options of a receive. An empty body takes every default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiveRequest {
    /// 1 to 1000. Default 1.
    pub max_messages: usize,
    /// Long-poll up to this long for a first message, 0 to 60000. Default 0.
    pub wait_ms: u64,
    /// Lease to grant; default the message's, else the queue's.
    pub lease_ms: Option<u64>,
    /// `utf8` (default; base64 for non-text payloads) or `base64`.
    pub payload_encoding: PayloadEncoding,
}

impl Default for ReceiveRequest {
    fn default() -> Self {
        Self {
            max_messages: 1,
            wait_ms: 0,
            lease_ms: None,
            payload_encoding: PayloadEncoding::default(),
        }
    }
}

/// The leased messages; empty when none was ready within the wait.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReceiveResponse {
    /// The deliveries, each with its lease.
    pub messages: Vec<MessageView>,
}

/// Leases ready messages, waiting up to `wait_ms` for a first one.
#[utoipa::path(post, path = "/v1/queues/{ns}/{q}/receive", tag = "leases", params(QueueParams),
    request_body = ReceiveRequest,
    responses((status = 200, body = ReceiveResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn receive(
    State(st): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiJson(req): ApiJson<ReceiveRequest>,
) -> Result<Json<ReceiveResponse>, ApiError> {
    let opts = ReceiveOptions {
        max_messages: req.max_messages,
        wait: Duration::from_millis(req.wait_ms),
        lease: req.lease_ms.map(Duration::from_millis),
    };
    opts.validate()?;
    let batch = st.engine.receive(&queue, &opts).await?;
    debug_assert!(batch.deliveries.len() <= opts.max_messages);
    let messages = batch
        .deliveries
        .into_iter()
        .map(|d| MessageView::delivery(d, req.payload_encoding))
        .collect();
    Ok(Json(ReceiveResponse { messages }))
}

/// Names the lease being settled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The lease id from the receive.
    #[schema(value_type = String)]
    pub lease_id: LeaseId,
}

/// The outcome of settling one message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Settled {
    /// The message.
    pub id: String,
    /// `acked` or `nacked`.
    pub status: String,
}

fn settled(id: MessageId, status: &str) -> Json<Settled> {
    Json(Settled {
        id: id.to_string(),
        status: status.to_owned(),
    })
}

/// Acks a message: it and its state document are deleted.
#[utoipa::path(post, path = "/v1/queues/{ns}/{q}/messages/{id}/ack", tag = "leases", params(MessageParams),
    request_body = AckRequest,
    responses((status = 200, body = Settled), (status = 409, body = ErrorBody),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn ack(
    State(st): State<AppState>,
    path: MessagePath,
    ApiJson(req): ApiJson<AckRequest>,
) -> Result<Json<Settled>, ApiError> {
    let receipt = Receipt {
        message_id: path.id,
        lease_id: req.lease_id,
    };
    st.engine.ack(&path.queue, &receipt).await?;
    Ok(settled(path.id, "acked"))
}

/// One receipt of a batch ack.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptInput {
    /// The message id.
    #[schema(value_type = String)]
    pub message_id: MessageId,
    /// The lease id.
    #[schema(value_type = String)]
    pub lease_id: LeaseId,
}

/// Several receipts to ack; each succeeds or fails on its own.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBatchRequest {
    /// 1 to 1000 receipts.
    pub receipts: Vec<ReceiptInput>,
}

/// The outcome of one receipt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AckResult {
    /// The message id.
    pub message_id: String,
    /// Whether it was acked.
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::ErrorDetail>,
}

/// Results in request order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AckBatchResponse {
    /// One per receipt.
    pub results: Vec<AckResult>,
}

/// Acks many messages; a stale or unknown receipt fails alone.
#[utoipa::path(post, path = "/v1/queues/{ns}/{q}/messages/ack", tag = "leases", params(QueueParams),
    request_body = AckBatchRequest,
    responses((status = 200, body = AckBatchResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn ack_batch(
    State(st): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiJson(req): ApiJson<AckBatchRequest>,
) -> Result<Json<AckBatchResponse>, ApiError> {
    let len = req.receipts.len();
    if len == 0 || len > limits::RECEIVE_BATCH_MAX {
        return Err(ApiError::invalid(format!(
            "receipts must hold 1 to {} items, got {len}",
            limits::RECEIVE_BATCH_MAX
        )));
    }
    let receipts: Vec<Receipt> = req
        .receipts
        .iter()
        .map(|r| Receipt {
            message_id: r.message_id,
            lease_id: r.lease_id,
        })
        .collect();
    let outcomes = st.engine.ack_many(&queue, &receipts).await?;
    debug_assert_eq!(outcomes.len(), receipts.len(), "one outcome per receipt");
    let results = receipts
        .iter()
        .zip(outcomes)
        .map(|(r, outcome)| AckResult {
            message_id: r.message_id.to_string(),
            ok: outcome.is_ok(),
            error: outcome.err().map(|e| ApiError::from(e).body().error),
        })
        .collect();
    Ok(Json(AckBatchResponse { results }))
}

/// Whether a nack counts as a failed attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NackKind {
    /// Counts toward max attempts (default).
    #[default]
    Failure,
    /// Not now; does not count.
    Defer,
}

/// Gives a leased message back.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    /// The lease id.
    #[schema(value_type = String)]
    pub lease_id: LeaseId,
    /// `failure` (default) or `defer`.
    #[serde(default)]
    pub intent: NackKind,
    /// What went wrong (failure only; kept up to 4 KiB).
    pub error: Option<String>,
    /// When to retry. For a failure, default the queue's backoff; for a defer, default 0.
    pub delay_ms: Option<u64>,
}

impl NackRequest {
    fn intent(&self) -> Result<NackIntent, ApiError> {
        let intent = match self.intent {
            NackKind::Failure => NackIntent::Failure {
                error: self.error.clone().unwrap_or_else(|| String::from("nacked")),
                delay: self.delay_ms.map(Duration::from_millis),
            },
            NackKind::Defer if self.error.is_some() => {
                return Err(ApiError::invalid("error applies only to intent \"failure\""));
            }
            NackKind::Defer => NackIntent::Defer {
                delay: Duration::from_millis(self.delay_ms.unwrap_or(0)),
            },
        };
        intent.validate()?;
        Ok(intent)
    }
}

/// Nacks a message: retried later, or dead-lettered at its attempt limit.
#[utoipa::path(post, path = "/v1/queues/{ns}/{q}/messages/{id}/nack", tag = "leases", params(MessageParams),
    request_body = NackRequest,
    responses((status = 200, body = Settled), (status = 409, body = ErrorBody),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn nack(
    State(st): State<AppState>,
    path: MessagePath,
    ApiJson(req): ApiJson<NackRequest>,
) -> Result<Json<Settled>, ApiError> {
    let intent = req.intent()?;
    let receipt = Receipt {
        message_id: path.id,
        lease_id: req.lease_id,
    };
    st.engine.nack(&path.queue, &receipt, intent).await?;
    Ok(settled(path.id, "nacked"))
}

/// Extends a lease.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// The lease id.
    #[schema(value_type = String)]
    pub lease_id: LeaseId,
    /// New deadline = now + this, 100 to 43200000 ms.
    pub by_ms: u64,
}

/// Moves a lease's deadline to now + `by_ms`.
#[utoipa::path(post, path = "/v1/queues/{ns}/{q}/messages/{id}/extend", tag = "leases", params(MessageParams),
    request_body = ExtendRequest,
    responses((status = 200, body = LeaseView), (status = 409, body = ErrorBody),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn extend(
    State(st): State<AppState>,
    path: MessagePath,
    ApiJson(req): ApiJson<ExtendRequest>,
) -> Result<Json<LeaseView>, ApiError> {
    courier_core::policy::check_duration("by_ms", req.by_ms, limits::LEASE_MIN, limits::LEASE_MAX)?;
    let receipt = Receipt {
        message_id: path.id,
        lease_id: req.lease_id,
    };
    let lease = st
        .engine
        .extend(&path.queue, &receipt, Duration::from_millis(req.by_ms))
        .await?;
    Ok(Json(lease.into()))
}
