//! `courier relay` as a process, from an application's PostgreSQL outbox to every kind of
//! destination `--to` names, each read back by a real consumer of that system: NATS JetStream,
//! Redis Streams, RabbitMQ, CloudEvents webhooks, a `courier serve` over HTTP, and Courier's
//! queues opened in the relay's own process.
//!
//! Every test runs the same story through [`relay_delivers_only_what_committed`]: the
//! application writes an order row and three outbox messages (two keys, headers, a content
//! type) in one transaction that commits, and an order row and one message in a transaction
//! that rolls back. The relay must bring the three to the consumer once each, with their ids,
//! keys, payloads, content types and headers, each key's messages in write order; the
//! rolled-back message must never arrive; the outbox must be empty afterwards (published rows
//! are deleted by default); and the relay must exit 0 on SIGTERM.
//!
//! Services come from `COURIER_TEST_POSTGRES_URL`, `COURIER_TEST_NATS_URL`,
//! `COURIER_TEST_REDIS_URL` and `COURIER_TEST_AMQP_URL` (local defaults); one that cannot be
//! reached fails the test naming it.

mod common;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::Child;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use common::{courier, spawn_until_banner, terminate, Server};
use courier_core::{NewMessage, QueueEngine, QueueRef, ReceiveOptions};
use courier_outbox::postgres::PgOutbox;
use courier_outbox::OutboxMessage;
use courier_postgres::{PostgresEngine, PostgresOptions};
use courier_sqlite::{SqliteEngine, SqliteOptions};
use courier_testkit::postgres::{unreachable, TestSchema};
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::{json, Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Longest wait for the committed messages to arrive, and for the outbox to empty.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the consumer keeps watching after the committed messages arrived, for anything
/// that should not (the rolled-back message, a second copy).
const QUIET_PERIOD: Duration = Duration::from_millis(500);
/// Longest wait for a broker to accept the test's own connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The application headers every message carries, beside its own `Trace-Id`.
const TENANT: (&str, &str) = ("Tenant", "acme");
const TRACE_ID: &str = "Trace-Id";
const CONTENT_TYPE: &str = "application/json";

/// One test per destination, each `name => the consumer it reads with;`, running
/// [`relay_delivers_only_what_committed`].
macro_rules! destinations {
    ($($name:ident => $consumer:expr;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            relay_delivers_only_what_committed($consumer).await;
        }
    )+};
}

destinations! {
    to_nats_jetstream => JetStream::create().await;
    to_redis_streams => RedisStream::open().await;
    to_rabbitmq => RabbitQueue::declare().await;
    to_a_cloudevents_webhook => WebhookReceiver::start().await;
    to_courier_serve_over_http => CourierOverHttp::start();
    to_courier_queues_on_postgres_in_process => CourierInProcess::postgres().await;
    to_courier_queues_on_sqlite_in_process => CourierInProcess::sqlite();
}

// ---------------------------------------------------------------------------------------------
// The story every destination goes through.

/// One message as the destination's consumer saw it, in the application's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    /// The outbox id the message carries (for Courier's queues, resolved by [`Consumer::identify`]).
    id: String,
    key: Option<String>,
    payload: Vec<u8>,
    content_type: Option<String>,
    headers: BTreeMap<String, String>,
}

impl Received {
    /// What a consumer should see of `message`, written with outbox id `id`.
    fn expected(id: Uuid, message: &OutboxMessage) -> Self {
        Self {
            id: id.to_string(),
            key: message.key.clone(),
            payload: message.payload.to_vec(),
            content_type: message.content_type.clone(),
            headers: message.headers.clone(),
        }
    }
}

/// A consumer of one destination of its own (a stream, queue, subject or endpoint named for
/// this test only).
trait Consumer {
    /// The relay's `--to`, and the destination column of the messages written.
    fn target(&self) -> (String, String);

    /// False when the destination can be read only once the relay has exited.
    fn readable_while_relaying(&self) -> bool {
        true
    }

