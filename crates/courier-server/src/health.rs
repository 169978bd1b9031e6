//! Probes: `/healthz` (the process is up) and `/readyz` (the engine can serve).
//!
//! Neither needs the bearer token, so orchestrators can call them without a secret.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody, ErrorCode};

/// A probe's answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

/// Always 200 while the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// 200 when the engine can serve requests, else 503 `unavailable`.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(st): State<AppState>) -> Result<Json<Health>, ApiError> {
    // Any failure means "do not route traffic here", which probes read from a 503.
    st.engine
        .ready()
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
    Ok(Json(Health { status: "ready".into() }))
}
