//! Shared by the bad-input tests: a queue with ready and leased messages, a snapshot of
//! everything a refused request must leave alone, and a checker that sends one bad request,
//! checks its JSON error, and checks that the server still serves and nothing changed.

use courier_server::ServerConfig;
use reqwest::Method;
use serde_json::{json, Value};

use super::{Reply, TestServer};

pub(crate) const Q: &str = "/v1/queues/default/orders";
pub(crate) const UNKNOWN_ID: &str = "01890000-0000-7000-8000-000000000000";
pub(crate) const UNKNOWN_LEASE: &str = "01890000-0000-7000-8000-000000000001";
pub(crate) const PAYLOAD_BYTES_MAX: usize = 1024;

/// The documented status of each error code (checked independently of the server's table).
fn status_of(code: &str) -> u16 {
    match code {
        "invalid_input" | "malformed_json" | "invalid_name" => 400,
        "unauthorized" => 401,
        "queue_not_found" | "message_not_found" | "not_found" => 404,
        "method_not_allowed" => 405,
        "lease_conflict" | "etag_mismatch" => 409,
        "payload_too_large" => 413,
        other => panic!("no status documented for {other}"),
    }
}

/// What must not change: counts (minus the age, which moves with time) and every message.
pub(crate) async fn snapshot(s: &TestServer) -> Value {
    let mut stats = s.get(&format!("{Q}/stats")).await.ok();
    stats.as_object_mut().map(|o| o.remove("oldest_ready_age_ms"));
    let list = s.get(&format!("{Q}/messages?limit=1000")).await.ok();
    let dlq = s.get(&format!("{Q}/dlq")).await.ok();
    let queues = s.get("/v1/queues").await.ok();
    json!({ "stats": stats, "list": list, "dlq": dlq, "queues": queues })
}

/// A server with payloads capped at [`PAYLOAD_BYTES_MAX`] and a queue `default/orders`
/// holding three messages, the first of them leased (returned) for ten minutes.
pub(crate) async fn given_a_queue_with_ready_and_leased_messages() -> (TestServer, Value) {
    let config = ServerConfig {
        payload_bytes_max: PAYLOAD_BYTES_MAX,
        enqueue_body_bytes_max: 64 * 1024,
        ..ServerConfig::default()
    };
    let s = TestServer::with_config(config).await;
    for text in ["one", "two", "three"] {
        s.send_text("default/orders", text).await;
    }
    let received = s.post(&format!("{Q}/receive"), json!({"lease_ms": 600000})).await.ok();
    (s, received["messages"][0].clone())
}

pub(crate) struct Checker<'a> {
    s: &'a TestServer,
    before: Value,
    /// How many refusals were checked, so a test can prove its table ran.
    pub(crate) checked: usize,
}

impl<'a> Checker<'a> {
    pub(crate) async fn new(s: &'a TestServer) -> Self {
        Self {
            before: snapshot(s).await,
            s,
            checked: 0,
        }
    }

    /// Asserts that the queue still looks as it did when the checker was made.
    pub(crate) async fn assert_unchanged(&self, what: &str) {
        assert_eq!(snapshot(self.s).await, self.before, "{what}: the queue changed");
    }

    /// Asserts the reply is `code` (with its documented status) as JSON, that its message
    /// contains `mentions`, that the server still answers, and that nothing changed.
    pub(crate) async fn check(&mut self, what: &str, reply: Reply, code: &str, mentions: &str) {
        assert_eq!(
            (reply.status, reply.error_code()),
            (status_of(code), code),
            "{what}: {reply:?}"
        );
        let content_type = reply.headers.get("content-type").and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("application/json"), "{what}");
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(mentions),
            "{what}: {message:?} should mention {mentions:?}"
        );
        assert_eq!(
            self.s.get("/healthz").await.status,
            200,
            "{what}: server stopped serving"
        );
        self.assert_unchanged(what).await;
        self.checked += 1;
    }

    /// POSTs `body` as JSON to `path` and checks the refusal.
    pub(crate) async fn post(&mut self, what: &str, path: &str, body: Value, code: &str, mentions: &str) {
        let reply = self.s.post(path, body).await;
        self.check(what, reply, code, mentions).await;
    }

    /// POSTs `body` as raw bytes labelled JSON to `path` and checks the refusal.
    pub(crate) async fn post_bytes(&mut self, what: &str, path: &str, body: impl Into<reqwest::Body>, code: &str) {
        let reply = self.s.post_bytes(path, body).await;
        self.check(what, reply, code, "").await;
    }

    /// Sends `method` on `path` without a body and checks the refusal.
    pub(crate) async fn call(&mut self, what: &str, method: Method, path: &str, code: &str, mentions: &str) {
        let reply = self.s.send(self.s.request(method, path)).await;
        self.check(what, reply, code, mentions).await;
    }

    /// PUTs `body` as JSON to `path` and checks the refusal.
    pub(crate) async fn put(&mut self, what: &str, path: &str, body: Value, code: &str, mentions: &str) {
        let reply = self.s.put(path, body).await;
        self.check(what, reply, code, mentions).await;
    }
}

/// A POST written straight to the socket, so the path reaches the server unnormalized
/// (reqwest, like browsers, folds a bare `..` segment away).
pub(crate) async fn raw_post(s: &TestServer, path: &str, body: &str) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    let (head, json_body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut headers = reqwest::header::HeaderMap::new();
    if head.to_ascii_lowercase().contains("content-type: application/json") {
        headers.insert(
            "content-type",
            reqwest::header::HeaderValue::from_static("application/json"),
        );
    }
    Reply {
        status,
        body: serde_json::from_str(json_body).unwrap_or(Value::Null),
        headers,
    }
}
