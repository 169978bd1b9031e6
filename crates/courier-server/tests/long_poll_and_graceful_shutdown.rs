//! Long polls wake on a send rather than running out their wait, and a shutdown answers an
//! in-flight long poll at once (empty) before `serve` returns.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::json;

#[tokio::test]
async fn given_a_waiting_receiver_when_a_message_is_sent_should_return_it_early() {
    let s = TestServer::start().await;
    let url = s.url("/v1/queues/default/events/receive");
    let http = s.http.clone();
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        let resp = http
            .post(url)
            .json(&json!({"wait_ms": 20000}))
            .send()
            .await
            .expect("receive");
        resp.json::<serde_json::Value>().await.expect("json")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.send_text("default/events", "wake up").await;
    let got = waiter.await.expect("waiter");
    assert_eq!(got["messages"][0]["payload"], "wake up");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the send, not by the wait running out"
    );

    let started = Instant::now();
    let empty = s
        .post("/v1/queues/default/events/receive", json!({"wait_ms": 300}))
        .await
        .ok();
    assert_eq!(empty["messages"], json!([]));
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "an empty long poll waits"
    );
    s.stop().await;
}

#[tokio::test]
async fn given_a_long_poll_in_flight_when_shutdown_starts_should_answer_it_at_once_then_stop() {
    let s = TestServer::start().await;
    let url = s.url("/v1/queues/default/events/receive");
    let http = s.http.clone();
    let waiter = tokio::spawn(async move {
        http.post(url)
            .json(&json!({"wait_ms": 30000}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = s.base.clone();
    let started = Instant::now();
    s.stop().await;
    assert_eq!(waiter.await.expect("waiter").expect("in-flight request answered"), 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown ends a 30 s long poll early instead of waiting it out: {:?}",
        started.elapsed()
    );
    let refused = reqwest::Client::new().get(format!("{base}/healthz")).send().await;
    assert!(refused.is_err(), "no longer accepting connections");
}
