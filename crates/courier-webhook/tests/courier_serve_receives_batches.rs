//! The Courier HTTP publisher against a real `courier serve`: the server's router over a
//! SQLite engine in a temp dir, served on an ephemeral port in this process.

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_core::{ListOptions, MessageInfo, OutboundMessage, PublishError, Publisher, QueueEngine, QueueRef};
use courier_server::{AppState, ServerConfig};
use courier_sqlite::{SqliteEngine, SqliteOptions};
use courier_webhook::{ConnectError, CourierHttpConfig, CourierHttpPublisher};

use common::message;

struct Server {
    url: String,
    engine: Arc<dyn QueueEngine>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(auth_token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = SqliteOptions::new(dir.path().join("courier.db"));
        let engine: Arc<dyn QueueEngine> = Arc::new(SqliteEngine::open(opts).await.expect("open engine"));
        let config = ServerConfig {
            auth_token: auth_token.map(str::to_owned),
            ..ServerConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = AppState::new(engine.clone(), config);
        tokio::spawn(courier_server::serve(listener, state, std::future::pending()));
        Self { url, engine, _dir: dir }
    }

    fn config(&self) -> CourierHttpConfig {
        let mut config = CourierHttpConfig::from_url(&self.url).expect("URL");
        config.timeout = Duration::from_secs(2);
        config
    }

    /// The live messages of `queue` (`ns/q` or `q`), oldest first.
    async fn messages(&self, queue: &str) -> Vec<MessageInfo> {
        let queue = QueueRef::from_str(queue).expect("queue name");
        let options = ListOptions {
            after: None,
            limit: 1000,
        };
        match self.engine.list_messages(&queue, options).await {
            Ok(page) => page.items,
            Err(e) => panic!("list {queue}: {e}"),
        }
    }
}

#[tokio::test]
async fn a_batch_lands_in_its_queues_with_groups_attributes_and_once_per_id() {
    let server = Server::start(None).await;
    let publisher = CourierHttpPublisher::connect(server.config())
        .await
        .expect("server answers");
    let mut batch = Vec::new();
    for i in 0..6 {
        let queue = if i % 2 == 0 { "orders" } else { "billing/invoices" };
        let mut m = message(queue, Some(["a", "b", "c"][i % 3]), format!("{i}").as_bytes());
        m.content_type = Some("application/json".into());
        m.headers.insert("Trace-Id".into(), format!("t-{i}"));
        batch.push(m);
    }
    batch.push(message("orders", None, &[0, 159, 255]));

    assert_eq!(publisher.publish(&batch).await, vec![Ok(()); batch.len()]);
    assert_eq!(
        publisher.publish(&batch).await,
        vec![Ok(()); batch.len()],
        "duplicates count as delivered"
    );

    // Per-key order is what holds: key "a" moves to the other queue at message 3, so its
    // later messages wait for the first wave, and the unkeyed message 6 may land before them.
    for queue in ["default/orders", "billing/invoices"] {
        let destination = queue.trim_start_matches("default/");
        let got = server.messages(queue).await;
        let mut sent: Vec<&OutboundMessage> = batch.iter().filter(|m| m.destination == destination).collect();
        assert_eq!(got.len(), sent.len(), "{queue}: once per id");
        for info in &got {
            let at = sent
                .iter()
                .position(|m| m.payload == info.payload)
                .expect("a sent payload, binary intact");
            let m = sent.remove(at);
            assert!(
                sent[..at]
                    .iter()
                    .all(|earlier| earlier.key.is_none() || earlier.key != m.key),
                "{queue}: key order"
            );
            assert_eq!(info.content_type, m.content_type);
            assert_eq!(info.ordering_group, m.key);
            let trace = info
                .attributes
                .get("Trace-Id")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            assert_eq!(trace, m.headers.get("Trace-Id").cloned());
        }
    }
}

#[tokio::test]
async fn a_refused_batch_is_retried_one_by_one_so_each_message_gets_its_own_result() {
    let server = Server::start(None).await;
    let publisher = CourierHttpPublisher::new(server.config()).expect("config");
    let long_key = "k".repeat(300); // over the server's 256-byte limit for ordering groups
    let batch = vec![
        message("orders", Some("A"), b"a0"),      // 0 ok
        message("orders", Some(&long_key), b"x"), // 1 400: rejected
        message("orders", Some(&long_key), b"y"), // 2 its key failed: not attempted
        message("orders", None, b"n0"),           // 3 ok
        message("Not A Queue!", Some("B"), b"b"), // 4 invalid queue name: rejected, not sent
        message("orders", Some("B"), b"b1"),      // 5 key B failed (another queue): not attempted
        message("orders", Some("A"), b"a1"),      // 6 ok
    ];
    let results = publisher.publish(&batch).await;

    let expect = |i: usize, rejected: bool, needle: &str| match &results[i] {
        Err(PublishError::Rejected(why)) if rejected => assert!(why.contains(needle), "{i}: {why}"),
        Err(PublishError::Unavailable(why)) if !rejected => assert!(why.contains(needle), "{i}: {why}"),
        other => panic!("message {i}: expected {needle}, got {other:?}"),
    };
    assert_eq!((&results[0], &results[3], &results[6]), (&Ok(()), &Ok(()), &Ok(())));
    expect(1, true, "HTTP 400");
    expect(2, false, "not attempted");
    expect(4, true, "not a queue");
    expect(5, false, "not attempted");

    let got: Vec<Bytes> = server.messages("orders").await.into_iter().map(|m| m.payload).collect();
    assert_eq!(got, [&b"a0"[..], b"n0", b"a1"], "only the Ok ones, in order");
}

#[tokio::test]
async fn the_bearer_token_is_checked_at_connect_and_sent_with_every_batch() {
    let server = Server::start(Some("s3cret")).await;
    let error = CourierHttpPublisher::connect(server.config())
        .await
        .err()
        .expect("no token");
    assert!(matches!(error, ConnectError::Refused { status: 401, .. }), "{error}");

    let without = CourierHttpPublisher::new(server.config()).expect("config");
    let results = without.publish(&[message("orders", None, b"1")]).await;
    assert!(
        matches!(&results[0], Err(PublishError::Rejected(e)) if e.contains("401")),
        "{results:?}"
    );

    let mut config = server.config();
    config.auth_token = Some("s3cret".into());
    let with = CourierHttpPublisher::connect(config).await.expect("token accepted");
    assert_eq!(with.publish(&[message("orders", None, b"2")]).await, vec![Ok(())]);
    assert_eq!(server.messages("orders").await.len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_fails_connect_and_every_message_quickly() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let config = CourierHttpConfig::from_url(&format!("http://{addr}")).expect("URL");
    let started = Instant::now();
    let error = CourierHttpPublisher::connect(config.clone())
        .await
        .err()
        .expect("nothing listens");
    assert!(
        matches!(error, ConnectError::Unreachable { .. }) && error.is_retriable(),
        "{error}"
    );

    let publisher = CourierHttpPublisher::new(config).expect("config");
    let batch = [
        message("a", Some("k"), b"1"),
        message("b", Some("k"), b"2"),
        message("c", None, b"3"),
    ];
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