    /// The messages that arrived since the last call, in arrival order.
    async fn poll(&mut self) -> Vec<Received>;

    /// Replaces the destination's own message ids in `received` by the outbox ids, for
    /// destinations that show them only when asked. Called once, after every arrival.
    async fn identify(&self, _received: &mut [Received], _written: &Written) {}

    /// Deletes what the test created on the broker.
    async fn clean_up(self);
}

/// Writes, relays, consumes and checks; see the module documentation.
async fn relay_delivers_only_what_committed(mut consumer: impl Consumer) {
    let (to, destination) = consumer.target();
    let app = AppDatabase::migrated().await;
    let written = app.write_committed_and_rolled_back(&destination).await;
    let mut relay = RelayProcess::start(&app.schema, &to);

    let mut exit = None;
    if !consumer.readable_while_relaying() {
        app.wait_until_relayed(&relay).await;
        exit = Some(relay.terminate());
    }
    let expected = written.committed.len();
    let mut received = Vec::new();
    relay
        .wait_until(&format!("{expected} messages arrive"), async || {
            received.extend(consumer.poll().await);
            received.len() >= expected
        })
        .await;
    app.wait_until_relayed(&relay).await;
    tokio::time::sleep(QUIET_PERIOD).await;
    received.extend(consumer.poll().await);
    consumer.identify(&mut received, &written).await;
    let exit = exit.unwrap_or_else(|| relay.terminate());
    consumer.clean_up().await;

    assert_eq!(app.outbox_rows().await, (0, 0), "no row left, none unpublished");
    assert_eq!(app.orders().await, ["committed"], "the application's own rows");
    written.assert_delivered_exactly(&received);
    assert_eq!(exit, Some(0), "the relay exits 0 on SIGTERM; log: {}", relay.log_text());
}

/// What the application wrote: the committed messages with their outbox ids, and the one
/// whose transaction rolled back.
struct Written {
    committed: Vec<(Uuid, OutboxMessage)>,
    rolled_back: (Uuid, OutboxMessage),
}

