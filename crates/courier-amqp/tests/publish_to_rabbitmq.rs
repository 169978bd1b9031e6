//! The AMQP publisher against a real RabbitMQ (`COURIER_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`): what arrives, unroutable messages, per-message
//! results, a named exchange, timeouts and outages.

mod common;

use std::time::{Duration, Instant};

use courier_amqp::{AmqpPublisher, ConnectError};
use courier_core::{PublishError, Publisher};
use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind;

use common::{
    assert_all_unavailable_within, closed_port, config, config_at, message, publisher, side_channel, upstream, url,
    Proxy, TestQueue,
};

fn header(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8(s.as_bytes().to_vec()).expect("UTF-8 header")),
        other => panic!("header {name} is {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_arrives_persistent_with_id_headers_and_content_type_in_key_order() {
    let queue = TestQueue::declare().await;
    let publisher = publisher(config(&url())).await;
    let mut batch = Vec::new();
    for i in 0..6 {
        let key = if i % 2 == 0 { "even" } else { "odd" };
        let mut m = message(&queue.name, Some(key), format!("payload {i}").as_bytes());
        m.headers.insert("Trace-Id".into(), format!("t-{i}"));
        m.content_type = Some("text/plain".into());
        batch.push(m);
    }
    batch.push(message(&queue.name, None, &[0, 159, 146, 150, 255]));

    assert_eq!(publisher.publish(&batch).await, vec![Ok(()); batch.len()]);

    let got = queue.take_all().await;
    assert_eq!(got.len(), batch.len());
    for (sent, got) in batch.iter().zip(&got) {
        let p = &got.properties;
        assert_eq!(got.data, sent.payload);
        assert_eq!(
            p.message_id().as_ref().map(|s| s.to_string()),
            Some(sent.id.to_string())
        );
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(p.content_type().as_ref().map(|s| s.to_string()), sent.content_type);
        assert_eq!(*p.timestamp(), Some(1_700_000_000));
        assert_eq!(header(got, "Courier-Key"), sent.key);
        assert_eq!(header(got, "Trace-Id"), sent.headers.get("Trace-Id").cloned());
    }
    queue.delete().await;
}

#[tokio::test]
async fn each_result_belongs_to_its_message_and_a_failed_key_stops() {
    let queue = TestQueue::declare().await;
    let publisher = publisher(config(&url())).await;
    let missing = format!("courier-test-missing-{}", uuid::Uuid::new_v4().simple());
    let mut long_header = message(&queue.name, Some("C"), b"c0");
    long_header.headers.insert("h".repeat(300), "x".into());
    let batch = vec![
        message(&queue.name, Some("A"), b"a0"), // 0 ok
        message(&missing, Some("B"), b"b0"),    // 1 unroutable: rejected
        message(&queue.name, Some("B"), b"b1"), // 2 key B failed: not attempted
        long_header,                            // 3 header name over 255 bytes: rejected
        message(&queue.name, Some("C"), b"c1"), // 4 key C failed: not attempted
        message(&missing, None, b"n0"),         // 5 unroutable: rejected
        message(&queue.name, None, b"n1"),      // 6 ok
        message(&queue.name, Some("A"), b"a1"), // 7 ok
    ];
    let results = publisher.publish(&batch).await;

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
    expect_rejected(1, "unroutable");
    expect_not_attempted(2);
    expect_rejected(3, "255");
    expect_not_attempted(4);
    expect_rejected(5, "unroutable");

    let got: Vec<_> = queue.take_all().await.into_iter().map(|d| d.data).collect();
    assert_eq!(
        got,
        [&b"a0"[..], b"n1", b"a1"],
        "only the Ok messages arrived, in order"
    );
    queue.delete().await;
}

