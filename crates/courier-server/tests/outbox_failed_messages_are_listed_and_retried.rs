//! The outbox's operator routes over a real SQLite outbox: counts by status, failed messages
//! page by page, retry by id and all; bad input is refused with a JSON error and changes
//! nothing; a server without an outbox says so.

mod common;

use std::str::FromStr;
use std::sync::Arc;

use common::TestServer;
use courier_outbox::sqlite::SqliteOutbox;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::SqlitePool;

/// An outbox in a temp file with `failed` failed rows (ids returned in write order) and two
/// pending ones.
async fn outbox_with_failures(dir: &tempfile::TempDir, failed: usize) -> (SqlitePool, Vec<String>) {
    let url = format!("sqlite://{}", dir.path().join("app.db").display());
    let opts = SqliteConnectOptions::from_str(&url)
        .expect("url")
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new().connect_with(opts).await.expect("open app.db");
    courier_outbox::sqlite::migrate(&pool).await.expect("migrate");
    for i in 0..failed + 2 {
        sqlx::query("INSERT INTO outbox (destination, key, payload) VALUES ('orders', ?, ?)")
            .bind(format!("k{i}"))
            .bind(format!("order {i}").into_bytes())
            .execute(&pool)
            .await
            .expect("insert");
    }
    // What a relay leaves behind at max attempts.
    sqlx::query(
        "UPDATE outbox SET status = 'failed', attempts = 10, last_error = 'broker said no' \
         WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
    )
    .bind(i64::try_from(failed).expect("small"))
    .execute(&pool)
    .await
    .expect("fail rows");
    let ids: Vec<String> =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM outbox WHERE status = 'failed' ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("ids")
            .into_iter()
            .map(|id| id.to_string())
            .collect();
    (pool, ids)
}

#[tokio::test]
async fn failed_outbox_messages_are_listed_page_by_page_and_retried() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pool, ids) = outbox_with_failures(&dir, 3).await;
    let s = TestServer::with_outbox(Arc::new(SqliteOutbox::new(pool))).await;

    let stats = s.get("/v1/outbox/stats").await.ok();
    assert_eq!(stats, json!({"pending": 2, "published": 0, "failed": 3}));

    let first = s.get("/v1/outbox/failed?limit=2").await.ok();
    let listed: Vec<&str> = first["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, [ids[0].as_str(), ids[1].as_str()]);
    assert_eq!(first["messages"][0]["payload"], "order 0");
    assert_eq!(first["messages"][0]["last_error"], "broker said no");
    assert_eq!(first["messages"][0]["attempts"], 10);
    let after = first["next_after"].as_i64().expect("a full page has a cursor");
    let second = s.get(&format!("/v1/outbox/failed?limit=2&after={after}")).await.ok();
    assert_eq!(second["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["messages"][0]["id"], ids[2].as_str());
    assert_eq!(second["next_after"], serde_json::Value::Null);

    let one = s.post("/v1/outbox/failed/retry", json!({"ids": [ids[0]]})).await.ok();
    assert_eq!(one, json!({"retried": 1}));
    let again = s.post("/v1/outbox/failed/retry", json!({"ids": [ids[0]]})).await.ok();
    assert_eq!(again, json!({"retried": 0}), "a message no longer failed is skipped");
    let rest = s.post("/v1/outbox/failed/retry", json!({})).await.ok();
    assert_eq!(rest, json!({"retried": 2}));
    let stats = s.get("/v1/outbox/stats").await.ok();
    assert_eq!(stats, json!({"pending": 5, "published": 0, "failed": 0}));
}

#[tokio::test]
async fn bad_outbox_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pool, _) = outbox_with_failures(&dir, 1).await;
    let s = TestServer::with_outbox(Arc::new(SqliteOutbox::new(pool))).await;
    s.get("/v1/outbox/failed?limit=0")
        .await
        .expect_error(400, "invalid_input");
    s.get("/v1/outbox/failed?limit=1001")
        .await
        .expect_error(400, "invalid_input");
    s.get("/v1/outbox/failed?after=x")
        .await
        .expect_error(400, "invalid_input");
    let msg = s
        .post("/v1/outbox/failed/retry", json!({"ids": ["not-a-uuid"]}))
        .await
        .expect_error(400, "invalid_input");
    assert!(msg.contains("not-a-uuid"), "{msg}");
    s.post("/v1/outbox/failed/retry", json!({"ids": []}))
        .await
        .expect_error(400, "invalid_input");
    s.post("/v1/outbox/failed/retry", json!({"all": true}))
        .await
        .expect_error(400, "invalid_input");
    let stats = s.get("/v1/outbox/stats").await.ok();
    assert_eq!(stats["failed"], 1, "nothing was retried");
}

#[tokio::test]
async fn a_server_without_an_outbox_says_so() {
    let s = TestServer::start().await;
    for path in ["/v1/outbox/stats", "/v1/outbox/failed"] {
        let msg = s.get(path).await.expect_error(404, "outbox_not_configured");
        assert!(msg.contains("--outbox-database"), "{msg}");
    }
    s.post("/v1/outbox/failed/retry", json!({}))
        .await
        .expect_error(404, "outbox_not_configured");
}
