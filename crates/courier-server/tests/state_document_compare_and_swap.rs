//! A lease holder reads and writes its message's state document with etags; a stale
//! etag or lease is a 409 and the document stays as it was.

mod common;

use common::TestServer;
use serde_json::json;

#[tokio::test]
async fn given_a_lease_when_writing_with_if_match_should_swap_only_from_the_current_version() {
    let s = TestServer::start().await;
    let id = s.send_text("default/saga", "step").await;
    let m = s.receive("default/saga", 1).await.remove(0);
    let lease = m["lease"]["lease_id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/queues/default/saga/messages/{id}/state");

    let first = s
        .send(s.request(reqwest::Method::GET, &path).header("x-courier-lease", &lease))
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body, json!({"value": null, "etag": "v0"}));
    assert_eq!(first.headers.get("etag").and_then(|v| v.to_str().ok()), Some("\"v0\""));

    let put = |if_match: Option<&'static str>, value: serde_json::Value| {
        let mut rb = s
            .request(reqwest::Method::PUT, &path)
            .header("x-courier-lease", &lease)
            .json(&value);
        if let Some(tag) = if_match {
            rb = rb.header("if-match", tag);
        }
        s.send(rb)
    };
    let written = put(Some("\"v0\""), json!({"step": 1})).await.ok();
    assert_eq!(written["etag"], "v1");
    put(Some("v0"), json!({"step": 99}))
        .await
        .expect_error(409, "etag_mismatch");
    let unconditional = put(None, json!({"step": 2})).await.ok();
    assert_eq!(unconditional["etag"], "v2");

    let by_query = s.get(&format!("{path}?lease_id={lease}")).await.ok();
    assert_eq!(by_query, json!({"value": {"step": 2}, "etag": "v2"}));

    let stale = "01890000-0000-7000-8000-000000000001";
    s.get(&format!("{path}?lease_id={stale}"))
        .await
        .expect_error(409, "lease_conflict");
    s.get(&path).await.expect_error(400, "invalid_input");

    s.post(
        &format!("/v1/queues/default/saga/messages/{id}/ack"),
        json!({ "lease_id": lease }),
    )
    .await
    .ok();
    s.get(&format!("{path}?lease_id={lease}"))
        .await
        .expect_error(404, "message_not_found");
    s.stop().await;
}
