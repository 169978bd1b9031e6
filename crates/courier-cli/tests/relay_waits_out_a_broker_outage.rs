//! A relay whose broker is down keeps every message pending, backs off, and publishes them
//! all once the broker comes up: `courier relay` to a NATS port where nothing listens yet,
//! then a throwaway `nats-server` (JetStream, its own store) started on that port. The shared
//! NATS on 4222 is never touched.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use common::{courier, spawn_until_banner, terminate};
use courier_testkit::postgres::TestSchema;
use courier_testkit::process::free_port;

const MESSAGES: usize = 50;

/// A `nats-server -js` of this test's own, killed on drop.
struct ThrowawayNats {
    child: Child,
    _store: tempfile::TempDir,
}

impl ThrowawayNats {
    fn start(port: u16) -> Self {
        let store = tempfile::tempdir().expect("temp dir");
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed (Debian package nats-server)");
        Self { child, _store: store }
    }
}

impl Drop for ThrowawayNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn count(conn: &mut sqlx::PgConnection, schema: &str, condition: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".outbox WHERE {condition}"))
        .fetch_one(conn)
        .await
        .expect("count outbox rows")
}

async fn connect_jetstream(url: &str) -> jetstream::Context {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match async_nats::connect(url).await {
            Ok(client) => return jetstream::new(client),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the throwaway nats-server did not come up: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_for_a_broker_that_is_down_and_go_out_when_it_is_back() {
    let schema = TestSchema::new();
    let scratch = tempfile::tempdir().expect("temp dir");
    let url = courier_testkit::postgres::url();
    let migrated = courier()
        .args(["migrate", "--outbox", "--database", &url, "--schema", &schema.name])
        .output()
        .expect("run migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let mut conn = schema.connect().await;
    for i in 0..MESSAGES {
        sqlx::query(&format!(
            "INSERT INTO \"{}\".outbox (destination, key, payload) VALUES ('outage.orders', $1, $2)",
            schema.name
        ))
        .bind(format!("k{}", i % 5))
        .bind(format!("m{i}").into_bytes())
        .execute(&mut conn)
        .await
        .expect("insert");
    }

    let port = free_port();
    let nats_url = format!("nats://127.0.0.1:{port}");
    let (mut relay, _) = spawn_until_banner(
        &[
            "relay",
            "--database",
            &url,
            "--schema",
            &schema.name,
            "--to",
            &nats_url,
            "--relay-id",
            "outage",
        ],
        &scratch.path().join("relay.log"),
    );
    // Down: nothing is lost or given up on; attempts are counted and spaced out.
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(&mut conn, &schema.name, "attempts >= 2").await == 0 {
        assert!(
            Instant::now() < deadline,
            "no retry within 15 s while the broker was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&mut conn, &schema.name, "status = 'pending'").await,
        MESSAGES as i64
    );
    let retried_at: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT attempts::bigint, next_attempt_at - last_attempt_at FROM \"{}\".outbox WHERE attempts >= 2",
        schema.name
    ))
    .fetch_all(&mut conn)
    .await
    .expect("read backoff");
    assert!(
        retried_at.iter().all(|(_, wait_ms)| *wait_ms >= 500),
        "retries back off rather than spin: {retried_at:?}"
    );

    // Up: a broker with a stream for the subject; every message arrives, once.
    let nats = ThrowawayNats::start(port);
    let js = connect_jetstream(&nats_url).await;
    js.create_stream(stream::Config {
        name: "outage".into(),
        subjects: vec!["outage.>".into()],
        ..Default::default()
    })
    .await
    .expect("create the stream");
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&mut conn, &schema.name, "true").await > 0 {
        assert!(
            Instant::now() < deadline,
            "messages not all published 30 s after the broker came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = js.get_stream("outage").await.expect("stream");
    assert_eq!(stream.info().await.expect("info").state.messages, MESSAGES as u64);
    assert_eq!(terminate(&mut relay), Some(0));
    drop(nats);
}
