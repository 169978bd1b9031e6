//! The happy paths over HTTP: one message, a batch with duplicates, a raw body, base64,
//! peeking, policies and queue administration.

mod common;

use base64::Engine as _;
use common::TestServer;
use serde_json::json;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[tokio::test]
async fn one_message_round_trips_with_all_its_fields() {
    let s = TestServer::start().await;
    let sent = s
        .post(
            "/v1/queues/shop/orders/messages",
            json!({
                "payload": "hello", "content_type": "text/plain", "attributes": {"k": "v"},
                "correlation_id": "req-1", "max_attempts": 3, "ordering_group": "g1"
            }),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let id = sent.body["messages"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(sent.body["messages"][0]["duplicate"], false);

    let got = s
        .post(
            "/v1/queues/shop/orders/receive",
            json!({"max_messages": 5, "lease_ms": 5000}),
        )
        .await
        .ok();
    let m = &got["messages"][0];
    assert_eq!(got["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["payload"], "hello");
    assert_eq!(m["payload_encoding"], "utf8");
    assert_eq!(m["content_type"], "text/plain");
    assert_eq!(m["attributes"], json!({"k": "v"}));
    assert_eq!(m["correlation_id"], "req-1");
    assert_eq!(m["ordering_group"], "g1");
    assert_eq!((m["attempt"].as_u64(), m["failures"].as_u64()), (Some(1), Some(0)));
    assert_eq!(
        (m["deliveries"].as_u64(), m["max_attempts"].as_u64()),
        (Some(1), Some(3))
    );
    assert!(m["last_error"].is_null());
    assert!(m["enqueued_at_ms"].as_i64().is_some());
    let lease = &m["lease"];
    assert_eq!(lease["fencing_token"], 1);
    assert_eq!(lease["attempt"], 1);
    assert!(lease["deadline_ms"].as_i64() > m["enqueued_at_ms"].as_i64());

    let stats = s.get("/v1/queues/shop/orders/stats").await.ok();
    assert_eq!(
        (stats["ready"].as_u64(), stats["in_flight"].as_u64()),
        (Some(0), Some(1))
    );

    let extended = s
        .post(
            &format!("/v1/queues/shop/orders/messages/{id}/extend"),
            json!({"lease_id": lease["lease_id"], "by_ms": 60000}),
        )
        .await
        .ok();
    assert_eq!(extended["lease_id"], lease["lease_id"]);
    assert!(extended["deadline_ms"].as_i64() > lease["deadline_ms"].as_i64());

    let acked = s
        .post(
            &format!("/v1/queues/shop/orders/messages/{id}/ack"),
            json!({"lease_id": lease["lease_id"]}),
        )
        .await
        .ok();
    assert_eq!(acked, json!({"id": id, "status": "acked"}));
    let stats = s.get("/v1/queues/shop/orders/stats").await.ok();
    assert_eq!(
        (stats["ready"].as_u64(), stats["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
    s.stop().await;
}

#[tokio::test]
async fn a_batch_is_enqueued_in_order_and_duplicates_are_reported() {
    let s = TestServer::start().await;
    let sent = s
        .post(
            "/v1/queues/default/jobs/messages",
            json!({"messages": [
                {"payload": "a", "idempotency_key": "k1"},
                {"payload": "b"},
                {"payload": "c", "idempotency_key": "k1"}
            ]}),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let results = sent.body["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 3);
    assert_eq!(results[2]["duplicate"], true);
    assert_eq!(results[2]["id"], results[0]["id"]);
    let again = s
        .post(
            "/v1/queues/default/jobs/messages",
            json!({"payload": "z", "idempotency_key": "k1"}),
        )
        .await
        .ok();
    assert_eq!(again["messages"][0]["duplicate"], true);

    let got = s.receive("default/jobs", 10).await;
    let payloads: Vec<_> = got.iter().map(|m| m["payload"].as_str().unwrap_or_default()).collect();
    assert_eq!(payloads, ["a", "b"]);
    let receipts: Vec<_> = got
        .iter()
        .map(|m| json!({"message_id": m["id"], "lease_id": m["lease"]["lease_id"]}))
        .collect();
    let unknown = json!({"message_id": "01890000-0000-7000-8000-000000000000", "lease_id": "01890000-0000-7000-8000-000000000001"});
    let mut all = receipts.clone();
    all.push(unknown);
    let acked = s
        .post("/v1/queues/default/jobs/messages/ack", json!({ "receipts": all }))
        .await
        .ok();
    let oks: Vec<_> = acked["results"]
        .as_array()
        .map(|r| r.iter().map(|x| x["ok"].as_bool()).collect())
        .unwrap_or_default();
    assert_eq!(oks, [Some(true), Some(true), Some(false)]);
    assert_eq!(acked["results"][2]["error"]["code"], "message_not_found");
    s.stop().await;
}

#[tokio::test]
async fn raw_bodies_and_base64_carry_binary_payloads() {
    let s = TestServer::start().await;
    let binary = vec![0u8, 159, 146, 150, 255];
    let raw = s
        .send(
            s.request(
                reqwest::Method::POST,
                "/v1/queues/default/bin/messages/raw?correlation_id=c1&max_attempts=2",
            )
            .header("content-type", "application/octet-stream")
            .body(binary.clone()),
        )
        .await;
    assert_eq!(raw.status, 201, "{raw:?}");
    let sent = s
        .post(
            "/v1/queues/default/bin/messages",
            json!({"payload": B64.encode(&binary), "payload_encoding": "base64"}),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");

    // Asked for UTF-8, the server falls back to base64 for bytes that are not text, and says so.
    let got = s
        .post(
            "/v1/queues/default/bin/receive",
            json!({"max_messages": 2, "payload_encoding": "utf8"}),
        )
        .await
        .ok();
    for m in got["messages"].as_array().cloned().unwrap_or_default() {
        assert_eq!(m["payload_encoding"], "base64");
        let decoded = B64.decode(m["payload"].as_str().unwrap_or_default()).expect("base64");
        assert_eq!(decoded, binary);
    }
    assert_eq!(got["messages"][0]["content_type"], "application/octet-stream");
    assert_eq!(got["messages"][0]["correlation_id"], "c1");
    assert_eq!(got["messages"][0]["max_attempts"], 2);

    s.send_text("default/bin", "text").await;
    let got = s
        .post("/v1/queues/default/bin/receive", json!({"payload_encoding": "base64"}))
        .await
        .ok();
    assert_eq!(got["messages"][0]["payload"], B64.encode("text"));
    s.stop().await;
}

#[tokio::test]
async fn peeking_policies_and_queue_administration() {
    let s = TestServer::start().await;
    let put = s
        .put("/v1/queues/team/mail", json!({"lease_ms": 2000, "max_attempts": 7}))
        .await
        .ok();
    assert_eq!(
        (put["lease_ms"].as_u64(), put["max_attempts"].as_u64()),
        (Some(2000), Some(7))
    );
    assert_eq!(put["backoff_multiplier"], 2, "fields left out keep their defaults");
    let ids = [
        s.send_text("team/mail", "one").await,
        s.send_text("team/mail", "two").await,
        s.send_text("team/mail", "three").await,
    ];

    let page = s.get("/v1/queues/team/mail/messages?limit=2").await.ok();
    assert_eq!(page["messages"][0]["id"], ids[0].as_str());
    assert_eq!(page["messages"][0]["status"], "ready");
    assert_eq!(page["next_after"], ids[1].as_str());
    let rest = s
        .get(&format!("/v1/queues/team/mail/messages?limit=2&after={}", ids[1]))
        .await
        .ok();
    assert_eq!(rest["messages"][0]["payload"], "three");
    assert!(rest["next_after"].is_null());
    let one = s.get(&format!("/v1/queues/team/mail/messages/{}", ids[1])).await.ok();
    assert_eq!(one["payload"], "two");
    assert!(one.get("lease").is_none(), "a peek carries no lease");

    let detail = s.get("/v1/queues/team/mail").await.ok();
    assert_eq!(detail["policy"]["max_attempts"], 7);
    assert_eq!(detail["stats"]["ready"], 3);
    let listed = s.get("/v1/queues?namespace=team").await.ok();
    assert_eq!(listed["queues"][0]["name"], "mail");
    assert_eq!(
        s.get("/v1/queues").await.ok()["queues"].as_array().map(Vec::len),
        Some(1)
    );

    let purged = s.post("/v1/queues/team/mail/purge", json!({})).await.ok();
    assert_eq!(purged["purged"], 3);
    let deleted = s
        .send(s.request(reqwest::Method::DELETE, "/v1/queues/team/mail"))
        .await
        .ok();
    assert_eq!(deleted["deleted"], true);
    s.get("/v1/queues/team/mail/stats")
        .await
        .expect_error(404, "queue_not_found");
    s.stop().await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let s = TestServer::start().await;
    assert_eq!(s.get("/healthz").await.ok()["status"], "ok");
    assert_eq!(s.get("/readyz").await.ok()["status"], "ready");
    s.stop().await;
}
