//! The NATS publisher against a real JetStream server (`COURIER_TEST_NATS_URL`, default
//! `nats://127.0.0.1:4222`): what arrives, dedup, per-message results, timeouts and outages.

mod common;

use std::time::{Duration, Instant};

use courier_core::{PublishError, Publisher};
use courier_nats::{ConnectError, NatsPublisher, StreamSpec};

use common::{
    assert_all_unavailable_within, closed_port, config, message, publisher, upstream, url, Proxy, TestStream,
};

#[tokio::test]
async fn a_batch_arrives_with_payload_headers_id_and_content_type_in_key_order() {
    let stream = TestStream::create().await;
    let publisher = publisher().await;
    let mut batch = Vec::new();
    for i in 0..6 {
        let key = if i % 2 == 0 { "even" } else { "odd" };
        let mut m = message(&stream.subject(key), Some(key), format!("payload {i}").as_bytes());
        m.headers.insert("Trace-Id".into(), format!("t-{i}"));
        m.content_type = Some("text/plain".into());
        batch.push(m);
    }
    let mut binary = message(&stream.subject("bin"), None, &[0, 159, 146, 150, 255]);
    binary.content_type = Some("application/octet-stream".into());
    batch.push(binary);

    let results = publisher.publish(&batch).await;
    assert_eq!(results, vec![Ok(()); batch.len()]);

    let stored = stream.read_all().await;
    assert_eq!(stored.len(), batch.len());
    for (sent, got) in batch.iter().zip(&stored) {
        let headers = got.headers.as_ref().expect("headers");
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(got.subject.as_str(), sent.destination);
        assert_eq!(got.payload, sent.payload);
        assert_eq!(header("Nats-Msg-Id"), Some(sent.id.to_string()));
        assert_eq!(header("Courier-Key"), sent.key.clone());
        assert_eq!(header("Content-Type"), sent.content_type.clone());
        assert_eq!(header("Trace-Id"), sent.headers.get("Trace-Id").cloned());
    }
    stream.delete().await;
}

#[tokio::test]
async fn republishing_an_id_is_acknowledged_but_stored_once() {
    let stream = TestStream::create().await;
    let publisher = publisher().await;
    let m = message(&stream.subject("dup"), Some("k"), b"once");
    assert_eq!(publisher.publish(std::slice::from_ref(&m)).await, vec![Ok(())]);
    assert_eq!(publisher.publish(&[m.clone(), m.clone()]).await, vec![Ok(()), Ok(())]);

    let stored = stream.read_all().await;
    assert_eq!(stored.len(), 1, "JetStream's duplicate window dropped the re-publishes");
    assert_eq!(stored[0].payload, m.payload);
    stream.delete().await;
}

#[tokio::test]
async fn each_result_belongs_to_its_message_and_a_failed_key_stops() {
    let stream = TestStream::create().await;
    let publisher = publisher().await;
    let unbound = format!("courier-test.{}.no-stream", uuid::Uuid::new_v4().simple());
    let mut bad_header = message(&stream.subject("c"), Some("C"), b"c0");
    bad_header.headers.insert("bad:name".into(), "x".into());
    let batch = vec![
        message(&stream.subject("a"), Some("A"), b"a0"), // 0 ok
        message(&unbound, Some("B"), b"b0"),             // 1 no stream: rejected
        message(&stream.subject("b"), Some("B"), b"b1"), // 2 key B failed: not attempted
        bad_header,                                      // 3 header NATS cannot carry: rejected
        message(&stream.subject("c"), Some("C"), b"c1"), // 4 key C failed: not attempted
        message(&unbound, None, b"n0"),                  // 5 no stream: rejected
        message(&stream.subject("n"), None, b"n1"),      // 6 ok
        message(&stream.subject("a"), Some("A"), b"a1"), // 7 ok
    ];
    let started = Instant::now();
    let results = publisher.publish(&batch).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no stream is an answer, not a timeout"
    );

    assert_eq!(results.len(), batch.len());
    let expect_rejected = |i: usize, needle: &str| match &results[i] {
        Err(PublishError::Rejected(why)) => assert!(why.contains(needle), "{i}: {why}"),
        other => panic!("message {i}: expected Rejected, got {other:?}"),
    };
    let expect_not_attempted = |i: usize| match &results[i] {
        Err(PublishError::Unavailable(why)) => assert!(why.contains("not attempted"), "{i}: {why}"),
        other => panic!("message {i}: expected not attempted, got {other:?}"),
    };
    assert_eq!((&results[0], &results[6], &results[7]), (&Ok(()), &Ok(()), &Ok(())));
    expect_rejected(1, "no JetStream stream");
    expect_not_attempted(2);
    expect_rejected(3, "bad:name");
    expect_not_attempted(4);
    expect_rejected(5, "no JetStream stream");

    let stored: Vec<_> = stream.read_all().await.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(
        stored,
        [&b"a0"[..], b"n1", b"a1"],
        "only the Ok messages arrived, in order"
    );
    stream.delete().await;
}

