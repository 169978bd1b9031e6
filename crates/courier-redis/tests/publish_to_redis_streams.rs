//! The Redis publisher against a real Redis (`COURIER_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`): what arrives, per-message results, trimming, timeouts and outages.

mod common;

use std::time::{Duration, Instant};

use courier_core::{PublishError, Publisher};
use courier_redis::{ConnectError, RedisPublisher};

use common::{
    assert_all_unavailable_within, closed_port, config, config_at, field, message, publisher, text, upstream, url,
    Proxy, TestKey,
};

#[tokio::test]
async fn a_batch_arrives_with_payload_id_key_headers_and_content_type_in_key_order() {
    let stream = TestKey::new().await;
    let publisher = publisher().await;
    let mut batch = Vec::new();
    for i in 0..6 {
        let key = if i % 2 == 0 { "even" } else { "odd" };
        let mut m = message(&stream.name, Some(key), format!("payload {i}").as_bytes());
        m.headers.insert("Trace-Id".into(), format!("t-{i}"));
        m.content_type = Some("text/plain".into());
        batch.push(m);
    }
    batch.push(message(&stream.name, None, &[0, 159, 146, 150, 255]));

    assert_eq!(publisher.publish(&batch).await, vec![Ok(()); batch.len()]);

    let entries = stream.read_all().await;
    assert_eq!(entries.len(), batch.len());
    for (sent, got) in batch.iter().zip(&entries) {
        assert_eq!(field(got, "payload").as_deref(), Some(&sent.payload[..]), "binary safe");
        assert_eq!(text(got, "id"), Some(sent.id.to_string()));
        assert_eq!(text(got, "key"), sent.key);
        assert_eq!(text(got, "content_type"), sent.content_type);
        assert_eq!(text(got, "created_at").as_deref(), Some("1700000000000"));
        assert_eq!(text(got, "h:Trace-Id"), sent.headers.get("Trace-Id").cloned());
    }
    stream.delete().await;
}

#[tokio::test]
async fn each_result_belongs_to_its_message_and_a_failed_key_stops() {
    let stream = TestKey::new().await;
    let not_a_stream = TestKey::new().await;
    let mut connection = not_a_stream.connection.clone();
    let _: () = redis::cmd("SET")
        .arg(&not_a_stream.name)
        .arg("a plain string")
        .query_async(&mut connection)
        .await
        .expect("SET");
    let publisher = publisher().await;
    let wrong = not_a_stream.name.as_str();
    let batch = vec![
        message(&stream.name, Some("A"), b"a0"), // 0 ok
        message(wrong, Some("B"), b"b0"),        // 1 WRONGTYPE: rejected
        message(&stream.name, Some("B"), b"b1"), // 2 key B failed: not attempted
        message(wrong, Some("C"), b"c0"),        // 3 WRONGTYPE: rejected
        message(wrong, Some("C"), b"c1"),        // 4 same pipeline as 3: its own refusal
        message(wrong, None, b"n0"),             // 5 WRONGTYPE: rejected
        message(&stream.name, None, b"n1"),      // 6 ok
        message(&stream.name, Some("A"), b"a1"), // 7 ok
    ];
    let results = publisher.publish(&batch).await;

    assert_eq!(results.len(), batch.len());
    let expect = |i: usize, rejected: bool, needle: &str| match &results[i] {
        Err(PublishError::Rejected(why)) if rejected => assert!(why.contains(needle), "{i}: {why}"),
        Err(PublishError::Unavailable(why)) if !rejected => assert!(why.contains(needle), "{i}: {why}"),
        other => panic!("message {i}: expected {needle}, got {other:?}"),
    };
    assert_eq!((&results[0], &results[6], &results[7]), (&Ok(()), &Ok(()), &Ok(())));
    expect(1, true, "WRONGTYPE");
    expect(2, false, "not attempted");
    expect(3, true, "WRONGTYPE");
    expect(4, true, "WRONGTYPE");
    expect(5, true, "WRONGTYPE");

    let got: Vec<_> = stream.read_all().await.iter().map(|e| field(e, "payload")).collect();
    assert_eq!(
        got,
        [Some(b"a0".to_vec()), Some(b"n1".to_vec()), Some(b"a1".to_vec())],
        "only the Ok ones, in order"
    );
    stream.delete().await;
    not_a_stream.delete().await;
}

