//! The route table: every path and method, its handler and its body limit, in one place.
//!
//! Routes are added through [`Api::at`], which also records them, so [`route_table`] can
//! be checked against the OpenAPI document without the two drifting apart.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::{middleware, Router};
use tokio::sync::Semaphore;
use tower_http::trace::TraceLayer;

use crate::app::{AppState, ServerConfig, CONTROL_BODY_BYTES_MAX};
use crate::{dlq, error, health, leases, messages, openapi, outbox, queues, state};

/// The HTTP methods the API uses; each knows its axum filter, so the two cannot disagree.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Get,
    Put,
    Post,
    Delete,
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Put => MethodFilter::PUT,
            Self::Post => MethodFilter::POST,
            Self::Delete => MethodFilter::DELETE,
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Get => Method::GET,
            Self::Put => Method::PUT,
            Self::Post => Method::POST,
            Self::Delete => Method::DELETE,
        }
    }
}

/// The router being built, with the routes added so far.
struct Api {
    router: Router<AppState>,
    table: Vec<(Method, &'static str)>,
}

impl Api {
    fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Adds `handler` for `verb` on `path`, reading bodies up to [`CONTROL_BODY_BYTES_MAX`].
    fn at<H, T>(self, verb: Verb, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.at_limited(verb, path, handler, CONTROL_BODY_BYTES_MAX)
    }

    /// Adds `handler` for `verb` on `path`, reading bodies up to `body_bytes_max`.
    fn at_limited<H, T>(mut self, verb: Verb, path: &'static str, handler: H, body_bytes_max: usize) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let route = on(verb.filter(), handler).layer(DefaultBodyLimit::max(body_bytes_max));
        self.router = self.router.route(path, route);
        self.table.push((verb.method(), path));
        self
    }
}

fn api(config: &ServerConfig) -> Api {
    use Verb::{Delete, Get, Post, Put};
    Api::new()
        .at(Get, "/healthz", health::healthz)
        .at(Get, "/readyz", health::readyz)
        .at(Get, "/openapi.json", openapi::openapi_json)
        .at(Get, "/v1/queues", queues::list)
        .at(Put, "/v1/queues/{ns}/{q}", queues::put_policy)
        .at(Get, "/v1/queues/{ns}/{q}", queues::get)
        .at(Delete, "/v1/queues/{ns}/{q}", queues::delete)
        .at(Post, "/v1/queues/{ns}/{q}/purge", queues::purge)
        .at(Get, "/v1/queues/{ns}/{q}/stats", queues::stats)
        .at_limited(
            Post,
            "/v1/queues/{ns}/{q}/messages",
            messages::send,
            config.enqueue_body_limit(),
        )
        .at_limited(
            Post,
            "/v1/queues/{ns}/{q}/messages/raw",
            messages::send_raw,
            config.payload_bytes_max,
        )
        .at(Get, "/v1/queues/{ns}/{q}/messages", messages::list)
        .at(Get, "/v1/queues/{ns}/{q}/messages/{id}", messages::get)
        .at(Post, "/v1/queues/{ns}/{q}/receive", leases::receive)
        .at(Post, "/v1/queues/{ns}/{q}/messages/ack", leases::ack_batch)
        .at(Post, "/v1/queues/{ns}/{q}/messages/{id}/ack", leases::ack)
        .at(Post, "/v1/queues/{ns}/{q}/messages/{id}/nack", leases::nack)
        .at(Post, "/v1/queues/{ns}/{q}/messages/{id}/extend", leases::extend)
        .at(Get, "/v1/queues/{ns}/{q}/messages/{id}/state", state::get)
        .at(Put, "/v1/queues/{ns}/{q}/messages/{id}/state", state::put)
        .at(Get, "/v1/queues/{ns}/{q}/dlq", dlq::list)
        .at(Post, "/v1/queues/{ns}/{q}/dlq/redrive", dlq::redrive)
        .at(Post, "/v1/queues/{ns}/{q}/dlq/purge", dlq::purge)
        .at(Get, "/v1/outbox/stats", outbox::stats)
        .at(Get, "/v1/outbox/failed", outbox::failed)
        .at(Post, "/v1/outbox/failed/retry", outbox::retry)
}

/// The app: every route, JSON errors for unknown routes and methods, auth, the in-flight
/// limit and request tracing.
pub fn router(state: AppState) -> Router {
    debug_assert!(state.config.validate().is_ok(), "validate ServerConfig before serving");
    let permits = Arc::new(Semaphore::new(state.config.requests_in_flight_max));
    let token: Option<Arc<str>> = state.config.auth_token.as_deref().map(Arc::from);
    api(&state.config)
        .router
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::route_not_found)
        .layer(middleware::from_fn_with_state(token, crate::middleware::require_token))
        .layer(middleware::from_fn_with_state(
            permits,
            crate::middleware::limit_in_flight,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Every (method, path) the router serves, paths in OpenAPI form (`{ns}`).
pub fn route_table() -> Vec<(Method, &'static str)> {
    api(&ServerConfig::default()).table
}
