//! Connection loss, on a throwaway cluster these tests may stop or freeze (never the shared
//! server): while the database is down or not answering, requests fail fast with
//! `Unavailable`; once it is back the engine recovers by itself, acknowledged messages are
//! still there, and cross-node wake-ups resume.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_core::{
    Delivery, ErrorKind, LeaseError, NackIntent, NewMessage, QueueEngine, QueuePolicy, QueueRef, ReceiveOptions,
};
use courier_postgres::{PostgresEngine, PostgresOptions};
use courier_testkit::process::ThrowawayPostgres;
use sqlx::{Connection, Executor};

/// How long an operation may wait for a connection while the database is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// A failing request must answer well within this.
const FAIL_FAST: Duration = Duration::from_secs(5);
/// How long the engine may take to notice the database is back (the listener's reconnect
/// backoff tops out at 5 s).
const RECOVERY_MAX: Duration = Duration::from_secs(20);

async fn open(pg: &ThrowawayPostgres) -> Arc<PostgresEngine> {
    let opts = PostgresOptions::new(&pg.url())
        .expect("valid URL")
        .acquire_timeout(ACQUIRE_TIMEOUT);
    Arc::new(PostgresEngine::open(opts).await.expect("open on the throwaway cluster"))
}

/// A queue of its own for each wake-up check, so nothing is ready in it when the check starts.
fn wake_queue(name: &str) -> QueueRef {
    QueueRef::parse("restart", &format!("wake-{name}")).expect("valid name")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart_fails_fast_then_recovers() {
    let pg = Arc::new(blocking(ThrowawayPostgres::start).await);
    let (a, b) = (open(&pg).await, open(&pg).await);
    let q = QueueRef::parse("restart", "q").expect("valid name");
    let kept = a
        .enqueue(&q, vec![NewMessage::new("acknowledged")])
        .await
        .expect("enqueue")[0]
        .id;
    assert!(
        common::woken_across_nodes(&a, &b, &wake_queue("before")).await,
        "wake-ups work before the outage"
    );

    let stopper = pg.clone();
    blocking(move || stopper.stop()).await;
    for (node, name) in [(&a, "a"), (&b, "b")] {
        let started = Instant::now();
        let e = node
            .enqueue(&q, vec![NewMessage::new("while down")])
            .await
            .expect_err("the database is down");
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{name}: got {e:?}");
        assert!(started.elapsed() < FAIL_FAST, "{name}: took {:?}", started.elapsed());
        let e = node.ready().await.expect_err("not ready while down");
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{name}: got {e:?}");
        let started = Instant::now();
        let e = node
            .try_receive(&q, &ReceiveOptions::default())
            .await
            .expect_err("down");
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{name}: got {e:?}");
        assert!(started.elapsed() < FAIL_FAST, "{name}: took {:?}", started.elapsed());
    }

    let starter = pg.clone();
    blocking(move || starter.start_again()).await;
    let deadline = Instant::now() + RECOVERY_MAX;
    while a.ready().await.is_err() || b.ready().await.is_err() {
        assert!(Instant::now() < deadline, "the engines did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = b
        .get_message(&q, kept)
        .await
        .expect("acknowledged before the outage, still there");
    assert_eq!(&info.payload[..], b"acknowledged");
    let listed = a.list_messages(&q, Default::default()).await.expect("list");
    assert!(
        listed.items.iter().all(|m| &m.payload[..] != b"while down"),
        "a refused enqueue added nothing"
    );
    // The listener reconnects on its own, with backoff; wake-ups resume without a restart.
    let mut resumed = false;
    for attempt in 0.. {
        if resumed || Instant::now() >= deadline {
            break;
        }
        resumed = common::woken_across_nodes(&a, &b, &wake_queue(&format!("after-{attempt}"))).await;
    }
    assert!(resumed, "cross-node wake-ups did not resume after the restart");
}

/// A database that stops answering without closing its connections (a hung host, a network
/// path that silently drops packets): calls on open connections fail with `Unavailable` once
/// the operation timeout has passed instead of hanging until TCP gives up, the node keeps
/// running, and once the server answers again everything works as before and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_database_fails_requests_after_the_operation_timeout_then_recovers() {
    const OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
    let pg = Arc::new(blocking(ThrowawayPostgres::start).await);
    let opts = PostgresOptions::new(&pg.url())
        .expect("valid URL")
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT);
    let node = Arc::new(PostgresEngine::open(opts).await.expect("open on the throwaway cluster"));
    let q = QueueRef::parse("frozen", "q").expect("valid name");
    let kept = node
        .enqueue(&q, vec![NewMessage::new("before")])
        .await
        .expect("enqueue")[0]
        .id;

    // A purge already running when the server freezes (waiting for a lock, so it is surely
    // still running): watched, not bounded, it must still fail once the server stops
    // answering the watcher's looks.
    let purged = QueueRef::parse("frozen", "purged").expect("valid name");
    node.enqueue(&purged, vec![NewMessage::new("m")])
        .await
        .expect("enqueue");
    let mut blocker = sqlx::PgConnection::connect(&pg.url()).await.expect("connect");
    blocker
        .execute("BEGIN; LOCK TABLE courier.messages IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let running_purge = tokio::spawn({
        let node = node.clone();
        async move { node.purge(&purged).await }
    });
    tokio::time::sleep(OPERATION_TIMEOUT).await;

    let freezer = pg.clone();
    blocking(move || freezer.freeze()).await;
    let started = Instant::now();
    // Each call bounded here too, so a regression fails the test instead of hanging it.
    let e = tokio::time::timeout(FAIL_FAST, node.enqueue(&q, vec![NewMessage::new("while frozen")]))
        .await
        .expect("the enqueue came back")
        .expect_err("nothing answers");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "enqueue: got {e:?}");
    let e = tokio::time::timeout(FAIL_FAST, node.try_receive(&q, &ReceiveOptions::default()))
        .await
        .expect("the receive came back")
        .expect_err("nothing answers");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "receive: got {e:?}");
    let e = tokio::time::timeout(FAIL_FAST, node.get_message(&q, kept))
        .await
        .expect("the get came back")
        .expect_err("nothing answers");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "get: got {e:?}");
    let e = tokio::time::timeout(FAIL_FAST, node.purge(&q))
        .await
        .expect("the purge came back")
        .expect_err("nothing answers");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "purge: got {e:?}");
    let e = tokio::time::timeout(FAIL_FAST, node.ready())
        .await
        .expect("the readiness check came back")
        .expect_err("not ready while frozen");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "ready: got {e:?}");
    // Each call waits at most the operation timeout (or the acquire timeout for a new
    // connection, which a frozen server does not accept either).
    assert!(started.elapsed() < FAIL_FAST, "five calls took {:?}", started.elapsed());
    let e = tokio::time::timeout(FAIL_FAST, running_purge)
        .await
        .expect("the running purge came back")
        .expect("purge task")
        .expect_err("nothing answers");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "running purge: got {e:?}");

    let thawer = pg.clone();
    blocking(move || thawer.thaw()).await;
    blocker.execute("COMMIT").await.expect("unlock");
    let deadline = Instant::now() + RECOVERY_MAX;
    while node.ready().await.is_err() {
        assert!(Instant::now() < deadline, "the node did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Had a receive leased it once the server answered, for a caller gone by then, the lease
    // would be given back in the background: allow a moment for it to come back.
    let mut seen = Vec::new();
    while !seen.iter().any(|p: &Vec<u8>| p == b"before") {
        assert!(
            Instant::now() < deadline,
            "the message from before the freeze is lost: {seen:?}"
        );
        let opts = ReceiveOptions {
            max_messages: 10,
            wait: Duration::from_millis(500),
            ..ReceiveOptions::default()
        };
        let got = node.receive(&q, &opts).await.expect("receive");
        seen.extend(got.deliveries.iter().map(|d| d.message.payload.to_vec()));
    }
}

/// A receive commits its leases without waiting for the disk, so a database crash may take
/// the last ones back: the message is ready again at once, with no failure counted. Its
/// next lease must still carry a higher fencing token than the lost one (which a consumer may
/// already have shown to a downstream system), and the lost lease can settle nothing.
///
/// The crash is made deterministic: the WAL writer is stopped before the receive, so nothing
/// writes the lease's commit record out, then killed, which makes PostgreSQL reinitialize and
/// recover from what is on disk (as after a power cut).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_in_a_database_crash_comes_back_with_a_higher_fencing_token() {
    let pg = Arc::new(blocking(ThrowawayPostgres::start).await);
    let node = open(&pg).await;
    let q = QueueRef::parse("crash", "q").expect("valid name");
    let id = node.enqueue(&q, vec![NewMessage::new("m")]).await.expect("enqueue")[0].id;
    let mut admin = sqlx::PgConnection::connect(&pg.url()).await.expect("connect");
    let wal_writer = wal_writer_pid(&mut admin).await;
    let long_lease = ReceiveOptions {
        lease: Some(Duration::from_secs(3_600)),
        ..ReceiveOptions::default()
    };

    // Whatever the enqueue left to flush (its wake-up NOTIFY commits asynchronously) is flushed
    // first, so that the only unflushed commit at the crash is the lease's.
    assert!(wait_for_wal_flush(&mut admin).await, "the WAL writer did not catch up");
    signal(wal_writer, "-STOP");
    let lost = node.try_receive(&q, &long_lease).await.expect("receive");
    let lease_unflushed = !wal_flushed(&mut admin).await;
    signal(wal_writer, "-KILL");
    assert!(
        lease_unflushed,
        "the lease's commit was flushed before the crash: it was not asynchronous, or something else flushed the WAL"
    );
    let lost = lost.deliveries.into_iter().next().expect("leased before the crash");
    assert_eq!(lost.message.id, id);

    let again = receive_once_back(
        &node,
        &q,
        Duration::from_secs(3_600),
        "the message did not come back after the crash",
    )
    .await;
    assert_eq!(again.message.id, id, "the lost lease made the message ready again");
    assert!(
        again.lease.fencing_token > lost.lease.fencing_token,
        "a fencing token repeated across the crash: {:?} after {:?}",
        again.lease.fencing_token,
        lost.lease.fencing_token
    );
    assert!(
        again.lease.fencing_token.0 >= 1 << 32,
        "the first lease after the crash starts the second epoch: {:?}",
        again.lease.fencing_token
    );
    assert_eq!(
        (again.message.deliveries, again.lease.attempt),
        (lost.message.deliveries, lost.lease.attempt),
        "the lost lease counts neither a delivery nor a failed attempt"
    );
    let e = node
        .ack(&q, &lost.receipt())
        .await
        .expect_err("the lost lease is stale");
    assert!(matches!(e, LeaseError::Stale(m) if m == id), "got {e:?}");
    node.ack(&q, &again.receipt())
        .await
        .expect("the new lease settles the message");
}