#[tokio::test]
async fn maxlen_trims_the_stream_approximately() {
    let stream = TestKey::new().await;
    let mut config = config(&url());
    config.maxlen = Some(10);
    let publisher = RedisPublisher::connect(config).await.expect("connect");
    let batch: Vec<_> = (0..300)
        .map(|i| message(&stream.name, None, format!("{i}").as_bytes()))
        .collect();
    assert!(publisher.publish(&batch).await.iter().all(Result::is_ok));

    let mut connection = stream.connection.clone();
    let len: usize = redis::cmd("XLEN")
        .arg(&stream.name)
        .query_async(&mut connection)
        .await
        .expect("XLEN");
    assert!((10..300).contains(&len), "trimmed to about 10 (whole nodes), got {len}");
    stream.delete().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_connect_and_every_lazy_publish_quickly() {
    let addr = format!("127.0.0.1:{}", closed_port().await).parse().expect("addr");
    let started = Instant::now();
    let error = RedisPublisher::connect(config_at(addr))
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

    let lazy = RedisPublisher::connect_lazy(config_at(addr))
        .await
        .expect("lazy returns at once");
    let batch = [message("s", Some("k"), b"1"), message("s", None, b"2")];
    for _ in 0..3 {
        let started = Instant::now();
        let results = lazy.publish(&batch).await;
        assert_all_unavailable_within(&results, started, Duration::from_millis(500));
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = config_at(silent.local_addr().expect("addr"));
    config.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = RedisPublisher::connect(config.clone())
        .await
        .err()
        .expect("no answer ever comes");
    assert!(!matches!(error, ConnectError::Config(_)), "{error}");
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );

    let lazy = RedisPublisher::connect_lazy(config).await.expect("lazy");
    let started = Instant::now();
    let results = lazy.publish(&[message("s", None, b"1")]).await;
    assert_all_unavailable_within(&results, started, Duration::from_millis(1300));
}

#[tokio::test]
async fn during_an_outage_messages_are_unavailable_and_publishing_resumes_after_it() {
    let stream = TestKey::new().await;
    let proxy = Proxy::start("127.0.0.1:0".parse().expect("addr"), upstream()).await;
    let addr = proxy.addr;
    let publisher = RedisPublisher::connect(config_at(addr))
        .await
        .expect("connect through the proxy");
    assert_eq!(
        publisher.publish(&[message(&stream.name, Some("k"), b"before")]).await,
        vec![Ok(())]
    );

    proxy.stop().await;
    let during = [
        message(&stream.name, Some("k"), b"during"),
        message(&stream.name, None, b"during"),
    ];
    let started = Instant::now();
    let results = publisher.publish(&during).await;
    assert_all_unavailable_within(&results, started, publisher.config().timeout + Duration::from_secs(1));

    let proxy = Proxy::start(addr, upstream()).await;
    let after = message(&stream.name, Some("k"), b"after");
    let deadline = Instant::now() + Duration::from_secs(10);
    while publisher.publish(std::slice::from_ref(&after)).await != vec![Ok(())] {
        assert!(
            Instant::now() < deadline,
            "the connection manager did not reconnect within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got: Vec<_> = stream.read_all().await.iter().map(|e| field(e, "payload")).collect();
    assert_eq!(got.first(), Some(&Some(b"before".to_vec())));
    assert_eq!(got.last(), Some(&Some(b"after".to_vec())));
    proxy.stop().await;
    stream.delete().await;
}
