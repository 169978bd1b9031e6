//! The queue resource: list queues, set and read a policy, stats, delete, purge.
//!
//! A queue exists once it has a policy or a first message; `PUT` creates it.

use axum::extract::State;
use axum::Json;
use courier_core::{ExpiryAction, Namespace, QueuePolicy, QueueStats, QueueSummary};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, QueuePath};
use crate::views::QueueParams;

/// A queue's policy; all durations in milliseconds. Fields left out take their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyDto {
    /// Lease given to a receiver. Default 30000.
    pub lease_ms: u64,
    /// Failed attempts before dead-lettering. Default 5.
    pub max_attempts: u32,
    /// First retry delay. Default 1000.
    pub backoff_initial_ms: u64,
    /// Retry delay cap. Default 300000.
    pub backoff_max_ms: u64,
    /// Retry delay growth factor. Default 2.
    pub backoff_multiplier: u32,
    /// Message time to live; `null` keeps messages until acked. Default null.
    pub ttl_ms: Option<u64>,
    /// `dead_letter` (default) or `drop` for messages whose TTL ran out.
    pub on_expire: ExpiryDto,
    /// How long idempotency keys are remembered. Default 300000.
    pub dedup_window_ms: u64,
}

/// What happens to expired messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryDto {
    /// Move to the dead-letter queue.
    DeadLetter,
    /// Delete.
    Drop,
}

impl Default for PolicyDto {
    fn default() -> Self {
        QueuePolicy::default().into()
    }
}

impl From<QueuePolicy> for PolicyDto {
    fn from(p: QueuePolicy) -> Self {
        Self {
            lease_ms: p.lease_ms,
            max_attempts: p.max_attempts,
            backoff_initial_ms: p.backoff_initial_ms,
            backoff_max_ms: p.backoff_max_ms,
            backoff_multiplier: p.backoff_multiplier,
            ttl_ms: p.ttl_ms,
            on_expire: match p.on_expire {
                ExpiryAction::DeadLetter => ExpiryDto::DeadLetter,
                ExpiryAction::Drop => ExpiryDto::Drop,
            },
            dedup_window_ms: p.dedup_window_ms,
        }
    }
}

impl From<PolicyDto> for QueuePolicy {
    fn from(p: PolicyDto) -> Self {
        Self {
            lease_ms: p.lease_ms,
            max_attempts: p.max_attempts,
            backoff_initial_ms: p.backoff_initial_ms,
            backoff_max_ms: p.backoff_max_ms,
            backoff_multiplier: p.backoff_multiplier,
            ttl_ms: p.ttl_ms,
            on_expire: match p.on_expire {
                ExpiryDto::DeadLetter => ExpiryAction::DeadLetter,
                ExpiryDto::Drop => ExpiryAction::Drop,
            },
            dedup_window_ms: p.dedup_window_ms,
        }
    }
}

/// Counts of a queue's messages by status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatsDto {
    /// Visible now.
    pub ready: u64,
    /// Leased.
    pub in_flight: u64,
    /// Waiting for a delay or backoff.
    pub delayed: u64,
    /// Behind an earlier message of their ordering group.
    pub blocked: u64,
    /// In the dead-letter queue.
    pub dead_lettered: u64,
    /// Age of the oldest ready message, ms (0 when none).
    pub oldest_ready_age_ms: u64,
    /// Receivers long-polling on this node now.
    pub waiting_receivers: u64,
}

impl From<QueueStats> for StatsDto {
    fn from(s: QueueStats) -> Self {
        Self {
            ready: s.ready,
            in_flight: s.in_flight,
            delayed: s.delayed,
            blocked: s.blocked,
            dead_lettered: s.dead_lettered,
            oldest_ready_age_ms: s.oldest_ready_age_ms,
            waiting_receivers: s.waiting_receivers,
        }
    }
}

/// One queue in a listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueItem {
    /// Namespace.
    pub namespace: String,
    /// Queue name.
    pub name: String,
    /// Its policy.
    pub policy: PolicyDto,
}