#[tokio::test]
async fn a_configured_stream_is_created_at_connect() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut config = config(&url());
    config.stream = Some(StreamSpec {
        name: format!("courier_test_{id}"),
        subjects: vec![format!("courier-test.{id}.>")],
    });
    let publisher = NatsPublisher::connect(config)
        .await
        .expect("connect and create the stream");
    let m = message(&format!("courier-test.{id}.x"), None, b"hello");
    assert_eq!(publisher.publish(&[m]).await, vec![Ok(())]);

    let jetstream = async_nats::jetstream::new(async_nats::connect(url().as_str()).await.expect("connect"));
    let mut stream = jetstream
        .get_stream(format!("courier_test_{id}"))
        .await
        .expect("created");
    assert_eq!(stream.info().await.expect("info").state.messages, 1);
    jetstream
        .delete_stream(format!("courier_test_{id}"))
        .await
        .expect("delete");
}

#[tokio::test]
async fn an_unreachable_server_fails_connect_and_every_lazy_publish_quickly() {
    let url = format!("nats://127.0.0.1:{}", closed_port().await);
    let started = Instant::now();
    let error = NatsPublisher::connect(config(&url))
        .await
        .err()
        .expect("nothing listens there");
    assert!(matches!(error, ConnectError::Unreachable { .. }), "{error}");
    assert!(error.is_retriable());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once: {:?}",
        started.elapsed()
    );

    let lazy = NatsPublisher::connect_lazy(config(&url))
        .await
        .expect("lazy connect returns at once");
    let batch = [message("a.b", Some("k"), b"1"), message("a.c", None, b"2")];
    let started = Instant::now();
    let results = lazy.publish(&batch).await;
    assert_all_unavailable_within(&results, started, Duration::from_millis(500));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_connect() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("nats://{}", silent.local_addr().expect("addr"));
    let mut config = config(&url);
    config.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = NatsPublisher::connect(config).await.err().expect("no INFO ever comes");
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );
    assert!(error.is_retriable(), "{error}");
}

#[tokio::test]
async fn during_an_outage_messages_are_unavailable_and_publishing_resumes_after_it() {
    let stream = TestStream::create().await;
    let proxy = Proxy::start("127.0.0.1:0".parse().expect("addr"), upstream()).await;
    let addr = proxy.addr;
    let publisher = NatsPublisher::connect(config(&format!("nats://{addr}")))
        .await
        .expect("connect through the proxy");
    let before = message(&stream.subject("o"), Some("k"), b"before");
    assert_eq!(publisher.publish(&[before]).await, vec![Ok(())]);

    proxy.stop().await;
    let during = [
        message(&stream.subject("o"), Some("k"), b"during"),
        message(&stream.subject("p"), None, b"during"),
    ];
    let started = Instant::now();
    let results = publisher.publish(&during).await;
    // A dropped connection fails the awaited acks at once, not at the timeout.
    assert_all_unavailable_within(&results, started, Duration::from_millis(500));

    let proxy = Proxy::start(addr, upstream()).await;
    let after = message(&stream.subject("o"), Some("k"), b"after");
    let deadline = Instant::now() + Duration::from_secs(10);
    while publisher.publish(std::slice::from_ref(&after)).await != vec![Ok(())] {
        assert!(Instant::now() < deadline, "the client did not reconnect within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored: Vec<_> = stream.read_all().await.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(stored.first().map(|p| &p[..]), Some(&b"before"[..]));
    assert_eq!(stored.last().map(|p| &p[..]), Some(&b"after"[..]));
    proxy.stop().await;
    stream.delete().await;
}
