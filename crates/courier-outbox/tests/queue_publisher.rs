//! `QueuePublisher` into Courier's own queues (the in-memory reference engine stands in for
//! SQLite or PostgreSQL; every engine passes the same conformance suite): fields are carried
//! over, a re-publish is dropped by the idempotency key, refusals are per message and hold back
//! only their key, and an outbox write reaches a queue consumer end to end.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{fast_options, Db, Running};
use courier_core::{
    Clock, ListOptions, Namespace, OutboundMessage, PublishError, Publisher, QueueEngine, QueueRef, ReceiveOptions,
    SystemClock, Timestamp,
};
use courier_outbox::{OutboxMessage, QueuePublisher};
use courier_testkit::ModelEngine;
use uuid::Uuid;

fn engine() -> Arc<ModelEngine> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Arc::new(ModelEngine::new(clock))
}

fn publisher(engine: &Arc<ModelEngine>) -> QueuePublisher {
    let engine: Arc<dyn QueueEngine> = engine.clone();
    QueuePublisher::new(engine, Namespace::new("shop").expect("namespace"))
}

fn outbound(destination: &str, key: Option<&str>, payload: &'static str) -> OutboundMessage {
    OutboundMessage {
        id: Uuid::now_v7(),
        destination: destination.into(),
        key: key.map(str::to_owned),
        payload: Bytes::from_static(payload.as_bytes()),
        headers: [("tenant".to_owned(), "acme".to_owned())].into(),
        content_type: Some("text/plain".into()),
        created_at: Timestamp(0),
    }
}

async fn queue_messages(engine: &ModelEngine, queue: &str) -> Vec<courier_core::MessageInfo> {
    let queue: QueueRef = queue.parse().expect("queue");
    engine
        .list_messages(&queue, ListOptions::default())
        .await
        .expect("list")
        .items
}

#[tokio::test]
async fn fields_are_carried_over_and_a_republish_is_dropped() {
    let engine = engine();
    let publisher = publisher(&engine);
    let batch = vec![
        outbound("orders", Some("order-1"), "a"),
        outbound("billing/invoices", None, "b"),
    ];
    assert_eq!(publisher.publish(&batch).await, vec![Ok(()), Ok(())]);
    assert_eq!(
        publisher.publish(&batch[..1]).await,
        vec![Ok(())],
        "a duplicate counts as published"
    );

    let orders = queue_messages(&engine, "shop/orders").await;
    assert_eq!(orders.len(), 1, "the re-publish was dropped by its idempotency key");
    let got = &orders[0];
    assert_eq!(&got.payload[..], b"a");
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.ordering_group.as_deref(), Some("order-1"));
    assert_eq!(got.attributes.get("tenant").and_then(|v| v.as_str()), Some("acme"));
    assert_eq!(
        queue_messages(&engine, "billing/invoices").await.len(),
        1,
        "namespace named in the destination"
    );
}

#[tokio::test]
async fn a_refused_message_holds_back_only_its_key() {
    let engine = engine();
    let publisher = publisher(&engine);
    let batch = vec![
        outbound("orders", Some("k"), "k1"),
        outbound("Not A Queue", Some("k"), "k2"),
        outbound("orders", Some("k"), "k3"),
        outbound("orders", Some("other"), "o1"),
        outbound("orders", None, "u1"),
    ];
    let results = publisher.publish(&batch).await;
    assert_eq!(results[0], Ok(()), "earlier than the refusal: published");
    assert!(
        matches!(&results[1], Err(PublishError::Rejected(e)) if e.contains("not a queue")),
        "{results:?}"
    );
    assert!(
        matches!(&results[2], Err(PublishError::Unavailable(e)) if e.contains("not attempted")),
        "{results:?}"
    );
    assert_eq!(results[3], Ok(()));
    assert_eq!(results[4], Ok(()));
    let payloads: Vec<_> = queue_messages(&engine, "shop/orders")
        .await
        .iter()
        .map(|m| m.payload.clone())
        .collect();
    assert_eq!(payloads, vec![Bytes::from("k1"), Bytes::from("o1"), Bytes::from("u1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_write_reaches_a_queue_consumer() {
    let engine = engine();
    let db = Db::sqlite(Arc::new(SystemClock)).await;
    let relay = Running::start(db.relay(Arc::new(publisher(&engine)), fast_options("to-queue")));
    db.write(&[OutboxMessage::new("orders", "hello").with_key("order-9")])
        .await;
    let queue: QueueRef = "shop/orders".parse().expect("queue");
    let options = ReceiveOptions {
        max_messages: 10,
        wait: Duration::from_millis(100),
        lease: None,
    };
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let batch = engine.receive(&queue, &options).await.expect("receive");
            if !batch.deliveries.is_empty() {
                return batch.deliveries;
            }
        }
    })
    .await
    .expect("the consumer receives it");
    relay.stop().await;
    assert_eq!(&received[0].message.payload[..], b"hello");
}
