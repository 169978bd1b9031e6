//! Helpers for the Redis tests: the server's URL (`COURIER_TEST_REDIS_URL`), a stream key of
//! its own per test read back with `XRANGE`, and a TCP proxy that a test can cut and restore to
//! play an outage of the real server.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use courier_core::{OutboundMessage, Timestamp};
use courier_redis::{RedisConfig, RedisPublisher};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply};
use uuid::Uuid;

pub(crate) fn url() -> String {
    std::env::var("COURIER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A config for `url` with a short timeout, so failing tests fail fast.
pub(crate) fn config(url: &str) -> RedisConfig {
    let mut config = RedisConfig::from_url(url).expect("valid URL");
    config.timeout = Duration::from_secs(2);
    config
}

/// `host:port` of the test server.
pub(crate) fn upstream() -> String {
    config(&url()).server()
}

/// The test server's config (credentials, database) aimed at `addr` instead.
pub(crate) fn config_at(addr: SocketAddr) -> RedisConfig {
    let mut config = config(&url());
    let tcp = redis::ConnectionAddr::Tcp(addr.ip().to_string(), addr.port());
    config.connection = config.connection.set_addr(tcp);
    config
}

pub(crate) async fn publisher() -> RedisPublisher {
    RedisPublisher::connect(config(&url())).await.unwrap_or_else(|e| {
        panic!(
            "Redis is not reachable at {}: {e}; start redis-server or set COURIER_TEST_REDIS_URL",
            upstream()
        )
    })
}

/// A connection of the test's own, to read and clean up.
pub(crate) async fn side_connection() -> MultiplexedConnection {
    let client = redis::Client::open(url()).expect("COURIER_TEST_REDIS_URL is a redis:// URL");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis is not reachable at {}: {e}; start redis-server", upstream()))
}

/// A stream key of its own; delete it with [`TestKey::delete`].
pub(crate) struct TestKey {
    pub(crate) name: String,
    pub(crate) connection: MultiplexedConnection,
}

impl TestKey {
    pub(crate) async fn new() -> Self {
        Self {
            name: format!("courier-test:{}", Uuid::new_v4().simple()),
            connection: side_connection().await,
        }
    }

    /// Every entry of the stream, in stream order.
    pub(crate) async fn read_all(&self) -> Vec<StreamId> {
        let mut connection = self.connection.clone();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.name)
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await
            .expect("XRANGE");
        reply.ids
    }

    pub(crate) async fn delete(self) {
        let mut connection = self.connection.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(&self.name)
            .query_async(&mut connection)
            .await
            .expect("DEL");
    }
}

/// A stream field as bytes.
pub(crate) fn field(entry: &StreamId, name: &str) -> Option<Vec<u8>> {
    match entry.map.get(name)? {
        redis::Value::BulkString(bytes) => Some(bytes.clone()),
        other => panic!("field {name} is {other:?}"),
    }
}

/// A stream field as text.
pub(crate) fn text(entry: &StreamId, name: &str) -> Option<String> {
    field(entry, name).map(|b| String::from_utf8(b).expect("UTF-8 field"))
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
