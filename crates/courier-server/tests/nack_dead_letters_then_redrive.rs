//! Failures count toward max attempts; at the limit the message moves to the DLQ with its
//! last error, and a redrive brings it back with a fresh attempt count.

mod common;

use common::TestServer;
use serde_json::{json, Value};

async fn nack(s: &TestServer, m: &Value, body: Value) {
    let mut body = body;
    body["lease_id"] = m["lease"]["lease_id"].clone();
    let id = m["id"].as_str().unwrap_or_default();
    let r = s
        .post(&format!("/v1/queues/default/work/messages/{id}/nack"), body)
        .await
        .ok();
    assert_eq!(r["status"], "nacked");
}

#[tokio::test]
async fn given_max_attempts_two_when_nacked_twice_should_dead_letter_then_redrive() {
    let s = TestServer::start().await;
    s.put(
        "/v1/queues/default/work",
        json!({"max_attempts": 2, "backoff_initial_ms": 0, "backoff_max_ms": 0}),
    )
    .await
    .ok();
    let id = s.send_text("default/work", "job").await;

    let m = s.receive("default/work", 1).await.remove(0);
    nack(&s, &m, json!({"intent": "defer", "delay_ms": 0})).await;
    let m = s.receive("default/work", 1).await.remove(0);
    assert_eq!(
        (m["failures"].as_u64(), m["deliveries"].as_u64()),
        (Some(0), Some(2)),
        "defer does not count"
    );
    nack(&s, &m, json!({"error": "first boom"})).await;
    let m = s.receive("default/work", 1).await.remove(0);
    assert_eq!(
        (m["attempt"].as_u64(), m["last_error"].as_str()),
        (Some(2), Some("first boom"))
    );
    nack(
        &s,
        &m,
        json!({"intent": "failure", "error": "second boom", "delay_ms": 0}),
    )
    .await;

    assert!(s.receive("default/work", 1).await.is_empty());
    let stats = s.get("/v1/queues/default/work/stats").await.ok();
    assert_eq!(stats["dead_lettered"], 1);
    let dlq = s.get("/v1/queues/default/work/dlq").await.ok();
    let dead = &dlq["messages"][0];
    assert_eq!(dead["id"], id.as_str());
    assert_eq!(dead["status"], "dead_lettered");
    assert_eq!(dead["dead_letter_reason"], "max_attempts");
    assert_eq!(dead["last_error"], "second boom");
    assert_eq!(dead["failures"], 2);

    let none = s
        .post(
            "/v1/queues/default/work/dlq/redrive",
            json!({"ids": ["01890000-0000-7000-8000-000000000000"]}),
        )
        .await
        .ok();
    assert_eq!(none["redriven"], 0, "ids not in the DLQ are skipped");
    let redriven = s.post("/v1/queues/default/work/dlq/redrive", json!({})).await.ok();
    assert_eq!(redriven["redriven"], 1);
    let m = s.receive("default/work", 1).await.remove(0);
    assert_eq!((m["id"].as_str(), m["attempt"].as_u64()), (Some(id.as_str()), Some(1)));
    s.post(
        &format!("/v1/queues/default/work/messages/{id}/ack"),
        json!({"lease_id": m["lease"]["lease_id"]}),
    )
    .await
    .ok();
    s.stop().await;
}

#[tokio::test]
async fn redrive_by_id_and_dlq_purge() {
    let s = TestServer::start().await;
    s.put("/v1/queues/default/work", json!({"max_attempts": 1})).await.ok();
    let a = s.send_text("default/work", "a").await;
    s.send_text("default/work", "b").await;
    for m in s.receive("default/work", 2).await {
        nack(&s, &m, json!({"error": "no"})).await;
    }
    assert_eq!(s.get("/v1/queues/default/work/stats").await.ok()["dead_lettered"], 2);
    let one = s
        .post("/v1/queues/default/work/dlq/redrive", json!({ "ids": [a] }))
        .await
        .ok();
    assert_eq!(one["redriven"], 1);
    let purged = s.post("/v1/queues/default/work/dlq/purge", json!({})).await.ok();
    assert_eq!(purged["purged"], 1);
    let stats = s.get("/v1/queues/default/work/stats").await.ok();
    assert_eq!(
        (stats["ready"].as_u64(), stats["dead_lettered"].as_u64()),
        (Some(1), Some(0))
    );
    s.stop().await;
}
