//! Helpers for the RabbitMQ tests: the broker's URL (`COURIER_TEST_AMQP_URL`), a queue of its
//! own per test read with `basic_get`, and a TCP proxy that a test can cut and restore to play
//! an outage of the real broker.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use courier_amqp::{AmqpConfig, AmqpPublisher};
use courier_core::{OutboundMessage, Timestamp};
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use uuid::Uuid;

pub(crate) fn url() -> String {
    std::env::var("COURIER_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// `host:port` of the test broker.
pub(crate) fn upstream() -> String {
    let config = AmqpConfig::from_url(&url()).expect("COURIER_TEST_AMQP_URL is an amqp:// URL");
    format!("{}:{}", config.uri.authority.host, config.uri.authority.port)
}

/// The test broker's config (credentials, vhost) aimed at `addr` instead.
pub(crate) fn config_at(addr: SocketAddr) -> AmqpConfig {
    let mut config = config(&url());
    config.uri.authority.host = addr.ip().to_string();
    config.uri.authority.port = addr.port();
    config
}

/// A config for `url` with a short timeout, so failing tests fail fast.
pub(crate) fn config(url: &str) -> AmqpConfig {
    let mut config = AmqpConfig::from_url(url).expect("valid URL");
    config.timeout = Duration::from_secs(2);
    config
}

pub(crate) async fn publisher(config: AmqpConfig) -> AmqpPublisher {
    AmqpPublisher::connect(config).await.unwrap_or_else(|e| {
        panic!(
            "RabbitMQ is not reachable at {}: {e}; start rabbitmq-server or set COURIER_TEST_AMQP_URL",
            upstream()
        )
    })
}

/// A side channel of the test's own, to declare and read queues.
pub(crate) async fn side_channel() -> (Connection, Channel) {
    let url = url();
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is not reachable at {}: {e}; start rabbitmq-server",
                upstream()
            )
        });
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

/// A durable queue of its own; delete it with [`TestQueue::delete`].
pub(crate) struct TestQueue {
    pub(crate) name: String,
    pub(crate) channel: Channel,
    _connection: Connection,
}

impl TestQueue {
    pub(crate) async fn declare() -> Self {
        let (connection, channel) = side_channel().await;
        let name = format!("courier-test-{}", Uuid::new_v4().simple());
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(name.as_str().into(), options, FieldTable::default())
            .await
            .expect("declare the test queue");
        Self {
            name,
            channel,
            _connection: connection,
        }
    }

    /// Everything in the queue, in queue order, taken with `basic_get`.
    pub(crate) async fn take_all(&self) -> Vec<Delivery> {
        let mut out = Vec::new();
        let options = BasicGetOptions { no_ack: true };
        while let Some(m) = self
            .channel
            .basic_get(self.name.as_str().into(), options)
            .await
            .expect("basic_get")
        {
            out.push(m.delivery);
        }
        out
    }

    pub(crate) async fn delete(self) {
        self.channel
            .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete the test queue");
    }
}

pub(crate) fn message(destination: &str, key: Option<&str>, payload: &[u8]) -> OutboundMessage {
    OutboundMessage {
        id: Uuid::new_v4(),
        destination: destination.to_owned(),
        key: key.map(str::to_owned),
        payload: Bytes::copy_from_slice(payload),
        headers: BTreeMap::new(),
        content_type: None,
        created_at: Timestamp(1_700_000_000_000),
    }
}

pub(crate) use courier_testkit::network::{assert_all_unavailable_within, closed_port, Proxy};
