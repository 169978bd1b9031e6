//! Helpers for the JetStream tests: the server's URL (`COURIER_TEST_NATS_URL`), a fresh stream
//! with unique subjects per test, a reader for what the stream holds, and a TCP proxy that a
//! test can cut and restore to play an outage of the real server.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use courier_core::{OutboundMessage, Timestamp};
use courier_nats::{NatsConfig, NatsPublisher};
use futures_util::StreamExt;
use uuid::Uuid;

pub(crate) fn url() -> String {
    std::env::var("COURIER_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// `host:port` of the test server.
pub(crate) fn upstream() -> String {
    let config = NatsConfig::from_url(&url()).expect("COURIER_TEST_NATS_URL is a nats:// URL");
    format!("{}:{}", config.servers[0].host(), config.servers[0].port())
}

/// A config for `url` with a short timeout, so failing tests fail fast.
pub(crate) fn config(url: &str) -> NatsConfig {
    let mut config = NatsConfig::from_url(url).expect("valid URL");
    config.timeout = Duration::from_secs(2);
    config.reconnect_delay_max = Duration::from_millis(100);
    config
}

pub(crate) async fn publisher() -> NatsPublisher {
    let url = url();
    NatsPublisher::connect(config(&url)).await.unwrap_or_else(|e| {
        panic!("NATS (JetStream) is not reachable at {url}: {e}; start `nats-server -js` or set COURIER_TEST_NATS_URL")
    })
}

/// A stream of its own, capturing `<prefix>.>`; delete it with [`TestStream::delete`].
pub(crate) struct TestStream {
    pub(crate) name: String,
    pub(crate) prefix: String,
    pub(crate) jetstream: jetstream::Context,
}

impl TestStream {
    pub(crate) async fn create() -> Self {
        let url = url();
        let client = async_nats::connect(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("NATS (JetStream) is not reachable at {url}: {e}; start `nats-server -js`"));
        let jetstream = jetstream::new(client);
        let id = Uuid::new_v4().simple().to_string();
        let (name, prefix) = (format!("courier_test_{id}"), format!("courier-test.{id}"));
        jetstream
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{prefix}.>")],
                ..Default::default()
            })
            .await
            .expect("create a JetStream stream (is JetStream enabled? `nats-server -js`)");
        Self {
            name,
            prefix,
            jetstream,
        }
    }

    /// A subject this stream captures.
    pub(crate) fn subject(&self, leaf: &str) -> String {
        format!("{}.{leaf}", self.prefix)
    }

    /// Everything the stream holds, in stream order, read by a fresh pull consumer.
    pub(crate) async fn read_all(&self) -> Vec<jetstream::Message> {
        let stream = self.jetstream.get_stream(&self.name).await.expect("stream exists");
        let count = stream.get_info().await.expect("stream info").state.messages as usize;
        if count == 0 {
            return Vec::new();
        }
        let consumer: jetstream::consumer::PullConsumer =
            stream.create_consumer(pull::Config::default()).await.expect("consumer");
        let mut batch = consumer
            .batch()
            .max_messages(count)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .expect("fetch");
        let mut out = Vec::new();
        while let Some(m) = batch.next().await {
            out.push(m.expect("message"));
        }
        assert_eq!(out.len(), count, "the consumer got everything the stream holds");
        out
    }

    pub(crate) async fn delete(self) {
        self.jetstream
            .delete_stream(&self.name)
            .await
            .expect("delete test stream");
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
