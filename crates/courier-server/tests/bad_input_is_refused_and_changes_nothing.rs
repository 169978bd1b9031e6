//! Every kind of bad request gets its 4xx JSON error with the right code, the server keeps
//! serving, and the queue's contents are the same afterwards.

mod common;

use common::{Reply, TestServer};
use courier_server::ServerConfig;
use serde_json::{json, Value};

const Q: &str = "/v1/queues/default/orders";
const UNKNOWN_ID: &str = "01890000-0000-7000-8000-000000000000";
const UNKNOWN_LEASE: &str = "01890000-0000-7000-8000-000000000001";
const PAYLOAD_BYTES_MAX: usize = 1024;

/// What must not change: counts (minus the age, which moves with time) and every message.
async fn snapshot(s: &TestServer) -> Value {
    let mut stats = s.get(&format!("{Q}/stats")).await.ok();
    stats.as_object_mut().map(|o| o.remove("oldest_ready_age_ms"));
    let list = s.get(&format!("{Q}/messages?limit=1000")).await.ok();
    let dlq = s.get(&format!("{Q}/dlq")).await.ok();
    let queues = s.get("/v1/queues").await.ok();
    json!({ "stats": stats, "list": list, "dlq": dlq, "queues": queues })
}

struct Checker<'a> {
    s: &'a TestServer,
    before: Value,
    checked: usize,
}

impl Checker<'_> {
    /// Asserts the reply's status and code, that the server still answers, and that
    /// nothing changed.
    async fn check(&mut self, what: &str, reply: Reply, status: u16, code: &str) -> String {
        assert_eq!((reply.status, reply.error_code()), (status, code), "{what}: {reply:?}");
        let content_type = reply.headers.get("content-type").and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("application/json"), "{what}");
        assert_eq!(
            self.s.get("/healthz").await.status,
            200,
            "{what}: server stopped serving"
        );
        assert_eq!(snapshot(self.s).await, self.before, "{what}: the queue changed");
        self.checked += 1;
        reply.body["error"]["message"].as_str().unwrap_or_default().to_owned()
    }
}

