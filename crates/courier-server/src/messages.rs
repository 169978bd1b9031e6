//! The message resource: enqueue (JSON, one or a batch, or a raw body) and peeking
//! (list and get without leasing). Receiving and settling leases lives in `leases`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header::CONTENT_TYPE, HeaderMap, StatusCode};
use axum::Json;
use courier_core::{limits, NewMessage};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, MessagePath, QueuePath, RawBody};
use crate::views::{ListQuery, MessagePage, MessageParams, MessageView, PayloadEncoding, QueueParams};

/// One message to enqueue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    /// The body, written in `payload_encoding`.
    pub payload: String,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    pub payload_encoding: PayloadEncoding,
    /// MIME type of the payload.
    pub content_type: Option<String>,
    /// Free-form metadata (at most 64 KiB serialized).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Ties the message to a request, for tracing.
    pub correlation_id: Option<String>,
    /// Invisible this long after enqueue. Default 0.
    pub delay_ms: Option<u64>,
    /// Expires unseen after this long; default from the queue policy.
    pub ttl_ms: Option<u64>,
    /// Failed attempts before dead-lettering; default from the queue policy.
    pub max_attempts: Option<u32>,
    /// Lease given to receivers; default from the queue policy.
    pub lease_ms: Option<u64>,
    /// A repeat with the same key within the dedup window adds nothing.
    pub idempotency_key: Option<String>,
    /// Messages of one group are delivered in order, one at a time.
    pub ordering_group: Option<String>,
}

/// A batch, enqueued atomically.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// 1 to 1000 messages.
    pub messages: Vec<MessageInput>,
}

/// The body of an enqueue: one message object, or `{"messages":[...]}`.
#[derive(Debug, ToSchema)]
#[serde(untagged)] // Read only by the ToSchema derive (oneOf); parsing is below.
pub enum EnqueueRequest {
    /// One message.
    One(MessageInput),
    /// A batch.
    Batch(BatchInput),
}

// Hand-written rather than `#[serde(untagged)]`, whose "did not match any variant" would
// hide serde's precise message (which field, which type) from the client.
impl<'de> Deserialize<'de> for EnqueueRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let is_batch = value.as_object().is_some_and(|o| o.contains_key("messages"));
        let parsed = if is_batch {
            serde_json::from_value(value).map(Self::Batch)
        } else {
            serde_json::from_value(value).map(Self::One)
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

/// The result of enqueueing one message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnqueuedView {
    /// The id; for a duplicate, the first message's.
    pub id: String,
    /// True when the idempotency key was seen and nothing was added.
    pub duplicate: bool,
}

/// Results in request order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnqueueResponse {
    /// One entry per message sent.
    pub messages: Vec<EnqueuedView>,
}

/// Options of a raw enqueue, as query parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RawQuery {
    /// Invisible this long after enqueue.
    pub delay_ms: Option<u64>,
    /// Time to live.
    pub ttl_ms: Option<u64>,
    /// Failed attempts before dead-lettering.
    pub max_attempts: Option<u32>,
    /// Lease given to receivers.
    pub lease_ms: Option<u64>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Ordering group.
    pub ordering_group: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
}

/// Enqueues one message or an atomic batch.
#[utoipa::path(post, path = "/v1/queues/{ns}/{q}/messages", tag = "messages", params(QueueParams),
    request_body = EnqueueRequest,
    responses((status = 201, body = EnqueueResponse), (status = 413, body = ErrorBody),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn send(
    State(st): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiJson(body): ApiJson<EnqueueRequest>,
) -> Result<(StatusCode, Json<EnqueueResponse>), ApiError> {
    let inputs = match body {
        EnqueueRequest::One(m) => vec![m],
        EnqueueRequest::Batch(b) => b.messages,
    };
    check_batch_len(inputs.len())?;
    let payload_bytes_max = st.config.payload_bytes_max;
    let messages = inputs
        .into_iter()
        .enumerate()
        .map(|(i, m)| to_new_message(m, payload_bytes_max).map_err(|e| at_index(e, i)))
        .collect::<Result<Vec<_>, _>>()?;
    enqueue(&st, &queue, messages).await
}

/// Enqueues the request body as the payload of one message.
#[utoipa::path(post, path = "/v1/queues/{ns}/{q}/messages/raw", tag = "messages", params(QueueParams, RawQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The payload; Content-Type is kept"),
    responses((status = 201, body = EnqueueResponse), (status = 413, body = ErrorBody),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn send_raw(
    State(st): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiQuery(q): ApiQuery<RawQuery>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<EnqueueResponse>), ApiError> {
    check_payload_len(body.len(), st.config.payload_bytes_max)?;
    let content_type = match headers.get(CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("Content-Type header is not visible ASCII"))?
                .to_owned(),
        ),
    };
    let message = NewMessage {
        payload: body,
        content_type,
        attributes: Map::new(),
        correlation_id: q.correlation_id,
        delay: Duration::from_millis(q.delay_ms.unwrap_or(0)),
        ttl: q.ttl_ms.map(Duration::from_millis),
        max_attempts: q.max_attempts,
        lease: q.lease_ms.map(Duration::from_millis),
        idempotency_key: q.idempotency_key,
        ordering_group: q.ordering_group,
    };
    message.validate()?;
    enqueue(&st, &queue, vec![message]).await
}

