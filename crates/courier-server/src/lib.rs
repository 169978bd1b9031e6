//! Courier's HTTP API as a library: [`router`] builds the axum app over any
//! `Arc<dyn QueueEngine>`, and [`serve`] runs it on a listener until a shutdown future fires.
//!
//! One module per resource (`queues`, `messages`, `leases`, `state`, `dlq`, `outbox`, `health`); every
//! failure becomes an [`error::ApiError`], mapped to a status by the one table in `error`.
//!
//! It is not:
//! - a place for process concerns: config files, signals and logging setup live in `courier-cli`;
//! - tied to one engine: it only sees the `QueueEngine` trait.

#![warn(clippy::unwrap_used)]

pub mod app;
pub mod dlq;
pub mod error;
pub mod extract;
pub mod health;
pub mod leases;
pub mod messages;
pub mod middleware;
pub mod openapi;
pub mod outbox;
pub mod queues;
pub mod routes;
pub mod state;
pub mod views;

use std::future::Future;

pub use app::{AppState, ServerConfig};
pub use error::{ApiError, ErrorCode};
pub use openapi::ApiDoc;
pub use outbox::OutboxAdmin;
pub use routes::{route_table, router};

/// Serves `state` on `listener` until `shutdown` completes, then stops accepting and
/// returns once every in-flight request has finished. Long polls end at once with what they
/// have (usually nothing), so shutdown does not wait out their `wait_ms`.
///
/// The caller shuts the engine down afterwards (`state.engine.shutdown()`), so nothing is
/// written after the last response.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = state.engine.clone();
    let app = router(state);
    let shutdown = async move {
        shutdown.await;
        engine.wait_hub().close();
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