/// A POST written straight to the socket, so the path reaches the server unnormalized.
async fn raw_post(s: &TestServer, path: &str, body: &str) -> Reply {
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

async fn given_a_queue_with_ready_and_leased_messages() -> (TestServer, Value) {
    let config = ServerConfig {
        payload_bytes_max: PAYLOAD_BYTES_MAX,
        enqueue_body_bytes_max: 64 * 1024,
        ..ServerConfig::default()
    };
    let s = TestServer::with_config(config).await;
    for text in ["one", "two", "three"] {
        s.send_text("default/orders", text).await;
    }
    let leased = s.post(&format!("{Q}/receive"), json!({"lease_ms": 600000})).await.ok()["messages"][0].clone();
    (s, leased)
}

#[tokio::test]
async fn malformed_bodies_wrong_types_and_bad_durations() {
    let (s, _leased) = given_a_queue_with_ready_and_leased_messages().await;
    let mut c = Checker {
        before: snapshot(&s).await,
        s: &s,
        checked: 0,
    };
    let send = format!("{Q}/messages");
    let recv = format!("{Q}/receive");

    c.check(
        "syntax error",
        s.post_bytes(&send, "{not json").await,
        400,
        "malformed_json",
    )
    .await;
    c.check(
        "truncated",
        s.post_bytes(&send, r#"{"payload":"#).await,
        400,
        "malformed_json",
    )
    .await;
    let msg = c
        .check(
            "payload as number",
            s.post(&send, json!({"payload": 5})).await,
            400,
            "invalid_input",
        )
        .await;
    assert!(msg.contains("invalid type"), "serde's message is passed on: {msg}");
    let msg = c
        .check(
            "unknown field",
            s.post(&send, json!({"payload": "x", "colour": 1})).await,
            400,
            "invalid_input",
        )
        .await;
    assert!(msg.contains("colour"), "{msg}");
    c.check("missing payload", s.post(&send, json!({})).await, 400, "invalid_input")
        .await;
    c.check("array body", s.post(&send, json!([1, 2])).await, 400, "invalid_input")
        .await;
    c.check(
        "negative delay",
        s.post(&send, json!({"payload": "x", "delay_ms": -1})).await,
        400,
        "invalid_input",
    )
    .await;
    let msg = c
        .check(
            "absurd delay",
            s.post(&send, json!({"payload": "x", "delay_ms": 1u64 << 50})).await,
            400,
            "invalid_input",
        )
        .await;
    assert!(msg.contains("delay_ms"), "{msg}");
    c.check(
        "float ttl",
        s.post(&send, json!({"payload": "x", "ttl_ms": 1.5})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "zero ttl",
        s.post(&send, json!({"payload": "x", "ttl_ms": 0})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "zero attempts",
        s.post(&send, json!({"payload": "x", "max_attempts": 0})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "tiny lease",
        s.post(&send, json!({"payload": "x", "lease_ms": 1})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "bad encoding",
        s.post(&send, json!({"payload": "x", "payload_encoding": "rot13"}))
            .await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "bad base64",
        s.post(&send, json!({"payload": "!!", "payload_encoding": "base64"}))
            .await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "empty key",
        s.post(&send, json!({"payload": "x", "idempotency_key": ""})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "empty batch",
        s.post(&send, json!({"messages": []})).await,
        400,
        "invalid_input",
    )
    .await;
    let batch = json!({"messages": [{"payload": "ok"}, {"payload": "x", "delay_ms": -5}]});
    c.check(
        "batch with a bad item",
        s.post(&send, batch).await,
        400,
        "invalid_input",
    )
    .await;
    let batch = json!({"messages": [{"payload": "ok"}, {"payload": "x", "max_attempts": 100000}]});
    let msg = c
        .check("batch refused whole", s.post(&send, batch).await, 400, "invalid_input")
        .await;
    assert!(msg.contains("messages[1]"), "names the item: {msg}");

    c.check(
        "receive zero",
        s.post(&recv, json!({"max_messages": 0})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "receive too many",
        s.post(&recv, json!({"max_messages": 5000})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "receive as text",
        s.post(&recv, json!({"max_messages": "ten"})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "negative wait",
        s.post(&recv, json!({"wait_ms": -5})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "absurd wait",
        s.post(&recv, json!({"wait_ms": 86_400_000})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "tiny receive lease",
        s.post(&recv, json!({"lease_ms": 5})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "receive syntax",
        s.post_bytes(&recv, "{,}").await,
        400,
        "malformed_json",
    )
    .await;

    let policy = Q;
    c.check(
        "policy unknown field",
        s.put(policy, json!({"lease": 5})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "policy zero lease",
        s.put(policy, json!({"lease_ms": 0})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "policy negative",
        s.put(policy, json!({"ttl_ms": -1})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "policy bad expiry",
        s.put(policy, json!({"on_expire": "explode"})).await,
        400,
        "invalid_input",
    )
    .await;
    assert_eq!(c.checked, 29, "every case above ran its checks");
    s.stop().await;
}

#[tokio::test]
async fn oversize_payloads_and_bodies_get_413() {
    let (s, _leased) = given_a_queue_with_ready_and_leased_messages().await;
    let mut c = Checker {
        before: snapshot(&s).await,
        s: &s,
        checked: 0,
    };
    let send = format!("{Q}/messages");
    let big = "x".repeat(PAYLOAD_BYTES_MAX + 1);
    let msg = c
        .check(
            "payload over limit",
            s.post(&send, json!({"payload": big})).await,
            413,
            "payload_too_large",
        )
        .await;
    assert!(msg.contains("1025"), "names the size: {msg}");
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(vec![7u8; PAYLOAD_BYTES_MAX + 1]);
    let b64 = json!({"payload": encoded, "payload_encoding": "base64"});
    c.check(
        "decoded payload over limit",
        s.post(&send, b64).await,
        413,
        "payload_too_large",
    )
    .await;
    let exact = base64::engine::general_purpose::STANDARD.encode(vec![7u8; PAYLOAD_BYTES_MAX]);
    let batch =
        json!({"messages": [{"payload": "ok"}, {"payload": big}, {"payload": exact, "payload_encoding": "base64"}]});
    c.check(
        "batch with one oversize",
        s.post(&send, batch).await,
        413,
        "payload_too_large",
    )
    .await;
    let huge = "y".repeat(2 * 1024 * 1024);
    let body = s.post(&send, json!({"payload": huge})).await;
    c.check("body over the route limit", body, 413, "payload_too_large")
        .await;
    let raw = s
        .send(
            s.request(reqwest::Method::POST, &format!("{Q}/messages/raw"))
                .body(vec![0u8; PAYLOAD_BYTES_MAX + 1]),
        )
        .await;
    c.check("raw over limit", raw, 413, "payload_too_large").await;
    let ack_body = format!(r#"{{"lease_id":"{}"}}"#, " ".repeat(2 * 1024 * 1024));
    let ack = s.post_bytes(&format!("{Q}/messages/{UNKNOWN_ID}/ack"), ack_body).await;
    c.check("control body over limit", ack, 413, "payload_too_large").await;

    // Exactly at the limit is fine (and changes the queue, so it comes last).
    let ok = s
        .send(
            s.request(reqwest::Method::POST, &format!("{Q}/messages/raw"))
                .body(vec![1u8; PAYLOAD_BYTES_MAX]),
        )
        .await;
    assert_eq!(ok.status, 201, "{ok:?}");
    s.stop().await;
}

#[tokio::test]
async fn invalid_names_unknown_routes_and_methods() {
    let (s, _leased) = given_a_queue_with_ready_and_leased_messages().await;
    let mut c = Checker {
        before: snapshot(&s).await,
        s: &s,
        checked: 0,
    };
    let long = "a".repeat(200);
    let cases = [
        (
            "encoded ../x",
            "/v1/queues/default/%2E%2E%2Fx/messages".to_owned(),
            "queue name",
        ),
        (
            "dot-dot-slash namespace",
            "/v1/queues/%2E%2E%2F/orders/messages".to_owned(),
            "namespace",
        ),
        ("200 chars", format!("/v1/queues/default/{long}/messages"), "200 bytes"),
        (
            "unicode",
            "/v1/queues/default/ord%C3%A9rs/messages".to_owned(),
            "queue name",
        ),
        (
            "uppercase",
            "/v1/queues/default/Orders/messages".to_owned(),
            "queue name",
        ),
        ("leading dash", "/v1/queues/-x/orders/messages".to_owned(), "namespace"),
        (
            "empty queue",
            "/v1/queues/default//messages".to_owned(),
            "must not be empty",
        ),
        (
            "empty namespace",
            "/v1/queues//orders/messages".to_owned(),
            "must not be empty",
        ),
    ];
    for (what, path, mentions) in cases {
        let msg = c
            .check(what, s.post(&path, json!({"payload": "x"})).await, 400, "invalid_name")
            .await;
        assert!(msg.contains(mentions), "{what}: {msg}");
    }
    // reqwest (like browsers) folds a bare `..` segment away, so send that one by hand.
    let raw = raw_post(&s, "/v1/queues/../orders/messages", r#"{"payload":"x"}"#).await;
    c.check("literal .. namespace", raw, 400, "invalid_name").await;
    c.check(
        "bad namespace filter",
        s.get("/v1/queues?namespace=NOPE").await,
        400,
        "invalid_name",
    )
    .await;
    c.check(
        "bad name on stats",
        s.get("/v1/queues/default/UP/stats").await,
        400,
        "invalid_name",
    )
    .await;

    c.check("unknown route", s.get("/v2/everything").await, 404, "not_found")
        .await;
    c.check(
        "unknown subroute",
        s.get(&format!("{Q}/frobnicate")).await,
        404,
        "not_found",
    )
    .await;
    let delete_stats = s.send(s.request(reqwest::Method::DELETE, &format!("{Q}/stats"))).await;
    c.check("wrong method", delete_stats, 405, "method_not_allowed").await;
    c.check(
        "GET receive",
        s.get(&format!("{Q}/receive")).await,
        405,
        "method_not_allowed",
    )
    .await;
    c.check(
        "unknown queue stats",
        s.get("/v1/queues/default/ghost/stats").await,
        404,
        "queue_not_found",
    )
    .await;
    c.check(
        "unknown queue dlq",
        s.get("/v1/queues/default/ghost/dlq").await,
        404,
        "queue_not_found",
    )
    .await;
    c.check(
        "unknown message",
        s.get(&format!("{Q}/messages/{UNKNOWN_ID}")).await,
        404,
        "message_not_found",
    )
    .await;
    c.check(
        "malformed id",
        s.get(&format!("{Q}/messages/not-a-uuid")).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "bad list limit",
        s.get(&format!("{Q}/messages?limit=0")).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "text list limit",
        s.get(&format!("{Q}/messages?limit=lots")).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "bad cursor",
        s.get(&format!("{Q}/messages?after=zzz")).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "unknown query",
        s.get(&format!("{Q}/messages?colour=red")).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "raw unknown query",
        s.post_bytes(&format!("{Q}/messages/raw?delay=5"), "x").await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "raw negative delay",
        s.post_bytes(&format!("{Q}/messages/raw?delay_ms=-5"), "x").await,
        400,
        "invalid_input",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn unknown_messages_and_stale_leases() {
    let (s, leased) = given_a_queue_with_ready_and_leased_messages().await;
    let mut c = Checker {
        before: snapshot(&s).await,
        s: &s,
        checked: 0,
    };
    let id = leased["id"].as_str().unwrap_or_default();
    let lease = leased["lease"]["lease_id"].as_str().unwrap_or_default();
    let m = |op: &str| format!("{Q}/messages/{id}/{op}");
    let unknown = |op: &str| format!("{Q}/messages/{UNKNOWN_ID}/{op}");

    c.check(
        "ack unknown message",
        s.post(&unknown("ack"), json!({"lease_id": lease})).await,
        404,
        "message_not_found",
    )
    .await;
    c.check(
        "ack stale lease",
        s.post(&m("ack"), json!({"lease_id": UNKNOWN_LEASE})).await,
        409,
        "lease_conflict",
    )
    .await;
    c.check(
        "ack lease not a uuid",
        s.post(&m("ack"), json!({"lease_id": "nope"})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "ack without lease",
        s.post(&m("ack"), json!({})).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "ack bad id",
        s.post(&format!("{Q}/messages/123/ack"), json!({"lease_id": lease}))
            .await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "nack stale",
        s.post(&m("nack"), json!({"lease_id": UNKNOWN_LEASE})).await,
        409,
        "lease_conflict",
    )
    .await;
    c.check(
        "nack unknown",
        s.post(&unknown("nack"), json!({"lease_id": lease})).await,
        404,
        "message_not_found",
    )
    .await;
    let negative = json!({"lease_id": lease, "delay_ms": -1});
    c.check(
        "nack negative delay",
        s.post(&m("nack"), negative).await,
        400,
        "invalid_input",
    )
    .await;
    let absurd = json!({"lease_id": lease, "delay_ms": 1u64 << 45});
    c.check(
        "nack absurd delay",
        s.post(&m("nack"), absurd).await,
        400,
        "invalid_input",
    )
    .await;
    let defer_error = json!({"lease_id": lease, "intent": "defer", "error": "x"});
    c.check(
        "defer with error",
        s.post(&m("nack"), defer_error).await,
        400,
        "invalid_input",
    )
    .await;
    let bad_intent = json!({"lease_id": lease, "intent": "maybe"});
    c.check(
        "unknown intent",
        s.post(&m("nack"), bad_intent).await,
        400,
        "invalid_input",
    )
    .await;
    let extend_zero = json!({"lease_id": lease, "by_ms": 0});
    c.check(
        "extend zero",
        s.post(&m("extend"), extend_zero).await,
        400,
        "invalid_input",
    )
    .await;
    let extend_huge = json!({"lease_id": lease, "by_ms": u64::MAX});
    c.check(
        "extend absurd",
        s.post(&m("extend"), extend_huge).await,
        400,
        "invalid_input",
    )
    .await;
    let extend_stale = json!({"lease_id": UNKNOWN_LEASE, "by_ms": 1000});
    c.check(
        "extend stale",
        s.post(&m("extend"), extend_stale).await,
        409,
        "lease_conflict",
    )
    .await;
    let batch = json!({"receipts": []});
    c.check(
        "empty ack batch",
        s.post(&format!("{Q}/messages/ack"), batch).await,
        400,
        "invalid_input",
    )
    .await;
    let batch = json!({"receipts": [{"message_id": "x", "lease_id": lease}]});
    c.check(
        "ack batch bad id",
        s.post(&format!("{Q}/messages/ack"), batch).await,
        400,
        "invalid_input",
    )
    .await;
    let batch = json!({"receipts": [{"message_id": id, "lease_id": UNKNOWN_LEASE}]});
    let stale_batch = s.post(&format!("{Q}/messages/ack"), batch).await.ok();
    assert_eq!(stale_batch["results"][0]["error"]["code"], "lease_conflict");
    assert_eq!(snapshot(&s).await, c.before, "a stale batch ack changed nothing");

    let state = m("state");
    c.check("state without lease", s.get(&state).await, 400, "invalid_input")
        .await;
    let stale_state = s.get(&format!("{state}?lease_id={UNKNOWN_LEASE}")).await;
    c.check("state stale lease", stale_state, 409, "lease_conflict").await;
    let bad_json = s
        .send(
            s.request(reqwest::Method::PUT, &state)
                .header("x-courier-lease", lease)
                .body("{oops"),
        )
        .await;
    c.check("state malformed", bad_json, 400, "malformed_json").await;
    let redrive = json!({"ids": ["x"]});
    c.check(
        "redrive bad id",
        s.post(&format!("{Q}/dlq/redrive"), redrive).await,
        400,
        "invalid_input",
    )
    .await;
    c.check(
        "redrive empty ids",
        s.post(&format!("{Q}/dlq/redrive"), json!({"ids": []})).await,
        400,
        "invalid_input",
    )
    .await;

    // The lease is still good after all that: nothing above touched it.
    s.post(&m("ack"), json!({ "lease_id": lease })).await.ok();
    s.stop().await;
}
