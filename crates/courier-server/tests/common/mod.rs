//! A real server on 127.0.0.1:0 over a fresh SQLite engine in a temp dir, and a small
//! reqwest client that returns (status, JSON body) pairs.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub(crate) mod refusal;

use std::sync::Arc;
use std::time::Duration;

use courier_core::QueueEngine;
use courier_server::{AppState, ServerConfig};
use courier_sqlite::{SqliteEngine, SqliteOptions};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) struct TestServer {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) engine: Arc<dyn QueueEngine>,
    token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// A response: status code and JSON body (`Value::Null` when the body is empty or not JSON).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The error code of an error reply, asserting the `{"error":{"code","message"}}` shape.
    pub(crate) fn error_code(&self) -> &str {
        let message = self.body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "error without a message: {self:?}");
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not a JSON error: {self:?}"))
    }

    /// Asserts a status and error code, returning the message.
    pub(crate) fn expect_error(&self, status: u16, code: &str) -> String {
        assert_eq!((self.status, self.error_code()), (status, code), "{self:?}");
        self.body["error"]["message"].as_str().unwrap_or_default().to_owned()
    }

    /// Asserts a 2xx status and returns the body.
    pub(crate) fn ok(self) -> Value {
        assert!((200..300).contains(&self.status), "expected success, got {self:?}");
        self.body
    }
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::with_config(ServerConfig::default()).await
    }

    pub(crate) async fn with_config(config: ServerConfig) -> Self {
        Self::build(config, None).await
    }

    /// A server whose `/v1/outbox` routes show `outbox`.
    pub(crate) async fn with_outbox(outbox: Arc<dyn courier_server::OutboxAdmin>) -> Self {
        Self::build(ServerConfig::default(), Some(outbox)).await
    }

    async fn build(config: ServerConfig, outbox: Option<Arc<dyn courier_server::OutboxAdmin>>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = SqliteOptions::new(dir.path().join("courier.db"));
        let engine: Arc<dyn QueueEngine> = Arc::new(SqliteEngine::open(opts).await.expect("open engine"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let token = config.auth_token.clone();
        let mut state = AppState::new(engine.clone(), config);
        if let Some(outbox) = outbox {
            state = state.with_outbox(outbox);
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(courier_server::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self {
            base,
            http,
            engine,
            token,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request builder with the bearer token when the server has one.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub(crate) async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let resp = rb.send().await.expect("server reachable");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, body, headers }
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    pub(crate) async fn post_bytes(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.send(
            self.request(reqwest::Method::POST, path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// Enqueues one UTF-8 message and returns its id.
    pub(crate) async fn send_text(&self, queue: &str, text: &str) -> String {
        let body = self
            .post(&format!("/v1/queues/{queue}/messages"), json!({ "payload": text }))
            .await
            .ok();
        body["messages"][0]["id"].as_str().expect("id").to_owned()
    }

    /// Receives up to `n` messages without waiting.
    pub(crate) async fn receive(&self, queue: &str, n: usize) -> Vec<Value> {
        let body = self
            .post(&format!("/v1/queues/{queue}/receive"), json!({ "max_messages": n }))
            .await
            .ok();
        body["messages"].as_array().cloned().unwrap_or_default()
    }

    /// Stops accepting, waits for in-flight requests, then shuts the engine down.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("serve returned an error");
        }
        self.engine.shutdown().await.expect("engine shutdown");
    }
}
