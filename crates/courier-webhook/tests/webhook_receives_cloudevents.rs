//! The webhook publisher against a real HTTP receiver (axum on an ephemeral port) that records
//! every request and answers by path: `/hooks/status/<code>` with that status (503 with
//! `Retry-After: 7`), `/hooks/slow` after 2 s, anything else 200.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use common::message;
use courier_core::{PublishError, Publisher};
use courier_webhook::{WebhookConfig, WebhookPublisher};

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

async fn receive(State(log): State<Log>, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let path = uri.path().to_owned();
    log.lock().expect("log").push(Received {
        path: path.clone(),
        headers,
        body,
    });
    if path == "/hooks/slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let code = path
        .strip_prefix("/hooks/status/")
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let status = StatusCode::from_u16(code).expect("status");
    let mut headers = HeaderMap::new();
    if code == 503 {
        headers.insert("retry-after", "7".parse().expect("value"));
    }
    (status, headers, format!("answered {code}"))
}

/// A receiver on 127.0.0.1:0 and a publisher aimed at its `/hooks`.
async fn receiver() -> (Log, WebhookConfig) {
    let log = Log::default();
    let app = axum::Router::new().fallback(receive).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut config = WebhookConfig::from_url(&format!("http://{addr}/hooks?ce_source=%2Fshop")).expect("URL");
    config.timeout = Duration::from_secs(1);
    (log, config)
}

fn header(r: &Received, name: &str) -> Option<String> {
    r.headers.get(name).map(|v| v.to_str().expect("ASCII").to_owned())
}