impl Written {
    /// Messages of two keys, `order-1` twice: payload `{"order":…,"n":…}`, headers `Tenant`
    /// and `Trace-Id`, JSON content type.
    fn messages(destination: &str) -> (Vec<OutboxMessage>, OutboxMessage) {
        let message = |key: &str, n: &str| {
            OutboxMessage::new(destination, format!(r#"{{"order":"{key}","n":"{n}"}}"#))
                .with_key(key)
                .with_header(TENANT.0, TENANT.1)
                .with_header(TRACE_ID, format!("{key}/{n}"))
                .with_content_type(CONTENT_TYPE)
        };
        let committed = vec![
            message("order-1", "0"),
            message("order-2", "0"),
            message("order-1", "1"),
        ];
        (committed, message("order-1", "rolled-back"))
    }

    /// Each committed message arrived once, intact, each key's in write order; the
    /// rolled-back one never did.
    fn assert_delivered_exactly(&self, received: &[Received]) {
        let (rolled_back_id, rolled_back) = &self.rolled_back;
        assert!(
            !received
                .iter()
                .any(|r| r.id == rolled_back_id.to_string() || r.payload == rolled_back.payload),
            "the rolled-back message arrived: {received:#?}"
        );
        assert_eq!(received.len(), self.committed.len(), "each once: {received:#?}");
        for (id, message) in &self.committed {
            let got = received.iter().find(|r| r.id == id.to_string());
            assert_eq!(got, Some(&Received::expected(*id, message)), "all: {received:#?}");
        }
        for (_, message) in &self.committed {
            let arrived: Vec<String> = received
                .iter()
                .filter(|r| r.key == message.key)
                .map(|r| r.id.clone())
                .collect();
            let in_write_order: Vec<String> = self
                .committed
                .iter()
                .filter(|(_, m)| m.key == message.key)
                .map(|(id, _)| id.to_string())
                .collect();
            assert_eq!(arrived, in_write_order, "key {:?} in write order", message.key);
        }
    }
}

/// The application's database: a schema of its own with the outbox tables (`courier migrate
/// --outbox`) and an `orders` table of the application's.
struct AppDatabase {
    schema: TestSchema,
    pool: PgPool,
    outbox: PgOutbox,
}

impl AppDatabase {
    async fn migrated() -> Self {
        let schema = TestSchema::new();
        let url = courier_testkit::postgres::url();
        let args = ["migrate", "--outbox", "--database", &url, "--schema", &schema.name];
        let out = courier().args(args).output().expect("run courier migrate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "courier migrate --outbox failed: {stderr}");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap_or_else(|e| unreachable("cannot connect to PostgreSQL", e));
        sqlx::query(&format!(
            "CREATE TABLE \"{}\".orders (id text PRIMARY KEY)",
            schema.name
        ))
        .execute(&pool)
        .await
        .expect("create the application's table");
        let outbox = PgOutbox::new(pool.clone(), &schema.name).expect("a valid schema name");
        Self { schema, pool, outbox }
    }

    /// Order `rolled-back` and its message in a transaction that rolls back, then order
    /// `committed` and three messages in one that commits.
    async fn write_committed_and_rolled_back(&self, destination: &str) -> Written {
        let (committed, rolled_back) = Written::messages(destination);
        let (tx, mut ids) = self
            .write_order("rolled-back", std::slice::from_ref(&rolled_back))
            .await;
        tx.rollback().await.expect("roll back");
        let rolled_back = (ids.remove(0), rolled_back);
        let (tx, ids) = self.write_order("committed", &committed).await;
        self.outbox.commit(tx).await.expect("commit");
        Written {
            committed: ids.into_iter().zip(committed).collect(),
            rolled_back,
        }
    }

    /// Begins a transaction that inserts order `order` and writes `messages` to the outbox.
    async fn write_order(
        &self,
        order: &str,
        messages: &[OutboxMessage],
    ) -> (sqlx::Transaction<'static, sqlx::Postgres>, Vec<Uuid>) {
        let mut tx = self.pool.begin().await.expect("begin");
        sqlx::query(&format!("INSERT INTO \"{}\".orders (id) VALUES ($1)", self.schema.name))
            .bind(order)
            .execute(&mut *tx)
            .await
            .expect("insert the order");
        let ids = self.outbox.write(&mut tx, messages).await.expect("write to the outbox");
        (tx, ids)
    }

    /// Waits until the outbox table is empty: every row published, and deleted.
    async fn wait_until_relayed(&self, relay: &RelayProcess) {
        relay
            .wait_until("the outbox is empty", async || self.outbox_rows().await == (0, 0))
            .await;
    }

    /// Rows in the outbox table: all, and those not published.
    async fn outbox_rows(&self) -> (i64, i64) {
        let sql = format!(
            "SELECT count(*), count(*) FILTER (WHERE status <> 'published') FROM \"{}\".outbox",
            self.schema.name
        );
        sqlx::query_as(&sql)
            .fetch_one(&self.pool)
            .await
            .expect("count outbox rows")
    }

    async fn orders(&self) -> Vec<String> {
        let sql = format!("SELECT id FROM \"{}\".orders ORDER BY id", self.schema.name);
        sqlx::query_scalar(&sql)
            .fetch_all(&self.pool)
            .await
            .expect("read orders")
    }
}

/// A `courier relay` child process, killed if the test ends while it still runs.
struct RelayProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RelayProcess {
    fn start(schema: &TestSchema, to: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("relay.log");
        let url = courier_testkit::postgres::url();
        let id = format!("relay-{}", Uuid::new_v4().simple());
        let mut args = vec!["relay", "--database", &url, "--schema", &schema.name];
        args.extend(["--to", to, "--relay-id", &id]);
        let (child, banner) = spawn_until_banner(&args, &log);
        assert!(
            banner.starts_with(&format!("courier relay {id} publishing ")),
            "{banner}"
        );
        Self { child, log, _dir: dir }
    }

    /// Polls `done` every 50 ms; fails the test naming `what`, with the relay's log, if it is
    /// not true within [`ARRIVAL_TIMEOUT`].
    async fn wait_until(&self, what: &str, mut done: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + ARRIVAL_TIMEOUT;
        while !done().await {
            assert!(
                Instant::now() < deadline,
                "timed out after {ARRIVAL_TIMEOUT:?} waiting until {what}; relay log: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit code.
    fn terminate(&mut self) -> Option<i32> {
        terminate(&mut self.child)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The URL in `var`, else `default`.
fn service_url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Awaits `connecting`, at most [`CONNECT_TIMEOUT`]; fails the test naming `service` (and how
/// to point the test elsewhere) when it cannot be reached.
async fn reach<T, E: Display>(
    service: &str,
    var: &str,
    url: &str,
    connecting: impl Future<Output = Result<T, E>>,
) -> T {
    let at = url.rsplit_once('@').map_or(url, |(_, host)| host);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(e)) => panic!("{service} is not reachable at {at}: {e}; start it or set {var}"),
        Err(_) => panic!("{service} did not answer at {at} within {CONNECT_TIMEOUT:?}; start it or set {var}"),
    }
}

/// A name no other test run uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

/// Text of a header-like value that must be UTF-8.
fn utf8(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

// ---------------------------------------------------------------------------------------------
// NATS JetStream: a stream of its own on the destination subject, read by sequence.

struct JetStream {
    url: String,
    js: jetstream::Context,
    stream: String,
    subject: String,
    next_sequence: u64,
}

impl JetStream {
    async fn create() -> Self {
        let url = service_url("COURIER_TEST_NATS_URL", "nats://127.0.0.1:4222");
        let client = reach("NATS", "COURIER_TEST_NATS_URL", &url, async_nats::connect(url.as_str())).await;
        let js = jetstream::new(client);
        let (stream, subject) = (unique("courier_relay_test_"), unique("courier-relay-test.orders."));
        let config = stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        };
        js.create_stream(config)
            .await
            .expect("create a JetStream stream (is JetStream on?)");
        Self {
            url,
            js,
            stream,
            subject,
            next_sequence: 1,
        }
    }
}

impl Consumer for JetStream {
    fn target(&self) -> (String, String) {
        (self.url.clone(), self.subject.clone())
    }

    /// `Nats-Msg-Id` = outbox id, `Courier-Key` = key, `Content-Type`, then the application
    /// headers as NATS headers.
    async fn poll(&mut self) -> Vec<Received> {
        let mut stream = self.js.get_stream(&self.stream).await.expect("stream");
        let last = stream.info().await.expect("stream info").state.last_sequence;
        let mut out = Vec::new();
        while self.next_sequence <= last {
            let m = stream
                .get_raw_message(self.next_sequence)
                .await
                .expect("stored message");
            self.next_sequence += 1;
            assert_eq!(m.subject.as_str(), self.subject);
            let mut headers: BTreeMap<String, String> = m
                .headers
                .iter()
                .map(|(name, values)| (name.to_string(), values.iter().map(|v| v.as_str()).collect()))
                .collect();
            out.push(Received {
                id: headers.remove("Nats-Msg-Id").unwrap_or_default(),
                key: headers.remove("Courier-Key"),
                payload: m.payload.to_vec(),
                content_type: headers.remove("Content-Type"),
                headers,
            });
        }
        out
    }

    async fn clean_up(self) {
        self.js
            .delete_stream(&self.stream)
            .await
            .expect("delete the test stream");
    }
}

// ---------------------------------------------------------------------------------------------
// Redis Streams: the stream named by the destination, read with XRANGE.

struct RedisStream {
    url: String,
    connection: redis::aio::MultiplexedConnection,
    stream: String,
    seen: usize,
}

impl RedisStream {
    async fn open() -> Self {
        let url = service_url("COURIER_TEST_REDIS_URL", "redis://127.0.0.1:6379");
        let connecting = async {
            redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
        };
        let connection = reach("Redis", "COURIER_TEST_REDIS_URL", &url, connecting).await;
        Self {
            url,
            connection,
            stream: unique("courier-relay-test:"),
            seen: 0,
        }
    }
}

impl Consumer for RedisStream {
    fn target(&self) -> (String, String) {
        (self.url.clone(), self.stream.clone())
    }

    /// Fields `id`, `key`, `payload`, `content_type`, `created_at` and `h:<header>`.
    async fn poll(&mut self) -> Vec<Received> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg("-")
            .arg("+")
            .query_async(&mut self.connection)
            .await
            .expect("XRANGE");
        let new = reply.ids.get(self.seen..).unwrap_or_default().to_vec();
        self.seen += new.len();
        new.iter()
            .map(|entry| {
                let mut fields: BTreeMap<String, Vec<u8>> = entry
                    .map
                    .iter()
                    .map(|(name, value)| match value {
                        redis::Value::BulkString(bytes) => (name.clone(), bytes.clone()),
                        other => panic!("field {name} is {other:?}"),
                    })
                    .collect();
                let mut text = |name: &str| fields.remove(name).map(|b| utf8(&b));
                let created_at = text("created_at");
                assert!(created_at.is_some_and(|t| t.parse::<i64>().is_ok()), "created_at");
                Received {
                    id: text("id").unwrap_or_default(),
                    key: text("key"),
                    content_type: text("content_type"),
                    payload: fields.remove("payload").unwrap_or_default(),
                    headers: fields
                        .iter()
                        .map(|(name, value)| {
                            let header = name
                                .strip_prefix("h:")
                                .unwrap_or_else(|| panic!("unknown field {name}"));
                            (header.to_owned(), utf8(value))
                        })
                        .collect(),
                }
            })
            .collect()
    }

    async fn clean_up(mut self) {
        let _: i64 = redis::cmd("DEL")
            .arg(&self.stream)
            .query_async(&mut self.connection)
            .await
            .expect("DEL the test stream");
    }
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ: a durable queue of its own, the destination through the default exchange.

struct RabbitQueue {
    url: String,
    channel: lapin::Channel,
    _connection: lapin::Connection,
    queue: String,
}

impl RabbitQueue {
    async fn declare() -> Self {
        let url = service_url("COURIER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        let connecting = lapin::Connection::connect(&url, lapin::ConnectionProperties::default());
        let connection = reach("RabbitMQ", "COURIER_TEST_AMQP_URL", &url, connecting).await;
        let channel = connection.create_channel().await.expect("AMQP channel");
        let queue = unique("courier-relay-test-");
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel.queue_declare(queue.as_str().into(), durable, FieldTable::default());
        declared.await.expect("declare a durable test queue");
        Self {
            url,
            channel,
            _connection: connection,
            queue,
        }
    }
}

impl Consumer for RabbitQueue {
    fn target(&self) -> (String, String) {
        (self.url.clone(), self.queue.clone())
    }

    /// Persistent, `message_id` = outbox id, `content_type`, header `Courier-Key` = key, and
    /// the application headers as AMQP headers.
    async fn poll(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        let (queue, no_ack) = (ShortString::from(self.queue.as_str()), BasicGetOptions { no_ack: true });
        while let Some(got) = self.channel.basic_get(queue.clone(), no_ack).await.expect("basic_get") {
            let (p, data) = (&got.delivery.properties, &got.delivery.data);
            assert_eq!(*p.delivery_mode(), Some(2), "persistent");
            let mut headers: BTreeMap<String, String> = p
                .headers()
                .iter()
                .flat_map(|table| table.inner().iter())
                .map(|(name, value)| match value {
                    AMQPValue::LongString(s) => (name.to_string(), utf8(s.as_bytes())),
                    other => panic!("header {name} is {other:?}"),
                })
                .collect();
            out.push(Received {
                id: p.message_id().as_ref().map(ToString::to_string).unwrap_or_default(),
                key: headers.remove("Courier-Key"),
                payload: data.clone(),
                content_type: p.content_type().as_ref().map(ToString::to_string),
                headers,
            });
        }
        out
    }

    async fn clean_up(self) {
        self.channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete the test queue");
    }
}

// ---------------------------------------------------------------------------------------------
// CloudEvents webhooks: an HTTP receiver on a free port recording every request.

/// `ce-source` and `ce-type` the relay is configured with through its `--to` URL.
const CE_SOURCE: &str = "/shop/orders";
const CE_TYPE: &str = "com.example.order.v1";
/// How an application header travels in a binary-mode CloudEvent: `Tenant` is a valid
/// extension name once lowercased (`ce-tenant`); `Trace-Id` is not, so it is a plain header.
const WEBHOOK_HEADERS: [(&str, &str); 2] = [(TENANT.0, "ce-tenant"), (TRACE_ID, "trace-id")];

#[derive(Debug, Clone)]
struct Request {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type Requests = Arc<Mutex<Vec<Request>>>;

async fn record(State(log): State<Requests>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let path = uri.path().to_owned();
    log.lock().expect("request log").push(Request {
        method,
        path,
        headers,
        body,
    });
    StatusCode::NO_CONTENT
}

struct WebhookReceiver {
    endpoint: String,
    destination: String,
    requests: Requests,
    seen: usize,
}

impl WebhookReceiver {
    async fn start() -> Self {
        let requests = Requests::default();
        let app = axum::Router::new().fallback(record).with_state(requests.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            endpoint: format!("http://{addr}/hooks"),
            destination: unique("orders-"),
            requests,
            seen: 0,
        }
    }
}

impl Consumer for WebhookReceiver {
    fn target(&self) -> (String, String) {
        let source = CE_SOURCE.replace('/', "%2F");
        let to = format!("{}?ce_source={source}&ce_type={CE_TYPE}", self.endpoint);
        (to, self.destination.clone())
    }

    /// A POST to `<endpoint>/<destination>` in binary mode: `ce-specversion`, `ce-id` = outbox
    /// id, `ce-source`, `ce-type`, `ce-time`, `ce-subject` = key, `Content-Type`, the payload
    /// as the body.
    async fn poll(&mut self) -> Vec<Received> {
        let new: Vec<Request> = self.requests.lock().expect("request log")[self.seen..].to_vec();
        self.seen += new.len();
        new.into_iter()
            .map(|r| {
                let header = |name: &str| r.headers.get(name).map(|v| utf8(v.as_bytes()));
                assert_eq!(r.method, Method::POST);
                assert_eq!(r.path, format!("/hooks/{}", self.destination));
                assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
                assert_eq!(header("ce-source").as_deref(), Some(CE_SOURCE));
                assert_eq!(header("ce-type").as_deref(), Some(CE_TYPE));
                assert!(header("ce-time").is_some_and(|t| t.ends_with('Z')), "ce-time");
                Received {
                    id: header("ce-id").unwrap_or_default(),
                    key: header("ce-subject"),
                    payload: r.body.to_vec(),
                    content_type: header("content-type"),
                    headers: WEBHOOK_HEADERS
                        .iter()
                        .filter_map(|(app, wire)| Some(((*app).to_owned(), header(wire)?)))
                        .collect(),
                }
            })
            .collect()
    }

    async fn clean_up(self) {}
}

// ---------------------------------------------------------------------------------------------
// Courier's queues, over HTTP (a `courier serve`) and in the relay's process (PostgreSQL and
// SQLite).
// Messages are received and acked; the key is the ordering group, so one key's next message
// is ready only once the previous one is acked. The idempotency key, the outbox id, is not
// part of a received message: a re-enqueue with each outbox id as its key must come back as
// a duplicate of a received message.

/// `received` (carrying Courier's message ids) rewritten with outbox ids, given the answers
/// to re-enqueueing each committed message's outbox id as an idempotency key: (id, duplicate).
fn resolve_courier_ids(received: &mut [Received], written: &Written, probes: Vec<(String, bool)>) {
    assert_eq!(probes.len(), written.committed.len());
    for ((outbox_id, _), (courier_id, duplicate)) in written.committed.iter().zip(probes) {
        assert!(
            duplicate,
            "idempotency key {outbox_id} (an outbox id) was new to the queue: the message was not enqueued under its outbox id"
        );
        for r in received.iter_mut().filter(|r| r.id == courier_id) {
            r.id = outbox_id.to_string();
        }
    }
}

/// A received Courier message in the application's terms: attributes are the headers, the
/// ordering group is the key.
fn courier_received(
    id: String,
    payload: Vec<u8>,
    content_type: Option<String>,
    attributes: &Map<String, Value>,
    group: Option<String>,
) -> Received {
    let headers = attributes
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().expect("string attribute").to_owned()))
        .collect();
    Received {
        id,
        key: group,
        payload,
        content_type,
        headers,
    }
}

/// A `courier serve` (SQLite) the relay publishes to as `courier+http://…`, destination
/// `ns/queue`.
struct CourierOverHttp {
    server: Server,
    http: reqwest::Client,
    queue: String,
    _dir: tempfile::TempDir,
}

impl CourierOverHttp {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Server::start(&dir.path().join("serve"));
        Self {
            server,
            http: reqwest::Client::new(),
            queue: unique("relay-tests/orders-"),
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/v1/queues/{}/{path}", self.server.url, self.queue);
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("courier serve answers");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert!(status.is_success(), "POST {url}: {status} {body}");
        body
    }
}

impl Consumer for CourierOverHttp {
    /// Destination `ns/queue`.
    fn target(&self) -> (String, String) {
        (format!("courier+{}", self.server.url), self.queue.clone())
    }

    async fn poll(&mut self) -> Vec<Received> {
        let got = self.post("receive", json!({ "max_messages": 10 })).await;
        let mut out = Vec::new();
        for m in got["messages"].as_array().expect("messages") {
            let text = |field: &str| m[field].as_str().map(str::to_owned);
            let id = text("id").expect("message id");
            let lease = json!({ "lease_id": m["lease"]["lease_id"] });
            self.post(&format!("messages/{id}/ack"), lease).await;
            assert_eq!(text("payload_encoding").as_deref(), Some("utf8"));
            let payload = text("payload").expect("payload").into_bytes();
            let attributes = m["attributes"].as_object().expect("attributes");
            out.push(courier_received(
                id,
                payload,
                text("content_type"),
                attributes,
                text("ordering_group"),
            ));
        }
        out
    }

    async fn identify(&self, received: &mut [Received], written: &Written) {
        let messages: Vec<Value> = written
            .committed
            .iter()
            .map(|(id, _)| json!({ "payload": "probe", "idempotency_key": id.to_string() }))
            .collect();
        let answer = self.post("messages", json!({ "messages": messages })).await;
        let probes = answer["messages"]
            .as_array()
            .expect("enqueue results")
            .iter()
            .map(|r| (r["id"].as_str().expect("id").to_owned(), r["duplicate"] == true))
            .collect();
        resolve_courier_ids(received, written, probes);
    }

    async fn clean_up(self) {
        assert_eq!(self.server.terminate(), Some(0), "courier serve exits 0 on SIGTERM");
    }
}

/// Where the relay opens Courier's queues in its own process.
enum Store {
    /// Another fresh schema of the test PostgreSQL (`courier+postgres://…?courier_schema=…`),
    /// which the test opens too while the relay runs.
    Postgres(TestSchema),
    /// A SQLite file in a temp dir (`courier+sqlite://…`). The relay's engine holds the file
    /// exclusively, so the test opens it only once the relay has exited.
    Sqlite(tempfile::TempDir),
}

/// Courier's queues opened by the relay in its own process; the test reads them through an
/// engine on the same store.
struct CourierInProcess {
    store: Store,
    engine: Option<Arc<dyn QueueEngine>>,
    queue: QueueRef,
}

impl CourierInProcess {
    async fn postgres() -> Self {
        let schema = TestSchema::new();
        let options = PostgresOptions::new(&courier_testkit::postgres::url())
            .and_then(|o| o.schema(&schema.name))
            .expect("PostgreSQL options");
        let engine = PostgresEngine::open(options)
            .await
            .unwrap_or_else(|e| unreachable("cannot open the queue engine", e));
        Self::new(Store::Postgres(schema), Some(Arc::new(engine)))
    }

    fn sqlite() -> Self {
        Self::new(Store::Sqlite(tempfile::tempdir().expect("temp dir")), None)
    }

    fn new(store: Store, engine: Option<Arc<dyn QueueEngine>>) -> Self {
        let queue = QueueRef::from_str(&unique("orders-")).expect("queue name");
        Self { store, engine, queue }
    }

    /// The engine, opening the SQLite file on first use.
    async fn engine(&mut self) -> Arc<dyn QueueEngine> {
        if let (None, Store::Sqlite(dir)) = (&self.engine, &self.store) {
            let options = SqliteOptions::new(dir.path().join("courier.db"));
            let engine = SqliteEngine::open(options).await.expect("open the relay's SQLite file");
            self.engine = Some(Arc::new(engine));
        }
        self.engine.clone().expect("an open engine")
    }
}

impl Consumer for CourierInProcess {
    /// Destination: a bare queue name, in the relay's default namespace.
    fn target(&self) -> (String, String) {
        let to = match &self.store {
            Store::Postgres(schema) => {
                let url = courier_testkit::postgres::url();
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("courier+{url}{separator}courier_schema={}", schema.name)
            }
            Store::Sqlite(dir) => format!("courier+sqlite://{}", dir.path().join("courier.db").display()),
        };
        (to, self.queue.name.to_string())
    }

    fn readable_while_relaying(&self) -> bool {
        matches!(self.store, Store::Postgres(_))
    }

    async fn poll(&mut self) -> Vec<Received> {
        let engine = self.engine().await;
        let options = ReceiveOptions {
            max_messages: 10,
            ..ReceiveOptions::default()
        };
        let batch = engine.receive(&self.queue, &options).await.expect("receive");
        let mut out = Vec::new();
        for d in batch.deliveries {
            engine.ack(&self.queue, &d.receipt()).await.expect("ack");
            let m = d.message;
            out.push(courier_received(
                m.id.to_string(),
                m.payload.to_vec(),
                m.content_type,
                &m.attributes,
                m.ordering_group,
            ));
        }
        out
    }

    async fn identify(&self, received: &mut [Received], written: &Written) {
        let probes = written
            .committed
            .iter()
            .map(|(id, _)| NewMessage {
                idempotency_key: Some(id.to_string()),
                ..NewMessage::new("probe")
            })
            .collect();
        let engine = self.engine.as_ref().expect("opened by poll");
        let enqueued = engine.enqueue(&self.queue, probes).await.expect("enqueue probes");
        let probes = enqueued.into_iter().map(|e| (e.id.to_string(), e.duplicate)).collect();
        resolve_courier_ids(received, written, probes);
    }

    async fn clean_up(self) {
        if let Some(engine) = self.engine {
            engine.shutdown().await.expect("shut the engine down");
        }
    }
}