/// An ack of a message outside ordering groups commits without waiting for the disk (the
/// default), so a database crash may take it back: the message is then in flight again under
/// the lease the ack settled, and once that lease runs out it is delivered again with no
/// failure counted and its last error kept. Even on its last attempt it is not dead-lettered:
/// its holder did its part. A lease granted after the crash counts a failure as always.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_lost_in_a_database_crash_delivers_the_message_again_without_counting_a_failure() {
    let pg = Arc::new(blocking(ThrowawayPostgres::start).await);
    let node = open(&pg).await;
    let q = QueueRef::parse("crash", "acks").expect("valid name");
    let two_attempts = QueuePolicy {
        max_attempts: 2,
        ..QueuePolicy::default()
    };
    node.set_policy(&q, two_attempts).await.expect("set_policy");
    let id = node.enqueue(&q, vec![NewMessage::new("m")]).await.expect("enqueue")[0].id;
    let lease = ReceiveOptions {
        lease: Some(Duration::from_secs(5)),
        ..ReceiveOptions::default()
    };
    let failed = node.try_receive(&q, &lease).await.expect("receive");
    let failed = failed.deliveries.into_iter().next().expect("one delivery");
    let boom = NackIntent::Failure {
        error: "boom".into(),
        delay: Some(Duration::ZERO),
    };
    node.nack(&q, &failed.receipt(), boom).await.expect("nack");
    let acked = node.try_receive(&q, &lease).await.expect("receive");
    let acked = acked.deliveries.into_iter().next().expect("the last attempt");
    assert_eq!(acked.lease.attempt, 2);

    let mut admin = sqlx::PgConnection::connect(&pg.url()).await.expect("connect");
    let wal_writer = wal_writer_pid(&mut admin).await;
    // The lease (also committed without waiting) reaches the disk; only the ack must not.
    assert!(wait_for_wal_flush(&mut admin).await, "the WAL writer did not catch up");
    signal(wal_writer, "-STOP");
    node.ack(&q, &acked.receipt()).await.expect("ack");
    let ack_unflushed = !wal_flushed(&mut admin).await;
    signal(wal_writer, "-KILL");
    assert!(
        ack_unflushed,
        "the ack's commit was flushed before the crash: it was not asynchronous, or something else flushed the WAL"
    );

    let again = receive_once_back(
        &node,
        &q,
        Duration::from_secs(1),
        "the message whose ack was lost did not come back (dead-lettered or still leased)",
    )
    .await;
    assert_eq!(
        again.message.id, id,
        "the lost ack left the message to be delivered again"
    );
    assert_eq!(
        (again.lease.attempt, again.message.deliveries),
        (acked.lease.attempt, acked.message.deliveries + 1),
        "the lapse of a lease from before the crash counts no failed attempt"
    );
    assert!(again.lease.fencing_token > acked.lease.fencing_token);
    let info = node.get_message(&q, id).await.expect("get");
    assert_eq!(info.last_error.as_deref(), Some("boom"), "the last error is kept");
    let e = node
        .ack(&q, &acked.receipt())
        .await
        .expect_err("the settled lease is stale");
    assert!(matches!(e, LeaseError::Stale(m) if m == id), "got {e:?}");

    // The new lease (token = the new epoch's floor) lapses as any lease does: a failure, the
    // second of two, so the message is dead-lettered.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let stats = node.stats(&q).await.expect("stats");
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead_lettered),
        (0, 0, 1),
        "{stats:?}"
    );
    let info = node.get_message(&q, id).await.expect("get");
    assert_eq!((info.failures, info.last_error.as_deref()), (2, Some("lease expired")));
}

