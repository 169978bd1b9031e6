//! With a token configured, everything but the probes needs `Authorization: Bearer <token>`.

mod common;

use common::TestServer;
use courier_server::ServerConfig;
use serde_json::json;

#[tokio::test]
async fn given_a_token_when_calling_without_it_should_refuse_with_401_json() {
    let config = ServerConfig {
        auth_token: Some("s3cret-token".into()),
        ..ServerConfig::default()
    };
    let s = TestServer::with_config(config).await;
    let anon = reqwest::Client::new();
    let url = s.url("/v1/queues/default/q/messages");

    let none = s.send(anon.post(&url).json(&json!({"payload": "x"}))).await;
    assert!(none.expect_error(401, "unauthorized").contains("Bearer"));
    let wrong = s
        .send(
            anon.post(&url)
                .bearer_auth("s3cret-tokeN")
                .json(&json!({"payload": "x"})),
        )
        .await;
    wrong.expect_error(401, "unauthorized");
    let prefix = s
        .send(anon.post(&url).bearer_auth("s3cret").json(&json!({"payload": "x"})))
        .await;
    prefix.expect_error(401, "unauthorized");
    let basic = s
        .send(anon.get(s.url("/v1/queues")).basic_auth("u", Some("s3cret-token")))
        .await;
    basic.expect_error(401, "unauthorized");
    s.send(anon.get(s.url("/openapi.json")))
        .await
        .expect_error(401, "unauthorized");
    s.send(anon.get(s.url("/nope"))).await.expect_error(401, "unauthorized");

    assert_eq!(s.send(anon.get(s.url("/healthz"))).await.status, 200);
    assert_eq!(s.send(anon.get(s.url("/readyz"))).await.status, 200);

    // The scheme name is case-insensitive; the token is not.
    let lower = anon
        .post(&url)
        .header("authorization", "bearer s3cret-token")
        .json(&json!({"payload": "x"}));
    assert_eq!(s.send(lower).await.status, 201);

    // The harness sends the token.
    s.send_text("default/q", "x").await;
    let stats = s.get("/v1/queues/default/q/stats").await.ok();
    assert_eq!(stats["ready"], 2, "only the two authorized sends landed");
    s.stop().await;
}
