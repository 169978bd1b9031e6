//! PostgreSQL wake-ups across processes, with a 10 s poll so only a wake-up can explain a quick
//! publish: a plain SQL insert wakes the relay through the table's trigger; another process's
//! writer (a second outbox handle on its own pool) wakes it with the NOTIFY it sends after
//! commit; in the default after-commit mode a caller that commits without telling the outbox
//! does not fire the trigger (that is the point of the mode) and is found by `wake()`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{fast_options, messages, pg_pool, wait_until, Db, Running, TestPublisher};
use courier_core::SystemClock;
use courier_outbox::postgres::{PgOutbox, WakeMode};

const QUICK: Duration = Duration::from_secs(2);

/// A relay that would poll only every 10 s, already past its first look.
async fn sleepy_relay(db: &Db, publisher: Arc<TestPublisher>) -> Running {
    let relay = Running::start(db.relay(publisher, fast_options("sleepy").poll_interval(Duration::from_secs(10))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay
}

fn schema(db: &Db) -> &str {
    match db {
        Db::Pg { schema, .. } => &schema.name,
        Db::Lite { .. } => unreachable!("PostgreSQL only"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_sql_insert_wakes_the_relay_through_the_trigger() {
    let db = Db::postgres(Arc::new(SystemClock)).await;
    let publisher = TestPublisher::new();
    let relay = sleepy_relay(&db, publisher.clone()).await;
    db.execute("INSERT INTO {s}.outbox (destination, payload) VALUES ('orders', 'x')")
        .await;
    wait_until("a publish woken by the trigger", QUICK, || async {
        publisher.published().len() == 1
    })
    .await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_commit_wakes_the_relay_through_notify() {
    let db = Db::postgres(Arc::new(SystemClock)).await;
    let publisher = TestPublisher::new();
    let relay = sleepy_relay(&db, publisher.clone()).await;
    // Another process: its own pool and outbox handle, sharing nothing in memory.
    let pool = pg_pool().await;
    let elsewhere = PgOutbox::new(pool.clone(), schema(&db)).expect("schema");

    let mut tx = pool.begin().await.expect("begin");
    elsewhere.write(&mut tx, &messages(1, 0)).await.expect("write");
    elsewhere.commit(tx).await.expect("commit");
    wait_until("a publish woken by the writer's notify", QUICK, || async {
        publisher.published().len() == 1
    })
    .await;

    // Committed without the outbox: the trigger stays quiet in after-commit mode...
    let mut tx = pool.begin().await.expect("begin");
    elsewhere.write(&mut tx, &messages(1, 0)).await.expect("write");
    tx.commit().await.expect("commit");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(publisher.published().len(), 1, "no wake-up was sent");
    // ...until the writer says so.
    elsewhere.wake();
    wait_until("a publish woken by wake()", QUICK, || async {
        publisher.published().len() == 2
    })
    .await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_transaction_mode_wakes_the_relay_at_a_plain_commit() {
    let db = Db::postgres(Arc::new(SystemClock)).await;
    let publisher = TestPublisher::new();
    let relay = sleepy_relay(&db, publisher.clone()).await;
    let pool = pg_pool().await;
    let elsewhere = PgOutbox::new(pool.clone(), schema(&db))
        .expect("schema")
        .with_wake_mode(WakeMode::InTransaction);
    let mut tx = pool.begin().await.expect("begin");
    elsewhere.write(&mut tx, &messages(2, 1)).await.expect("write");
    tx.commit().await.expect("commit");
    wait_until("a publish woken at commit", QUICK, || async {
        publisher.published().len() == 2
    })
    .await;
    relay.stop().await;
}