async fn enqueue(
    st: &AppState,
    queue: &courier_core::QueueRef,
    messages: Vec<NewMessage>,
) -> Result<(StatusCode, Json<EnqueueResponse>), ApiError> {
    let sent = messages.len();
    let results = st.engine.enqueue(queue, messages).await?;
    debug_assert_eq!(results.len(), sent, "the engine answers once per message");
    let messages = results
        .into_iter()
        .map(|r| EnqueuedView {
            id: r.id.to_string(),
            duplicate: r.duplicate,
        })
        .collect();
    Ok((StatusCode::CREATED, Json(EnqueueResponse { messages })))
}

fn check_batch_len(len: usize) -> Result<(), ApiError> {
    if len == 0 || len > limits::ENQUEUE_BATCH_MAX {
        return Err(ApiError::invalid(format!(
            "a batch holds 1 to {} messages, got {len}",
            limits::ENQUEUE_BATCH_MAX
        )));
    }
    Ok(())
}

fn check_payload_len(len: usize, payload_bytes_max: usize) -> Result<(), ApiError> {
    if len > payload_bytes_max {
        return Err(ApiError::too_large(format!(
            "payload is {len} bytes; this server's limit is {payload_bytes_max}"
        )));
    }
    Ok(())
}

/// Prefixes a batch item's error with its index, keeping the code.
fn at_index(mut e: ApiError, index: usize) -> ApiError {
    e.message = format!("messages[{index}]: {}", e.message);
    e
}

fn to_new_message(m: MessageInput, payload_bytes_max: usize) -> Result<NewMessage, ApiError> {
    let payload = m.payload_encoding.decode(m.payload)?;
    check_payload_len(payload.len(), payload_bytes_max)?;
    let message = NewMessage {
        payload: payload.into(),
        content_type: m.content_type,
        attributes: m.attributes,
        correlation_id: m.correlation_id,
        delay: Duration::from_millis(m.delay_ms.unwrap_or(0)),
        ttl: m.ttl_ms.map(Duration::from_millis),
        max_attempts: m.max_attempts,
        lease: m.lease_ms.map(Duration::from_millis),
        idempotency_key: m.idempotency_key,
        ordering_group: m.ordering_group,
    };
    message.validate()?;
    Ok(message)
}

/// Live messages in enqueue order, without leasing them.
#[utoipa::path(get, path = "/v1/queues/{ns}/{q}/messages", tag = "messages", params(QueueParams, ListQuery),
    responses((status = 200, body = MessagePage), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let page = st.engine.list_messages(&queue, q.options()?).await?;
    Ok(Json(MessagePage::new(page, q.payload_encoding.unwrap_or_default())))
}

/// How to write the payload of a single message.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EncodingQuery {
    /// `utf8` (default; base64 for non-text payloads) or `base64`.
    pub payload_encoding: Option<PayloadEncoding>,
}

/// One message, live or dead-lettered, without leasing it.
#[utoipa::path(get, path = "/v1/queues/{ns}/{q}/messages/{id}", tag = "messages", params(MessageParams, EncodingQuery),
    responses((status = 200, body = MessageView), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    path: MessagePath,
    ApiQuery(q): ApiQuery<EncodingQuery>,
) -> Result<Json<MessageView>, ApiError> {
    let info = st.engine.get_message(&path.queue, path.id).await?;
    Ok(Json(MessageView::peek(info, q.payload_encoding.unwrap_or_default())))
}