#[tokio::test]
async fn a_named_exchange_routes_by_destination_and_must_exist() {
    let queue = TestQueue::declare().await;
    let (_connection, channel) = side_channel().await;
    let exchange = format!("courier-test-{}", uuid::Uuid::new_v4().simple());
    let options = ExchangeDeclareOptions::default();
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Direct,
            options,
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    channel
        .queue_bind(
            queue.name.as_str().into(),
            exchange.as_str().into(),
            "orders".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let mut routed = config(&url());
    routed.exchange = exchange.clone();
    let publisher = publisher(routed).await;

    let results = publisher
        .publish(&[message("orders", None, b"routed"), message("nowhere", None, b"lost")])
        .await;
    assert_eq!(results[0], Ok(()));
    assert!(
        matches!(&results[1], Err(PublishError::Rejected(e)) if e.contains("nowhere")),
        "{results:?}"
    );
    let got: Vec<_> = queue.take_all().await.into_iter().map(|d| d.data).collect();
    assert_eq!(got, [&b"routed"[..]]);

    let mut missing = config(&url());
    missing.exchange = format!("{exchange}-missing");
    let error = AmqpPublisher::connect(missing).await.err().expect("no such exchange");
    assert!(matches!(error, ConnectError::Exchange { .. }), "{error}");

    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete exchange");
    let gone = publisher.publish(&[message("orders", None, b"1")]).await;
    assert!(
        matches!(&gone[0], Err(PublishError::Rejected(e)) if e.contains("NOT_FOUND")),
        "{gone:?}"
    );
    let reopened = publisher.publish(&[message("orders", None, b"2")]).await;
    assert!(
        matches!(&reopened[0], Err(PublishError::Unavailable(e)) if e.contains("exchange")),
        "the closed channel is replaced, and the new one finds no exchange: {reopened:?}"
    );
    queue.delete().await;
}

#[tokio::test]
async fn an_unreachable_broker_fails_connect_and_every_lazy_publish_quickly() {
    let addr = format!("127.0.0.1:{}", closed_port().await).parse().expect("addr");
    let started = Instant::now();
    let error = AmqpPublisher::connect(config_at(addr))
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

    let lazy = AmqpPublisher::connect_lazy(config_at(addr))
        .await
        .expect("lazy returns at once");
    let batch = [message("q", Some("k"), b"1"), message("q", None, b"2")];
    let started = Instant::now();
    let results = lazy.publish(&batch).await;
    assert_all_unavailable_within(&results, started, Duration::from_millis(500));
}

#[tokio::test]
async fn a_broker_that_never_answers_times_out() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = config_at(silent.local_addr().expect("addr"));
    config.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = AmqpPublisher::connect(config.clone())
        .await
        .err()
        .expect("no handshake ever comes");
    assert!(matches!(error, ConnectError::TimedOut { .. }), "{error}");
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );

    let lazy = AmqpPublisher::connect_lazy(config).await.expect("lazy");
    let started = Instant::now();
    let results = lazy.publish(&[message("q", None, b"1")]).await;
    assert_all_unavailable_within(&results, started, Duration::from_millis(1300));
}

#[tokio::test]
async fn during_an_outage_messages_are_unavailable_and_the_next_publish_reconnects() {
    let queue = TestQueue::declare().await;
    let proxy = Proxy::start("127.0.0.1:0".parse().expect("addr"), upstream()).await;
    let addr = proxy.addr;
    let publisher = publisher(config_at(addr)).await;
    assert_eq!(
        publisher.publish(&[message(&queue.name, Some("k"), b"before")]).await,
        vec![Ok(())]
    );

    proxy.stop().await;
    let during = [
        message(&queue.name, Some("k"), b"during"),
        message(&queue.name, None, b"during"),
    ];
    let started = Instant::now();
    let results = publisher.publish(&during).await;
    assert_all_unavailable_within(&results, started, publisher.config().timeout + Duration::from_secs(1));

    let proxy = Proxy::start(addr, upstream()).await;
    let after = message(&queue.name, Some("k"), b"after");
    assert_eq!(
        publisher.publish(std::slice::from_ref(&after)).await,
        vec![Ok(())],
        "reconnected"
    );
    let got: Vec<_> = queue.take_all().await.into_iter().map(|d| d.data).collect();
    assert_eq!(got.first().map(|p| &p[..]), Some(&b"before"[..]));
    assert_eq!(got.last().map(|p| &p[..]), Some(&b"after"[..]));
    proxy.stop().await;
    queue.delete().await;
}