/// Acks that must be durable wait for their commit to reach the disk: every ack with
/// `durable_acks`, and by default those of grouped messages (a group must never hand on and
/// then get the message back). They are flushed even while the WAL writer is stopped; a
/// default ack of an ungrouped message is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_and_grouped_acks_flush_their_commit_before_returning() {
    let pg = Arc::new(blocking(ThrowawayPostgres::start).await);
    let opts = PostgresOptions::new(&pg.url()).expect("valid URL").durable_acks(true);
    let durable = PostgresEngine::open(opts).await.expect("open on the throwaway cluster");
    let default = open(&pg).await;
    let q = |name| QueueRef::parse("flush", name).expect("valid name");

    assert!(
        ack_flushes_by_itself(&durable, &pg, &q("durable"), NewMessage::new("m")).await,
        "a durable ack returned before its commit was flushed"
    );
    let grouped = NewMessage::new("g").with_ordering_group("g");
    assert!(
        ack_flushes_by_itself(&default, &pg, &q("grouped"), grouped).await,
        "a grouped ack returned before its commit was flushed"
    );
    assert!(
        !ack_flushes_by_itself(&default, &pg, &q("plain"), NewMessage::new("u")).await,
        "a default ack of an ungrouped message waited for the flush"
    );
}

/// Shutting down makes durable what committed without waiting: a lease taken while the WAL
/// writer is stopped is on disk once `shutdown` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_leases_and_acks_that_did_not_wait() {
    let pg = Arc::new(blocking(ThrowawayPostgres::start).await);
    let node = open(&pg).await;
    let q = QueueRef::parse("flush", "shutdown").expect("valid name");
    node.enqueue(&q, vec![NewMessage::new("m")]).await.expect("enqueue");
    let mut admin = sqlx::PgConnection::connect(&pg.url()).await.expect("connect");
    let wal_writer = wal_writer_pid(&mut admin).await;
    assert!(wait_for_wal_flush(&mut admin).await, "the WAL writer did not catch up");
    signal(wal_writer, "-STOP");
    let leased = node.try_receive(&q, &ReceiveOptions::default()).await;
    let unflushed = !wal_flushed(&mut admin).await;
    let shut = node.shutdown().await;
    let flushed = wal_flushed(&mut admin).await;
    signal(wal_writer, "-CONT");
    assert_eq!(leased.expect("receive").deliveries.len(), 1);
    shut.expect("shutdown");
    assert!(unflushed, "the lease waited for the flush");
    assert!(flushed, "shutdown returned with the lease not on disk");
}