impl From<QueueSummary> for QueueItem {
    fn from(s: QueueSummary) -> Self {
        Self {
            namespace: s.queue.namespace.to_string(),
            name: s.queue.name.to_string(),
            policy: s.policy.into(),
        }
    }
}

/// The queues, in name order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    /// The queues.
    pub queues: Vec<QueueItem>,
}

/// A queue with its policy and counts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueDetail {
    /// Namespace.
    pub namespace: String,
    /// Queue name.
    pub name: String,
    /// Its policy.
    pub policy: PolicyDto,
    /// Its counts.
    pub stats: StatsDto,
}

/// How many messages an operation removed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Purged {
    /// Messages deleted.
    pub purged: u64,
}

/// Result of deleting a queue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// Always true.
    pub deleted: bool,
}

/// Filter of the queue listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQueuesQuery {
    /// Only queues of this namespace.
    pub namespace: Option<String>,
}

/// Lists queues.
#[utoipa::path(get, path = "/v1/queues", tag = "queues", params(ListQueuesQuery),
    responses((status = 200, body = QueueList), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQueuesQuery>,
) -> Result<Json<QueueList>, ApiError> {
    let namespace = q.namespace.map(Namespace::new).transpose()?;
    let queues = st.engine.list_queues(namespace.as_ref()).await?;
    Ok(Json(QueueList {
        queues: queues.into_iter().map(QueueItem::from).collect(),
    }))
}

/// Sets a queue's policy, creating the queue if needed.
#[utoipa::path(put, path = "/v1/queues/{ns}/{q}", tag = "queues", params(QueueParams), request_body = PolicyDto,
    responses((status = 200, body = PolicyDto), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn put_policy(
    State(st): State<AppState>,
    QueuePath(queue): QueuePath,
    ApiJson(body): ApiJson<PolicyDto>,
) -> Result<Json<PolicyDto>, ApiError> {
    let policy = QueuePolicy::from(body);
    policy.validate()?;
    st.engine.set_policy(&queue, policy.clone()).await?;
    Ok(Json(policy.into()))
}

/// A queue's policy and counts.
#[utoipa::path(get, path = "/v1/queues/{ns}/{q}", tag = "queues", params(QueueParams),
    responses((status = 200, body = QueueDetail), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn get(State(st): State<AppState>, QueuePath(queue): QueuePath) -> Result<Json<QueueDetail>, ApiError> {
    let policy = st.engine.policy(&queue).await?;
    let stats = st.engine.stats(&queue).await?;
    Ok(Json(QueueDetail {
        namespace: queue.namespace.to_string(),
        name: queue.name.to_string(),
        policy: policy.into(),
        stats: stats.into(),
    }))
}

/// Deletes a queue with its messages and dead letters.
#[utoipa::path(delete, path = "/v1/queues/{ns}/{q}", tag = "queues", params(QueueParams),
    responses((status = 200, body = Deleted), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn delete(State(st): State<AppState>, QueuePath(queue): QueuePath) -> Result<Json<Deleted>, ApiError> {
    st.engine.delete_queue(&queue).await?;
    Ok(Json(Deleted { deleted: true }))
}

/// Deletes every live message of a queue (not its dead letters).
#[utoipa::path(post, path = "/v1/queues/{ns}/{q}/purge", tag = "queues", params(QueueParams),
    responses((status = 200, body = Purged), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn purge(State(st): State<AppState>, QueuePath(queue): QueuePath) -> Result<Json<Purged>, ApiError> {
    let purged = st.engine.purge(&queue).await?;
    Ok(Json(Purged { purged }))
}

/// A queue's counts by status.
#[utoipa::path(get, path = "/v1/queues/{ns}/{q}/stats", tag = "queues", params(QueueParams),
    responses((status = 200, body = StatsDto), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn stats(State(st): State<AppState>, QueuePath(queue): QueuePath) -> Result<Json<StatsDto>, ApiError> {
    Ok(Json(st.engine.stats(&queue).await?.into()))
}