#[tokio::test]
async fn events_arrive_in_binary_mode_with_their_attributes_in_key_order() {
    let (log, mut config) = receiver().await;
    config.bearer_token = Some("t0ken".into());
    let publisher = WebhookPublisher::new(config).expect("config");
    let mut batch = Vec::new();
    for i in 0..12 {
        let key = ["a", "b", "c"][i % 3];
        let mut m = message(
            if i % 2 == 0 { "orders" } else { "orders/created" },
            Some(key),
            format!("{i}").as_bytes(),
        );
        m.content_type = Some("application/json".into());
        m.headers.insert("Tenant".into(), "acme".into());
        m.headers.insert("Trace-Id".into(), format!("t-{i}"));
        batch.push(m);
    }
    let mut typed = message("", None, &[0, 255]);
    typed.headers.insert("ce-type".into(), "order.created".into());
    batch.push(typed);

    assert_eq!(publisher.publish(&batch).await, vec![Ok(()); batch.len()]);

    let received = log.lock().expect("log").clone();
    assert_eq!(received.len(), batch.len());
    for key in ["a", "b", "c"] {
        let sent: Vec<String> = batch
            .iter()
            .filter(|m| m.key.as_deref() == Some(key))
            .map(|m| m.id.to_string())
            .collect();
        let got: Vec<String> = received
            .iter()
            .filter(|r| header(r, "ce-subject").as_deref() == Some(key))
            .filter_map(|r| header(r, "ce-id"))
            .collect();
        assert_eq!(got, sent, "key {key} arrived in batch order");
    }
    for m in &batch {
        let r = received
            .iter()
            .find(|r| header(r, "ce-id") == Some(m.id.to_string()))
            .expect("arrived");
        let path = if m.destination.is_empty() {
            "/hooks".to_owned()
        } else {
            format!("/hooks/{}", m.destination)
        };
        assert_eq!(r.path, path);
        assert_eq!(r.body, m.payload);
        assert_eq!(header(r, "ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(header(r, "ce-source").as_deref(), Some("/shop"));
        assert_eq!(header(r, "ce-time").as_deref(), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(header(r, "ce-subject"), m.key);
        assert_eq!(header(r, "content-type"), m.content_type);
        assert_eq!(
            header(r, "ce-tenant"),
            m.headers.get("Tenant").cloned(),
            "a valid extension name"
        );
        assert_eq!(
            header(r, "trace-id"),
            m.headers.get("Trace-Id").cloned(),
            "not one: a plain header"
        );
        assert_eq!(header(r, "authorization").as_deref(), Some("Bearer t0ken"));
        let event_type = m.headers.get("ce-type").map_or("courier.message", String::as_str);
        assert_eq!(header(r, "ce-type").as_deref(), Some(event_type));
    }
}

#[tokio::test]
async fn each_result_follows_its_answer_and_a_failed_key_stops() {
    let (log, config) = receiver().await;
    let publisher = WebhookPublisher::new(config).expect("config");
    let batch = vec![
        message("ok", Some("A"), b"a0"),         // 0 200
        message("status/400", Some("A"), b"a1"), // 1 400: rejected
        message("ok", Some("A"), b"a2"),         // 2 key A failed: not attempted
        message("status/503", Some("B"), b"b0"), // 3 503: unavailable, Retry-After quoted
        message("status/429", None, b"n0"),      // 4 unavailable
        message("status/409", None, b"n1"),      // 5 unavailable
        message("status/404", None, b"n2"),      // 6 rejected
        message("status/301", None, b"n3"),      // 7 redirect not followed: rejected
        message("status/204", None, b"n4"),      // 8 ok
        message("../escape", None, b"n5"),       // 9 bad destination: rejected, not sent
    ];
    let results = publisher.publish(&batch).await;

    let expect = |i: usize, rejected: bool, needle: &str| match &results[i] {
        Err(PublishError::Rejected(why)) if rejected => assert!(why.contains(needle), "{i}: {why}"),
        Err(PublishError::Unavailable(why)) if !rejected => assert!(why.contains(needle), "{i}: {why}"),
        other => panic!("message {i}: expected {needle}, got {other:?}"),
    };
    assert_eq!((&results[0], &results[8]), (&Ok(()), &Ok(())));
    expect(1, true, "HTTP 400 Bad Request: answered 400");
    expect(2, false, "not attempted");
    expect(3, false, "Retry-After: 7");
    expect(4, false, "HTTP 429");
    expect(5, false, "HTTP 409");
    expect(6, true, "HTTP 404");
    expect(7, true, "HTTP 301");
    expect(9, true, "..");

    let bodies: Vec<Bytes> = log.lock().expect("log").iter().map(|r| r.body.clone()).collect();
    assert_eq!(
        bodies.len(),
        8,
        "neither the not-attempted message nor the bad destination was sent"
    );
    assert!(!bodies.contains(&Bytes::from_static(b"a2")) && !bodies.contains(&Bytes::from_static(b"n5")));
}

#[tokio::test]
async fn an_unreachable_endpoint_makes_every_message_unavailable_quickly() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let publisher =
        WebhookPublisher::new(WebhookConfig::from_url(&format!("http://{addr}/hooks")).expect("URL")).expect("config");
    let batch: Vec<_> = (0..50)
        .map(|i| message("x", Some(&format!("k{}", i % 5)), b"p"))
        .collect();
    let started = Instant::now();
    let results = publisher.publish(&batch).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        results.iter().all(|r| matches!(r, Err(PublishError::Unavailable(_)))),
        "{results:?}"
    );
}

#[tokio::test]
async fn a_slow_endpoint_times_out_and_the_rest_of_the_batch_is_not_attempted() {
    let (log, mut config) = receiver().await;
    config.timeout = Duration::from_millis(300);
    config.concurrency_max = 1;
    let publisher = WebhookPublisher::new(config).expect("config");
    let batch = [
        message("slow", None, b"1"),
        message("ok", None, b"2"),
        message("ok", Some("k"), b"3"),
    ];
    let started = Instant::now();
    let results = publisher.publish(&batch).await;
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&results[0], Err(PublishError::Unavailable(e)) if e.contains("in time")),
        "{results:?}"
    );
    assert!(
        results[1..]
            .iter()
            .all(|r| matches!(r, Err(PublishError::Unavailable(e)) if e.contains("not attempted"))),
        "{results:?}"
    );
    assert_eq!(log.lock().expect("log").len(), 1);
}