/// Enqueues and receives `message` on `node`, then acks it with the WAL writer stopped;
/// returns whether the ack's commit was flushed when it returned.
async fn ack_flushes_by_itself(
    node: &PostgresEngine,
    pg: &ThrowawayPostgres,
    q: &QueueRef,
    message: NewMessage,
) -> bool {
    node.enqueue(q, vec![message]).await.expect("enqueue");
    let got = node.try_receive(q, &ReceiveOptions::default()).await.expect("receive");
    let got = got.deliveries.into_iter().next().expect("one delivery");
    let mut admin = sqlx::PgConnection::connect(&pg.url()).await.expect("connect");
    let wal_writer = wal_writer_pid(&mut admin).await;
    assert!(wait_for_wal_flush(&mut admin).await, "the WAL writer did not catch up");
    signal(wal_writer, "-STOP");
    let acked = node.ack(q, &got.receipt()).await;
    let flushed = wal_flushed(&mut admin).await;
    signal(wal_writer, "-CONT");
    acked.expect("ack");
    flushed
}

/// Receives one message with a lease of `lease`, retrying while the database recovers; fails
/// with `what` after [`RECOVERY_MAX`].
async fn receive_once_back(node: &PostgresEngine, q: &QueueRef, lease: Duration, what: &str) -> Delivery {
    let long_lease = ReceiveOptions {
        lease: Some(lease),
        ..ReceiveOptions::default()
    };
    let deadline = Instant::now() + RECOVERY_MAX;
    loop {
        assert!(Instant::now() < deadline, "{what}");
        match node.try_receive(q, &long_lease).await {
            Ok(batch) if !batch.deliveries.is_empty() => {
                return batch.deliveries.into_iter().next().expect("one delivery")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn wal_writer_pid(admin: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'")
        .fetch_one(admin)
        .await
        .expect("the WAL writer's pid")
}

/// Waits (up to 2 s) until the WAL writer has flushed what earlier commits left, so that the
/// next commit is the only one a crash can take back; whether it did.
async fn wait_for_wal_flush(admin: &mut sqlx::PgConnection) -> bool {
    let settled = Instant::now() + Duration::from_secs(2);
    while !wal_flushed(admin).await {
        if Instant::now() >= settled {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Whether the server has flushed all the WAL it has written records to.
async fn wal_flushed(admin: &mut sqlx::PgConnection) -> bool {
    sqlx::query_scalar("SELECT pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()")
        .fetch_one(admin)
        .await
        .expect("WAL positions")
}

/// Sends `signal` (as `kill` spells it) to a server process.
fn signal(pid: i32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}: {status}");
}
