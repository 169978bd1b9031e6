//! The dead-letter queue of a queue: list, redrive (all or some ids) and purge.
//!
//! Redriven messages start over with zero failures; their state documents are kept.

use axum::extract::State;
use axum::Json;
use courier_core::{limits, MessageId, Redrive};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, QueuePath};
use crate::queues::Purged;
use crate::views::{ListQuery, MessagePage, QueueParams};

/// Which dead letters to redrive: `{}` for all, `{"ids":[...]}` for some.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RedriveRequest {
    /// Ids to move back (at most 1000); absent means all. Ids not dead-lettered are skipped.
    #[schema(value_type = Option<Vec<String>>)]
    pub ids: Option<Vec<MessageId>>,
}

/// How many messages moved back.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Redriven {
    /// Messages moved back to the queue.
    pub redriven: u64,
}

/// Dead-lettered messages in enqueue order.
#[utoipa::path(get, path = "/v1/queues/{ns}/{q}/dlq", tag = "dlq", params(QueueParams, ListQuery),
    responses((status = 200, body = MessagePage), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let page = st.engine.dlq_list(&queue, q.options()?).await?;
    Ok(Json(MessagePage::new(page, q.payload_encoding.unwrap_or_default())))
}

/// Moves dead-lettered messages back to the queue, ready at once.
#[utoipa::path(post, path = "/v1/queues/{ns}/{q}/dlq/redrive", tag = "dlq", params(QueueParams),
    request_body = RedriveRequest,
    responses((status = 200, body = Redriven), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn redrive(
    State(st): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiJson(req): ApiJson<RedriveRequest>,
) -> Result<Json<Redriven>, ApiError> {
    let which = match req.ids {
        None => Redrive::All,
        Some(ids) if ids.is_empty() || ids.len() > limits::LIST_PAGE_MAX => {
            return Err(ApiError::invalid(format!(
                "ids must hold 1 to {} ids (leave it out to redrive all), got {}",
                limits::LIST_PAGE_MAX,
                ids.len()
            )));
        }
        Some(ids) => Redrive::Ids(ids),
    };
    let redriven = st.engine.dlq_redrive(&queue, which).await?;
    Ok(Json(Redriven { redriven }))
}

/// Deletes the queue's dead-lettered messages.
#[utoipa::path(post, path = "/v1/queues/{ns}/{q}/dlq/purge", tag = "dlq", params(QueueParams),
    responses((status = 200, body = Purged), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn purge(State(st): State<AppState>, QueuePath(queue): QueuePath) -> Result<Json<Purged>, ApiError> {
    let purged = st.engine.dlq_purge(&queue).await?;
    Ok(Json(Purged { purged }))
}
