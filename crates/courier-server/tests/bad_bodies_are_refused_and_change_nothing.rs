//! Malformed JSON, wrong types, bad durations and oversize payloads each get their 4xx JSON
//! error, the server keeps serving, and the queue is unchanged.

mod common;

use base64::Engine as _;
use common::refusal::{given_a_queue_with_ready_and_leased_messages, Checker, PAYLOAD_BYTES_MAX, Q, UNKNOWN_ID};
use serde_json::json;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[tokio::test]
async fn malformed_bodies_wrong_types_and_bad_durations() {
    let (s, _leased) = given_a_queue_with_ready_and_leased_messages().await;
    let mut c = Checker::new(&s).await;
    let (send, recv) = (format!("{Q}/messages"), format!("{Q}/receive"));

    c.post_bytes("syntax error", &send, "{not json", "malformed_json").await;
    c.post_bytes("truncated", &send, r#"{"payload":"#, "malformed_json")
        .await;
    c.post_bytes("receive syntax", &recv, "{,}", "malformed_json").await;

    let sends = [
        ("payload as number", json!({"payload": 5}), "invalid type"),
        ("unknown field", json!({"payload": "x", "colour": 1}), "colour"),
        ("missing payload", json!({}), "payload"),
        ("array body", json!([1, 2]), ""),
        ("negative delay", json!({"payload": "x", "delay_ms": -1}), ""),
        (
            "absurd delay",
            json!({"payload": "x", "delay_ms": 1u64 << 50}),
            "delay_ms",
        ),
        ("float ttl", json!({"payload": "x", "ttl_ms": 1.5}), ""),
        ("zero ttl", json!({"payload": "x", "ttl_ms": 0}), "ttl_ms"),
        (
            "zero attempts",
            json!({"payload": "x", "max_attempts": 0}),
            "max_attempts",
        ),
        ("tiny lease", json!({"payload": "x", "lease_ms": 1}), "lease_ms"),
        (
            "bad encoding",
            json!({"payload": "x", "payload_encoding": "rot13"}),
            "rot13",
        ),
        (
            "bad base64",
            json!({"payload": "!!", "payload_encoding": "base64"}),
            "base64",
        ),
        (
            "empty key",
            json!({"payload": "x", "idempotency_key": ""}),
            "idempotency_key",
        ),
        ("empty batch", json!({"messages": []}), "got 0"),
        (
            "batch, bad item",
            json!({"messages": [{"payload": "ok"}, {"payload": "x", "delay_ms": -5}]}),
            "",
        ),
        (
            "batch, bad range",
            json!({"messages": [{"payload": "ok"}, {"payload": "x", "max_attempts": 100000}]}),
            "messages[1]",
        ),
    ];
    for (what, body, mentions) in sends {
        c.post(what, &send, body, "invalid_input", mentions).await;
    }
    let receives = [
        ("receive zero", json!({"max_messages": 0}), "max_messages"),
        ("receive too many", json!({"max_messages": 5000}), "max_messages"),
        ("receive as text", json!({"max_messages": "ten"}), "invalid type"),
        ("negative wait", json!({"wait_ms": -5}), ""),
        ("absurd wait", json!({"wait_ms": 86_400_000}), "wait_ms"),
        ("tiny receive lease", json!({"lease_ms": 5}), "lease_ms"),
    ];
    for (what, body, mentions) in receives {
        c.post(what, &recv, body, "invalid_input", mentions).await;
    }
    let policies = [
        ("policy unknown field", json!({"lease": 5}), "lease"),
        ("policy zero lease", json!({"lease_ms": 0}), "lease_ms"),
        ("policy negative", json!({"ttl_ms": -1}), ""),
        ("policy bad expiry", json!({"on_expire": "explode"}), "explode"),
    ];
    for (what, body, mentions) in policies {
        c.put(what, Q, body, "invalid_input", mentions).await;
    }
    assert_eq!(c.checked, 29, "every case above ran its checks");
    s.stop().await;
}

#[tokio::test]
async fn oversize_payloads_and_bodies_get_413() {
    let (s, _leased) = given_a_queue_with_ready_and_leased_messages().await;
    let mut c = Checker::new(&s).await;
    let send = format!("{Q}/messages");
    let big = "x".repeat(PAYLOAD_BYTES_MAX + 1);
    let exact_b64 = B64.encode(vec![7u8; PAYLOAD_BYTES_MAX]);
    let over_b64 = B64.encode(vec![7u8; PAYLOAD_BYTES_MAX + 1]);
    let cases = [
        ("payload over limit", json!({"payload": big}), "1025 bytes"),
        (
            "decoded over limit",
            json!({"payload": over_b64, "payload_encoding": "base64"}),
            "1025 bytes",
        ),
        (
            "batch with one oversize",
            json!({"messages": [{"payload": "ok"}, {"payload": exact_b64, "payload_encoding": "base64"}, {"payload": big}]}),
            "messages[2]",
        ),
        (
            "body over the route limit",
            json!({"payload": "y".repeat(2 * 1024 * 1024)}),
            "limit",
        ),
    ];
    for (what, body, mentions) in cases {
        c.post(what, &send, body, "payload_too_large", mentions).await;
    }
    let raw_path = format!("{Q}/messages/raw");
    c.post_bytes(
        "raw over limit",
        &raw_path,
        vec![0u8; PAYLOAD_BYTES_MAX + 1],
        "payload_too_large",
    )
    .await;
    let ack_body = format!(r#"{{"lease_id":"{}"}}"#, " ".repeat(2 * 1024 * 1024));
    let ack_path = format!("{Q}/messages/{UNKNOWN_ID}/ack");
    c.post_bytes("control body over limit", &ack_path, ack_body, "payload_too_large")
        .await;

    // Exactly at the limit is fine (and changes the queue, so it comes last).
    let ok = s.post_bytes(&raw_path, vec![1u8; PAYLOAD_BYTES_MAX]).await;
    assert_eq!(ok.status, 201, "{ok:?}");
    s.stop().await;
}
