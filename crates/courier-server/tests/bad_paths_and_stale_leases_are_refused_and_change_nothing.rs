//! Invalid names, unknown routes and methods, unknown messages and stale leases each get
//! their 4xx JSON error, the server keeps serving, and the queue is unchanged.

mod common;

use common::refusal::{given_a_queue_with_ready_and_leased_messages, raw_post, Checker, Q, UNKNOWN_ID, UNKNOWN_LEASE};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn invalid_names_unknown_routes_and_methods() {
    let (s, _leased) = given_a_queue_with_ready_and_leased_messages().await;
    let mut c = Checker::new(&s).await;
    let long = "a".repeat(200);
    let names = [
        (
            "encoded ../x",
            "/v1/queues/default/%2E%2E%2Fx/messages".to_owned(),
            "queue name \"../x\"",
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
    for (what, path, mentions) in names {
        c.post(what, &path, json!({"payload": "x"}), "invalid_name", mentions)
            .await;
    }
    let raw = raw_post(&s, "/v1/queues/../orders/messages", r#"{"payload":"x"}"#).await;
    c.check("literal .. namespace", raw, "invalid_name", "namespace \"..\"")
        .await;

    let gets = [
        (
            "bad namespace filter",
            "/v1/queues?namespace=NOPE".to_owned(),
            "invalid_name",
            "NOPE",
        ),
        (
            "bad name on stats",
            "/v1/queues/default/UP/stats".to_owned(),
            "invalid_name",
            "UP",
        ),
        (
            "unknown route",
            "/v2/everything".to_owned(),
            "not_found",
            "/v2/everything",
        ),
        ("unknown subroute", format!("{Q}/frobnicate"), "not_found", ""),
        ("GET receive", format!("{Q}/receive"), "method_not_allowed", "GET"),
        (
            "unknown queue stats",
            "/v1/queues/default/ghost/stats".to_owned(),
            "queue_not_found",
            "ghost",
        ),
        (
            "unknown queue dlq",
            "/v1/queues/default/ghost/dlq".to_owned(),
            "queue_not_found",
            "ghost",
        ),
        (
            "unknown message",
            format!("{Q}/messages/{UNKNOWN_ID}"),
            "message_not_found",
            UNKNOWN_ID,
        ),
        (
            "malformed id",
            format!("{Q}/messages/not-a-uuid"),
            "invalid_input",
            "not-a-uuid",
        ),
        (
            "bad list limit",
            format!("{Q}/messages?limit=0"),
            "invalid_input",
            "limit",
        ),
        (
            "text list limit",
            format!("{Q}/messages?limit=lots"),
            "invalid_input",
            "",
        ),
        ("bad cursor", format!("{Q}/messages?after=zzz"), "invalid_input", "zzz"),
        (
            "unknown query",
            format!("{Q}/messages?colour=red"),
            "invalid_input",
            "colour",
        ),
    ];
    for (what, path, code, mentions) in gets {
        c.call(what, Method::GET, &path, code, mentions).await;
    }
    let stats = format!("{Q}/stats");
    c.call("DELETE stats", Method::DELETE, &stats, "method_not_allowed", "DELETE")
        .await;
    c.post_bytes(
        "raw unknown query",
        &format!("{Q}/messages/raw?delay=5"),
        "x",
        "invalid_input",
    )
    .await;
    c.post_bytes(
        "raw negative delay",
        &format!("{Q}/messages/raw?delay_ms=-5"),
        "x",
        "invalid_input",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn unknown_messages_and_stale_leases() {
    let (s, leased) = given_a_queue_with_ready_and_leased_messages().await;
    let mut c = Checker::new(&s).await;
    let id = leased["id"].as_str().unwrap_or_default();
    let lease = leased["lease"]["lease_id"].as_str().unwrap_or_default();
    let m = |op: &str| format!("{Q}/messages/{id}/{op}");
    let unknown = |op: &str| format!("{Q}/messages/{UNKNOWN_ID}/{op}");
    let batch = format!("{Q}/messages/ack");
    let cases = [
        (
            "ack unknown message",
            unknown("ack"),
            json!({"lease_id": lease}),
            "message_not_found",
        ),
        (
            "ack stale lease",
            m("ack"),
            json!({"lease_id": UNKNOWN_LEASE}),
            "lease_conflict",
        ),
        (
            "ack lease not a uuid",
            m("ack"),
            json!({"lease_id": "nope"}),
            "invalid_input",
        ),
        ("ack without lease", m("ack"), json!({}), "invalid_input"),
        (
            "ack bad id",
            format!("{Q}/messages/123/ack"),
            json!({"lease_id": lease}),
            "invalid_input",
        ),
        (
            "nack stale",
            m("nack"),
            json!({"lease_id": UNKNOWN_LEASE}),
            "lease_conflict",
        ),
        (
            "nack unknown",
            unknown("nack"),
            json!({"lease_id": lease}),
            "message_not_found",
        ),
        (
            "nack negative delay",
            m("nack"),
            json!({"lease_id": lease, "delay_ms": -1}),
            "invalid_input",
        ),
        (
            "nack absurd delay",
            m("nack"),
            json!({"lease_id": lease, "delay_ms": 1u64 << 45}),
            "invalid_input",
        ),
        (
            "defer with error",
            m("nack"),
            json!({"lease_id": lease, "intent": "defer", "error": "x"}),
            "invalid_input",
        ),
        (
            "unknown intent",
            m("nack"),
            json!({"lease_id": lease, "intent": "maybe"}),
            "invalid_input",
        ),
        (
            "extend zero",
            m("extend"),
            json!({"lease_id": lease, "by_ms": 0}),
            "invalid_input",
        ),
        (
            "extend absurd",
            m("extend"),
            json!({"lease_id": lease, "by_ms": u64::MAX}),
            "invalid_input",
        ),
        (
            "extend stale",
            m("extend"),
            json!({"lease_id": UNKNOWN_LEASE, "by_ms": 1000}),
            "lease_conflict",
        ),
        (
            "empty ack batch",
            batch.clone(),
            json!({"receipts": []}),
            "invalid_input",
        ),
        (
            "ack batch bad id",
            batch.clone(),
            json!({"receipts": [{"message_id": "x", "lease_id": lease}]}),
            "invalid_input",
        ),
        (
            "redrive bad id",
            format!("{Q}/dlq/redrive"),
            json!({"ids": ["x"]}),
            "invalid_input",
        ),
        (
            "redrive empty ids",
            format!("{Q}/dlq/redrive"),
            json!({"ids": []}),
            "invalid_input",
        ),
    ];
    for (what, path, body, code) in cases {
        c.post(what, &path, body, code, "").await;
    }
    let stale = json!({"receipts": [{"message_id": id, "lease_id": UNKNOWN_LEASE}]});
    let stale_batch = s.post(&batch, stale).await.ok();
    assert_eq!(stale_batch["results"][0]["error"]["code"], "lease_conflict");
    c.assert_unchanged("a stale batch ack").await;

    let state = m("state");
    c.call(
        "state without lease",
        Method::GET,
        &state,
        "invalid_input",
        "X-Courier-Lease",
    )
    .await;
    let stale_state = format!("{state}?lease_id={UNKNOWN_LEASE}");
    c.call("state stale lease", Method::GET, &stale_state, "lease_conflict", "")
        .await;
    let bad_json = s
        .send(
            s.request(Method::PUT, &state)
                .header("x-courier-lease", lease)
                .body("{oops"),
        )
        .await;
    c.check("state malformed", bad_json, "malformed_json", "").await;

    // The lease is still good after all that: nothing above touched it.
    s.post(&m("ack"), json!({ "lease_id": lease })).await.ok();
    s.stop().await;
}
