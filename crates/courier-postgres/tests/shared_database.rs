//! What the embedded engine never had to prove: several engines (nodes) on one database keep
//! every guarantee, receive stays an index scan on a big table, wake-ups cross nodes, and a
//! database that cannot be reached fails requests fast and a node whose sessions were
//! terminated serves again by itself.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestSchema;
use courier_core::{
    Clock, ErrorKind, FencingToken, LeaseError, ListOptions, ManualClock, MessageId, MessageStatus, NewMessage,
    QueueEngine, QueuePolicy, QueueRef, ReceiveBatch, ReceiveOptions, StorageError, SystemClock, Timestamp,
};
use courier_postgres::{plans, PostgresEngine, PostgresOptions};
use courier_testkit::postgres::until_waiting_for_a_lock;
use serde_json::Value;
use sqlx::{Executor, Row};

fn queue(name: &str) -> QueueRef {
    QueueRef::parse("nodes", name).expect("valid queue name")
}

fn take(max: usize) -> ReceiveOptions {
    ReceiveOptions {
        max_messages: max,
        ..ReceiveOptions::default()
    }
}

/// Two engines on one schema, as two `courier serve` nodes would be.
async fn two_nodes(schema: &TestSchema, clock: Arc<dyn Clock>) -> (Arc<PostgresEngine>, Arc<PostgresEngine>) {
    let a = common::open(schema, clock.clone()).await;
    let b = common::open(schema, clock).await;
    (Arc::new(a), Arc::new(b))
}

/// Receivers on both nodes drain 2000 messages at once: every message is leased exactly once,
/// with fencing token 1, while leases are long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_never_share_a_lease() {
    const MESSAGES: usize = 2_000;
    const RECEIVERS_PER_NODE: usize = 4;
    let schema = TestSchema::new();
    let (a, b) = two_nodes(&schema, Arc::new(SystemClock)).await;
    let q = queue("drain");
    for chunk in 0..MESSAGES / 1_000 {
        let batch = (0..1_000).map(|i| NewMessage::new(format!("{chunk}-{i}"))).collect();
        a.enqueue(&q, batch).await.expect("enqueue");
    }
    let mut tasks = Vec::new();
    for r in 0..RECEIVERS_PER_NODE * 2 {
        let engine: Arc<dyn QueueEngine> = if r % 2 == 0 { a.clone() } else { b.clone() };
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = engine.try_receive(&q, &take(1 + r % 10)).await.expect("receive");
                if batch.deliveries.is_empty() {
                    return got;
                }
                got.extend(batch.deliveries.iter().map(|d| (d.message.id, d.lease.fencing_token)));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("receiver task"));
    }
    let unique: BTreeSet<_> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(all.len(), MESSAGES, "every message delivered, none twice");
    assert_eq!(unique.len(), MESSAGES);
    assert!(all.iter().all(|(_, token)| *token == FencingToken(1)));
    assert_eq!(b.stats(&q).await.expect("stats").in_flight, MESSAGES as u64);
}

/// A lease that ran out on one node and was taken again on the other: the old holder's ack,
/// nack and extend are refused as stale on either node, the new holder's ack works anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_ack_refused_across_engines() {
    let schema = TestSchema::new();
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let (a, b) = two_nodes(&schema, clock.clone()).await;
    let q = queue("fenced");
    let id = a.enqueue(&q, vec![NewMessage::new("m")]).await.expect("enqueue")[0].id;
    let first = a.try_receive(&q, &take(1)).await.expect("receive").deliveries;
    assert_eq!(first.len(), 1);
    clock.advance(Duration::from_millis(QueuePolicy::default().lease_ms));
    let second = b.try_receive(&q, &take(1)).await.expect("receive").deliveries;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message.id, id);
    assert_eq!(second[0].lease.fencing_token, FencingToken(2));
    for node in [&a, &b] {
        let e = node.ack(&q, &first[0].receipt()).await.expect_err("stale ack");
        assert!(matches!(e, LeaseError::Stale(m) if m == id), "got {e:?}");
        let e = node.extend(&q, &first[0].receipt(), Duration::from_secs(60)).await;
        assert_eq!(e.expect_err("stale extend").kind(), ErrorKind::LeaseConflict);
    }
    a.ack(&q, &second[0].receipt())
        .await
        .expect("the current lease acks on the other node");
    let e = b.ack(&q, &second[0].receipt()).await.expect_err("already acked");
    assert!(matches!(e, LeaseError::MessageNotFound(_)), "got {e:?}");
}

/// A long poll on node B returns well under a second after node A enqueues: the wake-up
/// crosses nodes through LISTEN/NOTIFY (without it B would sleep its whole 5 s wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_up_crosses_engines() {
    let (batch, took, id) = long_poll_across_nodes("polled", NewMessage::new("wake")).await;
    assert_eq!(batch.deliveries.len(), 1);
    assert_eq!(batch.deliveries[0].message.id, id);
    assert!(
        took < Duration::from_secs(1),
        "woken {took:?} after the enqueue on the other node"
    );
}

/// A delayed message enqueued on one node reaches a receiver long-polling on another when it
/// falls due: the notification tells the receiver to look, and it then sleeps until the due
/// time it found, well before the slow recheck (every 1.5-2.5 s) would have found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_wakes_a_receiver_on_another_node_when_due() {
    let delay = Duration::from_millis(600);
    let message = NewMessage::new("later").with_delay(delay);
    let (batch, took, id) = long_poll_across_nodes("delayed", message).await;
    assert_eq!(batch.deliveries.len(), 1);
    assert_eq!(batch.deliveries[0].message.id, id);
    assert!(
        took >= delay,
        "delivered {took:?} after the enqueue, before its delay of {delay:?}"
    );
    assert!(
        took < delay + Duration::from_millis(500),
        "delivered {took:?} after the enqueue: not when due ({delay:?})"
    );
}

/// Has node `b` long-poll a fresh queue, then node `a` enqueue `message` once `b` sleeps.
/// Returns what `b` received, how long after the enqueue, and the enqueued id.
async fn long_poll_across_nodes(name: &str, message: NewMessage) -> (ReceiveBatch, Duration, MessageId) {
    let schema = TestSchema::new();
    let (a, b) = two_nodes(&schema, Arc::new(SystemClock)).await;
    let q = queue(name);
    a.set_policy(&q, QueuePolicy::default()).await.expect("set_policy");
    let receiver = {
        let (b, q) = (b.clone(), q.clone());
        tokio::spawn(async move {
            let opts = ReceiveOptions {
                wait: Duration::from_secs(5),
                ..ReceiveOptions::default()
            };
            let batch = b.receive(&q, &opts).await.expect("receive");
            (batch, Instant::now())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.stats(&q).await.expect("stats").waiting_receivers == 0 {
        assert!(Instant::now() < deadline, "the receiver never started waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the receiver settle into its sleep, so only a notification can wake it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let enqueued_at = Instant::now();
    let id = a.enqueue(&q, vec![message]).await.expect("enqueue")[0].id;
    let (batch, returned_at) = receiver.await.expect("receiver task");
    (batch, returned_at.duration_since(enqueued_at), id)
}

/// Producers on both nodes fill four ordering groups while consumers on both nodes drain them:
/// no group ever has two messages in flight, and each producer's messages of a group arrive
/// in the order it enqueued them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_groups_hold_across_engines() {
    const PER_PRODUCER: usize = 120;
    const GROUPS: usize = 4;
    let schema = TestSchema::new();
    let (a, b) = two_nodes(&schema, Arc::new(SystemClock)).await;
    let q = queue("grouped");
    let mut producers = Vec::new();
    for (name, node) in [("a", a.clone()), ("b", b.clone())] {
        let q = q.clone();
        producers.push(tokio::spawn(async move {
            for chunk in 0..PER_PRODUCER / 10 {
                let batch = (0..10)
                    .map(|i| {
                        let n = chunk * 10 + i;
                        NewMessage::new(format!("{name}:{n}")).with_ordering_group(format!("g{}", n % GROUPS))
                    })
                    .collect();
                node.enqueue(&q, batch).await.expect("enqueue");
            }
        }));
    }
    let holders: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut consumers = Vec::new();
    for r in 0..6 {
        let node: Arc<dyn QueueEngine> = if r % 2 == 0 { a.clone() } else { b.clone() };
        let (q, holders, seen) = (q.clone(), holders.clone(), seen.clone());
        consumers.push(tokio::spawn(async move {
            let give_up = Instant::now() + Duration::from_secs(60);
            while seen.lock().expect("seen").len() < PER_PRODUCER * 2 && Instant::now() < give_up {
                let batch = node.try_receive(&q, &take(3)).await.expect("receive");
                if batch.deliveries.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                for d in batch.deliveries {
                    let group = d.message.ordering_group.clone().expect("grouped");
                    let payload = String::from_utf8(d.message.payload.to_vec()).expect("utf-8");
                    let previous = holders.lock().expect("holders").insert(group.clone(), payload.clone());
                    assert!(
                        previous.is_none(),
                        "{group} had {previous:?} in flight when {payload} was leased"
                    );
                    seen.lock().expect("seen").push(payload);
                    holders.lock().expect("holders").remove(&group);
                    node.ack(&q, &d.receipt()).await.expect("ack");
                }
            }
        }));
    }
    for t in producers.into_iter().chain(consumers) {
        t.await.expect("task");
    }
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), PER_PRODUCER * 2, "every message delivered once");
    let mut last: HashMap<(String, usize), usize> = HashMap::new();
    for payload in &seen {
        let (producer, n) = payload.split_once(':').expect("producer:n");
        let n: usize = n.parse().expect("number");
        let key = (producer.to_owned(), n % GROUPS);
        if let Some(prev) = last.insert(key, n) {
            assert!(prev < n, "{producer}'s group {} went {prev} then {n}", n % GROUPS);
        }
    }
}

/// The same idempotency key enqueued from both nodes at once adds exactly one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_holds_across_engines() {
    let schema = TestSchema::new();
    let (a, b) = two_nodes(&schema, Arc::new(SystemClock)).await;
    let q = queue("keyed");
    let mut tasks = Vec::new();
    for r in 0..8 {
        let node: Arc<dyn QueueEngine> = if r % 2 == 0 { a.clone() } else { b.clone() };
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let m = NewMessage::new(format!("try {r}")).with_idempotency_key("once");
            node.enqueue(&q, vec![m]).await.expect("enqueue")[0]
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let ids: BTreeSet<_> = results.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 1, "one id for every attempt: {results:?}");
    assert_eq!(results.iter().filter(|e| !e.duplicate).count(), 1);
    assert_eq!(a.stats(&q).await.expect("stats").ready, 1);
}

/// Every `Seq Scan` node on `messages` in an `EXPLAIN (FORMAT JSON)` plan.
fn seq_scans_on_messages(plan: &Value, found: &mut Vec<String>) {
    match plan {
        Value::Object(node) => {
            let is_seq = node.get("Node Type").and_then(Value::as_str) == Some("Seq Scan");
            if is_seq && node.get("Relation Name").and_then(Value::as_str) == Some("messages") {
                found.push(plan.to_string());
            }
            node.values().for_each(|v| seq_scans_on_messages(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| seq_scans_on_messages(v, found)),
        _ => {}
    }
}

async fn explain(conn: &mut sqlx::PgConnection, sql: &str, bind: impl FnOnce(&str) -> String) -> Value {
    let text: String = sqlx::query(&bind(sql))
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN failed: {e}\n{sql}"))
        .try_get_unchecked(0)
        .expect("plan text");
    serde_json::from_str(&text).expect("plan JSON")
}

/// The plan of `sql` prepared as `prepared` and executed with `args` (`"(…)"` or empty), as
/// the session's `plan_cache_mode` makes it.
async fn explain_prepared(conn: &mut sqlx::PgConnection, prepared: &str, sql: &str, args: &str) -> Value {
    conn.execute(format!("PREPARE {prepared} AS {sql}").as_str())
        .await
        .expect("prepare");
    explain(conn, sql, |_| format!("EXPLAIN (FORMAT JSON) EXECUTE {prepared}{args}")).await
}

/// With 22 000 messages in one queue (2 000 of them in 100 ordering groups) and ANALYZEd
/// statistics, receive, the maintenance before it, ack and the group statements use indexes: no sequential scan of `messages`, with the
/// parameters at hand (custom plan) nor for any parameters (generic plan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_plan_uses_index() {
    let schema = TestSchema::new();
    let engine = common::open(&schema, Arc::new(SystemClock)).await;
    let q = queue("big");
    for chunk in 0..20 {
        let batch = (0..1_000).map(|i| NewMessage::new(format!("{chunk}-{i}"))).collect();
        engine.enqueue(&q, batch).await.expect("enqueue");
    }
    for chunk in 0..2 {
        let batch = (0..1_000)
            .map(|i| NewMessage::new(format!("g{chunk}-{i}")).with_ordering_group(format!("g{}", i % 100)))
            .collect();
        engine.enqueue(&q, batch).await.expect("enqueue");
    }
    let other = queue("small");
    engine
        .enqueue(&other, vec![NewMessage::new("x")])
        .await
        .expect("enqueue");
    let mut conn = schema.connect().await;
    conn.execute("ANALYZE").await.expect("analyze");
    let queue_id: i64 = sqlx::query_scalar("SELECT id FROM queues WHERE name = 'big'")
        .fetch_one(&mut conn)
        .await
        .expect("queue id");
    let now = SystemClock.now().as_millis();
    let mut statements = vec![(
        "receive",
        plans::receive(),
        format!("({queue_id}, {now}, 10, NULL, 30000, array_fill(gen_random_uuid(), ARRAY[10]))"),
    )];
    for (name, sql) in plans::maintenance() {
        statements.push((name, sql, format!("({queue_id}, {now}, 1000)")));
    }
    statements.push(("next due", plans::next_due().to_owned(), format!("({queue_id}, {now})")));
    statements.push((
        "next sweep",
        plans::next_sweep().to_owned(),
        format!("({queue_id}, {now})"),
    ));
    let ids = "'0190aa7c-0000-7000-8000-000000000001'::uuid, '0190aa7c-0000-7000-8000-000000000002'::uuid";
    statements.push(("ack", plans::ack().to_owned(), format!("({queue_id}, {ids}, {now})")));
    let arrays = format!("ARRAY[{ids}], ARRAY[{ids}]");
    statements.push((
        "ack many",
        plans::ack_many().to_owned(),
        format!("({queue_id}, {arrays}, {now})"),
    ));
    for (name, sql) in [
        ("ack ungrouped", plans::ack_ungrouped()),
        ("ack ungrouped, durable", plans::ack_ungrouped_durable()),
    ] {
        statements.push((name, sql.to_owned(), format!("({queue_id}, {arrays}, {now})")));
    }
    statements.push((
        "release (like an ack)",
        plans::release().to_owned(),
        format!("({queue_id}, {arrays}, ARRAY[{now}, {now}], {now})"),
    ));
    let [(live, live_sql), (promote, promote_sql)] = plans::groups();
    statements.push((live, live_sql.to_owned(), format!("({queue_id}, ARRAY['g1', 'g2'])")));
    statements.push((promote, promote_sql.to_owned(), format!("({queue_id}, 'g1')")));
    for mode in ["force_custom_plan", "force_generic_plan"] {
        conn.execute(format!("SET plan_cache_mode = {mode}").as_str())
            .await
            .expect("set");
        for (index, (name, sql, args)) in statements.iter().enumerate() {
            let plan = explain_prepared(&mut conn, &format!("hot_{index}_{}", mode.len()), sql, args).await;
            let mut found = Vec::new();
            seq_scans_on_messages(&plan, &mut found);
            assert!(
                found.is_empty(),
                "{name} ({mode}) scans messages sequentially: {plan:#}"
            );
            if name.starts_with("ack") || name.starts_with("release") {
                // The visibility index also matches `status = 1 AND visible_at > now`, but
                // walking it reads every in-flight (and recently acked) entry of the queue.
                let text = plan.to_string();
                assert!(
                    text.contains("messages_pkey") && !text.contains("messages_by_visibility"),
                    "{name} ({mode}) should probe the primary key per receipt: {plan:#}"
                );
            }
            if *name == "receive" {
                assert!(
                    plan.to_string().contains("messages_by_visibility"),
                    "receive ({mode}) should walk messages_by_visibility: {plan:#}"
                );
            }
        }
    }
}

/// The statements every new connection runs on the one-row lease epoch tables use their key:
/// under the engine's `enable_seqscan = off` a sequential scan is costed so high that
/// PostgreSQL JIT-compiles it first, tens of milliseconds on every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_the_lease_epoch_scans_no_table() {
    let schema = TestSchema::new();
    let _engine = common::open(&schema, Arc::new(SystemClock)).await;
    let mut conn = schema.connect().await;
    conn.execute("SET enable_seqscan TO off; SET plan_cache_mode TO force_generic_plan")
        .await
        .expect("the engine's planner settings");
    for (index, (name, sql)) in plans::epoch().into_iter().enumerate() {
        let args = if sql.contains("$1") { "('x.y')" } else { "" };
        let plan = explain_prepared(&mut conn, &format!("epoch_{index}"), sql, args).await;
        assert!(
            !plan.to_string().contains("Seq Scan"),
            "{name} scans its table: {plan:#}"
        );
    }
}

/// A database that cannot be reached fails fast with `Unavailable`, naming the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_fails_fast_with_unavailable() {
    // Port 9 (discard) on loopback: nothing listens there on a test machine.
    let opts = PostgresOptions::new("postgres://postgres@127.0.0.1:9/test")
        .expect("valid URL")
        .acquire_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let e = PostgresEngine::open(opts).await.expect_err("nothing listens there");
    assert!(matches!(e, StorageError::Unavailable(_)), "got {e:?}");
    assert!(e.to_string().contains("postgres unavailable"), "got {e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// Concurrent calls on one node share transactions (see `hot.rs`); each must still get what it
/// would have alone: one message per idempotency key, every caller told its id, and acks of
/// one receipt from several callers settle it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_sharing_a_transaction_keep_their_own_outcomes() {
    let schema = TestSchema::new();
    let engine = Arc::new(common::open(&schema, Arc::new(SystemClock)).await);
    let q = queue("combined");
    let calls: Vec<_> = (0..32)
        .map(|n| {
            let (engine, q) = (engine.clone(), q.clone());
            tokio::spawn(async move {
                let batch = vec![
                    NewMessage::new(format!("keyed {n}")).with_idempotency_key(format!("k{}", n % 4)),
                    NewMessage::new(format!("plain {n}")),
                ];
                engine.enqueue(&q, batch).await.expect("enqueue")
            })
        })
        .collect();
    let mut by_key: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut firsts = 0;
    for (n, call) in calls.into_iter().enumerate() {
        let results = call.await.expect("task");
        assert_eq!(results.len(), 2, "one result per message of the call");
        assert!(!results[1].duplicate, "an unkeyed message is never a duplicate");
        firsts += usize::from(!results[0].duplicate);
        by_key
            .entry(format!("k{}", n % 4))
            .or_default()
            .insert(results[0].id.to_string());
    }
    assert_eq!(firsts, 4, "one first message per key");
    assert!(
        by_key.values().all(|ids| ids.len() == 1),
        "every caller of a key got one id: {by_key:?}"
    );

    let batch = engine.try_receive(&q, &take(100)).await.expect("receive");
    assert_eq!(batch.deliveries.len(), 4 + 32, "4 keyed messages and 32 plain ones");
    let receipt = batch.deliveries[0].receipt();
    let acks: Vec<_> = (0..8)
        .map(|_| {
            let (engine, q, receipt) = (engine.clone(), q.clone(), receipt);
            tokio::spawn(async move { engine.ack(&q, &receipt).await })
        })
        .collect();
    let mut settled = 0;
    for ack in acks {
        match ack.await.expect("task") {
            Ok(()) => settled += 1,
            Err(LeaseError::MessageNotFound(_)) => {}
            Err(other) => panic!("unexpected ack error: {other}"),
        }
    }
    assert_eq!(settled, 1, "one receipt settles once, however many callers present it");
}

/// Idempotency records past their dedup window are deleted in the background (as on SQLite),
/// while records still inside their window stay and keep deduplicating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_idempotency_records_are_swept() {
    let schema = TestSchema::new();
    let clock = Arc::new(ManualClock::new(Timestamp(1_000_000)));
    let opts = common::options(&schema, clock.clone()).idempotency_sweep_interval(Duration::from_millis(20));
    let engine = PostgresEngine::open(opts).await.expect("open");
    let q = queue("keys");
    let keyed = |key: &str| vec![NewMessage::new("x").with_idempotency_key(key)];
    engine.enqueue(&q, keyed("old")).await.expect("enqueue");
    clock.advance(QueuePolicy::default().dedup_window() + Duration::from_secs(1));
    engine.enqueue(&q, keyed("fresh")).await.expect("enqueue");

    let mut conn = schema.connect().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency ORDER BY key")
            .fetch_all(&mut conn)
            .await
            .expect("read keys");
        if keys == ["fresh"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expired record was never swept: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = engine.enqueue(&q, keyed("fresh")).await.expect("enqueue");
    assert!(again[0].duplicate, "a record inside its window still deduplicates");
}

/// A look-up of an id the queue does not hold still keeps the sweep it did first: the lapsed
/// lease it found is given back in the stored rows, not left for the next call to find again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_of_an_unknown_id_keeps_its_sweep() {
    let schema = TestSchema::new();
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let engine = common::open(&schema, clock.clone()).await;
    let q = queue("unknown-id");
    engine.enqueue(&q, vec![NewMessage::new("m")]).await.expect("enqueue");
    let short = ReceiveOptions {
        lease: Some(Duration::from_secs(1)),
        ..take(1)
    };
    let leased = engine.try_receive(&q, &short).await.expect("receive").deliveries;
    assert_eq!(leased.len(), 1);
    clock.advance(Duration::from_secs(2));

    let unknown = MessageId(uuid::Uuid::now_v7());
    let err = engine.get_message(&q, unknown).await.expect_err("no such message");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let mut conn = schema.connect().await;
    let stored: Vec<i16> = sqlx::query_scalar("SELECT status FROM messages")
        .fetch_all(&mut conn)
        .await
        .expect("read statuses");
    assert_eq!(stored, [0], "the lapsed lease is ready again in the table (status 0)");
}

/// A queue whose messages come and go is vacuumed by the engine itself, within seconds rather
/// than at autovacuum's next visit (a minute or more): every lease and ack leaves dead index
/// entries at the head of the visibility index that each receive would otherwise walk past.
/// `vacuum_count` counts only vacuums a client ran, never autovacuum's. Messages keep coming
/// and going while the test waits, since a vacuum is skipped while another (autovacuum, the
/// engine's `ANALYZE`) holds the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_churning_queue_has_its_table_vacuumed_by_the_engine() {
    let schema = TestSchema::new();
    let engine = common::open(&schema, Arc::new(SystemClock)).await;
    let q = queue("churn");
    let mut conn = schema.connect().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        churn(&engine, &q, 1_200).await;
        let vacuums: i64 = sqlx::query_scalar(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = 'messages'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("read vacuum count");
        if vacuums > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the engine never vacuumed the churned table");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A node whose pool serves calls on a single connection (`connections_max` 3: one each for
/// the wake-up listener and the bulk-call watcher) runs no `ANALYZE` or vacuum of its own:
/// one would hold every call back while it runs. Autovacuum has the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serving_on_one_connection_leaves_maintenance_to_autovacuum() {
    let schema = TestSchema::new();
    let options = common::options(&schema, Arc::new(SystemClock)).connections_max(3);
    let engine = PostgresEngine::open(options).await.expect("open");
    let q = queue("one-connection");
    // 1 200 inserts cross the first ANALYZE step, 1 200 leases and acks the vacuum's churn.
    churn(&engine, &q, 1_200).await;
    churn(&engine, &q, 1_200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = schema.connect().await;
    let (vacuums, analyzes): (i64, i64) = sqlx::query_as(
        "SELECT vacuum_count, analyze_count FROM pg_stat_user_tables \
         WHERE schemaname = current_schema() AND relname = 'messages'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("read maintenance counts");
    assert_eq!(
        (vacuums, analyzes),
        (0, 0),
        "maintenance ran on the only serving connection"
    );
}

/// Shutdown stops the engine's own maintenance (its `ANALYZE` and vacuums, here throttled to
/// take minutes by the session's cost settings) instead of waiting for it: on a big table one
/// run can take long, and a node being stopped should not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_running_maintenance() {
    let schema = TestSchema::new();
    // Every page touched costs more than the limit, so the run sleeps 100 ms per page.
    let slow_maintenance = common::url_with("options=-c%20vacuum_cost_delay%3D100%20-c%20vacuum_cost_limit%3D1");
    let engine = open_with_url(&schema, &slow_maintenance).await;
    let q = queue("slow-maintenance");
    let mut conn = schema.connect().await;
    // 1 200 inserts start an ANALYZE, 1 200 leases and acks a vacuum (if the ANALYZE is done).
    churn(&engine, &q, 1_200).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while maintenance_running(&mut conn, "count(*)").await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = maintenance_running(&mut conn, "count(*)").await > 0;
    let stopped = tokio::time::timeout(Duration::from_secs(5), engine.shutdown()).await;
    // Orphaned runs would hold the table until their slow end; the schema is dropped next.
    maintenance_running(&mut conn, "count(pg_terminate_backend(pid))").await;
    assert!(started, "the engine started no ANALYZE or vacuum");
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "shutdown waited for maintenance: {stopped:?}"
    );
}

/// The server ends sessions that sit idle (here `idle_session_timeout`, 300 ms; the same
/// FATAL-severity kind of error as the engine's own `idle_in_transaction_session_timeout`):
/// a call on such a connection fails with `Unavailable` (a 503: try again), never
/// `Internal`, and the node serves again by itself on new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_the_server_ended_for_idling_are_unavailable_not_internal() {
    let schema = TestSchema::new();
    let engine = open_with_url(&schema, &common::url_with("options=-c%20idle_session_timeout%3D300")).await;
    let q = queue("idle-ended");
    let mut unavailable = 0;
    for round in 0..6 {
        // Longer than the server lets a session idle, so every kept connection is ended.
        tokio::time::sleep(Duration::from_millis(800)).await;
        for attempt in 0..10 {
            match engine
                .enqueue(&q, vec![NewMessage::new(format!("{round}-{attempt}"))])
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Unavailable, "round {round}: {e}");
                    unavailable += 1;
                }
            }
        }
    }
    // Counted on a connection of the test's own: any of the node's may have been ended again.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&mut schema.connect().await)
        .await
        .expect("count messages");
    assert_eq!(stored, 6, "one message per round, none from a failed call");
    println!("{unavailable} calls met an ended session");
}

/// A login the server refuses (here: no such database) is FATAL like an ended session, but no
/// retry helps it: opening fails as `Internal` (a 500 naming the cause), not `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_internal_not_unavailable() {
    let url = common::url();
    let (base, rest) = url.rsplit_once('/').expect("a database in the URL");
    let params = rest.split_once('?').map_or(String::new(), |(_, p)| format!("?{p}"));
    let options = PostgresOptions::new(&format!("{base}/courier_no_such_database{params}")).expect("valid URL");
    let opened = PostgresEngine::open(options).await;
    let e = opened.expect_err("no such database");
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    assert!(e.to_string().contains("courier_no_such_database"), "{e}");
}

/// An administrator (or a failover) terminates every session of a node, the connections it
/// keeps between hot statements included: each dead connection fails at most one call, with
/// `Unavailable` (a 503), and the node then serves again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_sessions_were_terminated_recovers_by_itself() {
    let schema = TestSchema::new();
    let name = format!("courier_test_{}", schema.name);
    let engine = open_with_url(&schema, &common::url_with(&format!("application_name={name}"))).await;
    let q = queue("terminated");
    churn(&engine, &q, 300).await;
    let mut conn = schema.connect().await;
    // The wake-up listener's session is terminated too, but serves no call.
    let (serving, terminated): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE query NOT LIKE 'LISTEN %'), count(pg_terminate_backend(pid)) \
         FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&name)
    .fetch_one(&mut conn)
    .await
    .expect("terminate the node's sessions");
    assert!(
        serving > 0 && terminated > serving,
        "the node's sessions: {serving} serving of {terminated}"
    );
    let failures = i64::try_from(failures_until_recovered(&engine, &q).await).expect("a count");
    assert!(
        failures <= serving,
        "{failures} calls failed for {serving} terminated sessions: a dead connection was used twice"
    );
}

/// A node on `schema` that connects with `url` (the test database's, with parameters added).
async fn open_with_url(schema: &TestSchema, url: &str) -> PostgresEngine {
    let options = PostgresOptions::new(url)
        .expect("valid URL")
        .schema(&schema.name)
        .expect("valid schema name")
        .connections_max(10);
    PostgresEngine::open(options).await.expect("open")
}

/// The database host vanishes without closing its connections (every open connection goes
/// silent; new ones reach a healthy server, as after a failover): calls on the silent
/// connections fail with `Unavailable` after the operation timeout, the pool closes those
/// connections within the timeout instead of holding their slots until TCP gives up, the
/// combiners' statements end too, and the node serves again on new connections by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_recovers_when_its_open_connections_go_silent_for_good() {
    const OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
    let schema = TestSchema::new();
    let proxy = proxy_to_the_test_database().await;
    let open = || async {
        let options = through(&proxy, &schema, OPERATION_TIMEOUT).connections_max(6);
        Arc::new(PostgresEngine::open(options).await.expect("open through the proxy"))
    };
    let (a, b) = (open().await, open().await);
    let q = queue("silent");
    churn(&a, &q, 300).await;
    // Node b too holds idle connections that will go silent, where a reconnecting listener
    // could land if it took its connection from b's pool.
    churn(&b, &queue("silent-b"), 300).await;

    proxy.blackhole();
    let failures = failures_until_recovered(&a, &q).await;
    assert!(
        failures > 0,
        "the silent connections were never used: the test proved nothing"
    );
    // Node b's wake-up listener was silenced too: it notices when a probe gets no answer and
    // listens again on a new connection, so b hears a's enqueues again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut round = 0;
    loop {
        round += 1;
        if common::woken_across_nodes(&a, &b, &queue(&format!("wake-{round}"))).await {
            break;
        }
        assert!(Instant::now() < deadline, "node b never heard node a again");
    }
    proxy.stop().await;
}

/// A deploy that runs `courier migrate` as the schema's owner and the nodes under a role that
/// may only use the schema's tables (no `CREATE` on the database or the schema): the nodes
/// open, serve, and run no DDL, since the schema is already at the version they know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_role_may_not_create_serves_a_schema_migrated_beforehand() {
    let schema = TestSchema::new();
    let owner = common::options(&schema, Arc::new(SystemClock));
    courier_postgres::migrate(&owner).await.expect("migrate as the owner");
    let role = schema.app_role().await;
    let options = PostgresOptions::new(&role.url)
        .and_then(|o| o.schema(&schema.name))
        .expect("valid options")
        .connections_max(4);
    let engine = PostgresEngine::open(options)
        .await
        .expect("a node under the application role opens");
    one_round_trip(&engine, &queue("least-privilege"))
        .await
        .expect("a node under the application role serves");
    engine.shutdown().await.expect("shutdown");
}

/// Maintenance the node runs in the background when it shuts down (here the `ANALYZE` after
/// its first 1,000 inserts, waiting for a lock) is cancelled on the server: it neither goes
/// on working, or waiting, for a node that is gone, nor holds the shutdown up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_the_maintenance_it_leaves_running() {
    let schema = TestSchema::new();
    let app = format!("courier_test_{}", schema.name);
    let options = PostgresOptions::new(&common::url_with(&format!("application_name={app}")))
        .and_then(|o| o.schema(&schema.name))
        .expect("valid options")
        .operation_timeout(Duration::from_secs(10));
    let node = PostgresEngine::open(options).await.expect("open");
    // Enqueues go on beside this lock; ANALYZE waits for it.
    let mut blocker = lock_messages(&schema, "SHARE UPDATE EXCLUSIVE").await;
    let batch = (0..1_000).map(|i| NewMessage::new(format!("m{i}"))).collect();
    node.enqueue(&queue("grown"), batch).await.expect("enqueue");
    until_waiting_for_a_lock(&app, "the node's ANALYZE").await;

    let started = Instant::now();
    node.shutdown().await.expect("shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the shutdown waited {:?} for its maintenance",
        started.elapsed()
    );
    // Only statements count: sqlx may leave an idle connection open until the pool is
    // dropped, when one comes back from its release check as the pool closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = sqlx::query_scalar(
            "SELECT coalesce(wait_event_type, '-') || ': ' || query FROM pg_stat_activity \
             WHERE application_name = $1 AND state = 'active'",
        )
        .bind(&app)
        .fetch_all(&mut blocker)
        .await
        .expect("read pg_stat_activity");
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "statements of the node still running after its shutdown: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocker.execute("COMMIT").await.expect("unlock");
}

/// Another process (the outbox's migration, say, on the same schema name) creates the schema
/// while a node opens: the node's `CREATE SCHEMA` waits for that transaction, and when it
/// commits the node takes the schema as it is and opens, instead of failing on the duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_opens_while_another_process_creates_its_schema() {
    let schema = TestSchema::new();
    let mut other = schema.connect().await;
    other.execute("BEGIN").await.expect("begin");
    other
        .execute(format!("CREATE SCHEMA {}", schema.name).as_str())
        .await
        .expect("create the schema, uncommitted");
    let app = format!("courier_test_{}", schema.name);
    let url = common::url_with(&format!("application_name={app}"));
    let opening = tokio::spawn({
        let name = schema.name.clone();
        async move {
            let options = PostgresOptions::new(&url)
                .expect("valid URL")
                .schema(&name)
                .expect("valid schema name");
            PostgresEngine::open(options).await
        }
    });
    until_waiting_for_a_lock(&app, "the node's open").await;
    other.execute("COMMIT").await.expect("commit the schema");
    let engine = opening
        .await
        .expect("open task")
        .expect("the node opens on the schema the other made");
    one_round_trip(&engine, &queue("shared-schema")).await.expect("serves");
    engine.shutdown().await.expect("shutdown");
}

/// How another node's sweep makes a blocked message leave by its TTL: dead-lettered or deleted
/// (the statements of `EXPIRE_DEAD_LETTER_SQL` and `EXPIRE_DROP_SQL`, for one row).
const EXPIRE_ONE: [(&str, &str); 2] = [
    (
        "dead-letter",
        "UPDATE messages SET status = 3, dead_reason = 2, lease_id = NULL WHERE queue_id = $1 AND id = $2",
    ),
    ("drop", "DELETE FROM messages WHERE queue_id = $1 AND id = $2"),
];

/// A group's active message is acked while another node's sweep is expiring the blocked
/// message next in line (its transaction held open here by hand, so the promotion has to wait
/// for that row): when the sweep commits, the group still moves on, to the message after it,
/// and the expired one stays expired (dead-lettered, or gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_moves_on_when_the_message_next_in_line_expires_meanwhile() {
    for (expiry, expire_sql) in EXPIRE_ONE {
        let schema = TestSchema::new();
        let app = format!("courier_test_{}", schema.name);
        let engine = Arc::new(open_with_url(&schema, &common::url_with(&format!("application_name={app}"))).await);
        let q = queue("group-expiry");
        let batch = ["head", "next", "last"]
            .map(|p| NewMessage::new(p).with_ordering_group("g"))
            .to_vec();
        let ids: Vec<MessageId> = engine
            .enqueue(&q, batch)
            .await
            .expect("enqueue")
            .iter()
            .map(|e| e.id)
            .collect();
        let head = engine.try_receive(&q, &take(10)).await.expect("receive");
        assert_eq!(head.deliveries.len(), 1, "{expiry}: only the head is active");

        let mut sweep = schema.connect().await;
        sweep.execute("BEGIN").await.expect("begin");
        let queue_id: i64 = sqlx::query_scalar("SELECT id FROM queues WHERE name = 'group-expiry'")
            .fetch_one(&mut sweep)
            .await
            .expect("queue id");
        sqlx::query(expire_sql)
            .bind(queue_id)
            .bind(ids[1].0)
            .execute(&mut sweep)
            .await
            .expect("expire the next message");
        let ack = tokio::spawn({
            let (engine, q, receipt) = (engine.clone(), q.clone(), head.deliveries[0].receipt());
            async move { engine.ack(&q, &receipt).await }
        });
        until_waiting_for_a_lock(&app, &format!("{expiry}: the ack")).await;
        sweep.execute("COMMIT").await.expect("commit the sweep");
        ack.await.expect("ack task").expect("ack");

        let next = engine.try_receive(&q, &take(10)).await.expect("receive after");
        let got: Vec<MessageId> = next.deliveries.iter().map(|d| d.message.id).collect();
        assert_eq!(
            got,
            vec![ids[2]],
            "{expiry}: the group must move on to the last message"
        );
        let dead: Vec<MessageId> = engine
            .dlq_list(&q, ListOptions { after: None, limit: 10 })
            .await
            .expect("dlq")
            .items
            .iter()
            .map(|m| m.id)
            .collect();
        let expected_dead = if expiry == "dead-letter" { vec![ids[1]] } else { vec![] };
        assert_eq!(dead, expected_dead, "{expiry}: the expired message must stay expired");
    }
}

/// Receives alone on a node whose open connections went silent: the receive's lookup of the
/// queue row (when the node's cached copy has run out) is bounded like every other statement,
/// so the statement the queue's receives share ends, they fail with `Unavailable`, and the
/// node serves them again on new connections. Only receives run, so no enqueue uses up the
/// silent connections first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_alone_recover_when_the_open_connections_go_silent() {
    const OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
    let schema = TestSchema::new();
    let proxy = proxy_to_the_test_database().await;
    let node = PostgresEngine::open(through(&proxy, &schema, OPERATION_TIMEOUT).connections_max(6))
        .await
        .expect("open through the proxy");
    let q = queue("silent-receive");
    churn(&node, &q, 300).await;
    node.enqueue(&q, vec![NewMessage::new("waiting")])
        .await
        .expect("enqueue");
    // Longer than the node keeps a queue row cached, so the next receive reads it again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    proxy.blackhole();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failures = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "receives did not recover ({failures} failed)"
        );
        let received = tokio::time::timeout(Duration::from_secs(10), node.try_receive(&q, &take(1)))
            .await
            .expect("a receive hung");
        match received {
            Ok(batch) => {
                assert_eq!(batch.deliveries.len(), 1, "the waiting message is gone");
                break;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                failures += 1;
            }
        }
    }
    assert!(
        failures > 0,
        "the silent connections were never used: the test proved nothing"
    );
    proxy.stop().await;
}

/// The bulk calls (their work grows with the queue) are watched rather than bounded: while
/// the database works on them, here waiting for a lock, they may outlast the operation
/// timeout many times over and still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_calls_outlast_the_operation_timeout_while_the_database_works_on_them() {
    const OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
    const HELD: Duration = Duration::from_millis(2_500);
    let schema = TestSchema::new();
    let options = common::options(&schema, Arc::new(SystemClock)).operation_timeout(OPERATION_TIMEOUT);
    let node = Arc::new(PostgresEngine::open(options).await.expect("open"));
    let (q, counted) = (queue("bulk"), queue("bulk-counted"));
    for q in [&q, &counted] {
        let batch = (0..10).map(|i| NewMessage::new(format!("m{i}"))).collect();
        node.enqueue(q, batch).await.expect("enqueue");
    }

    let mut blocker = lock_messages(&schema, "ACCESS EXCLUSIVE").await;
    let started = Instant::now();
    let stats = tokio::spawn({
        let node = node.clone();
        async move { node.stats(&counted).await }
    });
    let purge = tokio::spawn({
        let (node, q) = (node.clone(), q.clone());
        async move { node.purge(&q).await }
    });
    tokio::time::sleep(HELD).await;
    blocker.execute("COMMIT").await.expect("unlock");
    let stats = tokio::time::timeout(Duration::from_secs(10), stats)
        .await
        .expect("the stats came back")
        .expect("stats task");
    assert_eq!(stats.expect("stats succeed").ready, 10);
    let purged = tokio::time::timeout(Duration::from_secs(10), purge)
        .await
        .expect("the purge came back")
        .expect("purge task");
    assert_eq!(purged.expect("the purge succeeds"), 10);
    assert!(started.elapsed() >= HELD, "the calls did not wait for the lock");
}

/// A bulk call whose connection goes silent while it runs (its host gone without resetting
/// the connection) fails with `Unavailable` within a few operation timeouts rather than
/// waiting for TCP to give up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_call_whose_connection_goes_silent_fails_instead_of_hanging() {
    const OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
    let schema = TestSchema::new();
    let proxy = proxy_to_the_test_database().await;
    let options = through(&proxy, &schema, OPERATION_TIMEOUT);
    let node = Arc::new(PostgresEngine::open(options).await.expect("open through the proxy"));
    let q = queue("bulk-silent");
    node.enqueue(&q, vec![NewMessage::new("m")]).await.expect("enqueue");

    // The purge waits for the lock on a connection that then goes silent: the server does
    // the work once the lock is gone, but its answer never arrives.
    let mut blocker = lock_messages(&schema, "ACCESS EXCLUSIVE").await;
    let purge = tokio::spawn({
        let (node, q) = (node.clone(), q.clone());
        async move { node.purge(&q).await }
    });
    tokio::time::sleep(OPERATION_TIMEOUT).await;
    proxy.blackhole();
    blocker.execute("COMMIT").await.expect("unlock");
    let silenced = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(15), purge)
        .await
        .expect("the purge hung on its silent connection")
        .expect("purge task")
        .expect_err("the purge's answer never arrived");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        silenced.elapsed() < OPERATION_TIMEOUT * 10,
        "the purge took {:?} to fail",
        silenced.elapsed()
    );
    proxy.stop().await;
}

/// Runs round trips on `engine` until 30 in a row succeed (at most 20 s); every failure must
/// be `Unavailable`. Returns how many failed.
async fn failures_until_recovered(engine: &PostgresEngine, q: &QueueRef) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut failures, mut in_a_row) = (0, 0);
    while in_a_row < 30 {
        assert!(
            Instant::now() < deadline,
            "the node did not recover ({failures} failed calls)"
        );
        // Bounded here too, so a call that hangs fails the test instead of stalling it.
        let attempt = tokio::time::timeout(Duration::from_secs(10), one_round_trip(engine, q)).await;
        match attempt.expect("a round trip hung") {
            Ok(()) => in_a_row += 1,
            Err((kind, e)) => {
                assert_eq!(kind, ErrorKind::Unavailable, "{e}");
                failures += 1;
                in_a_row = 0;
            }
        }
    }
    failures
}

/// A proxy in front of the test database, whose open connections a test can silence.
async fn proxy_to_the_test_database() -> courier_testkit::network::Proxy {
    let upstream = url_host_port(&common::url());
    courier_testkit::network::Proxy::start("127.0.0.1:0".parse().expect("addr"), upstream).await
}

/// Options for a node on `schema` that reaches the database through `proxy`, with a short
/// acquire timeout and `operation_timeout`.
fn through(
    proxy: &courier_testkit::network::Proxy,
    schema: &TestSchema,
    operation_timeout: Duration,
) -> PostgresOptions {
    let url = common::url().replacen(&url_host_port(&common::url()), &proxy.addr.to_string(), 1);
    PostgresOptions::new(&url)
        .expect("valid URL")
        .schema(&schema.name)
        .expect("valid schema name")
        .acquire_timeout(Duration::from_secs(1))
        .operation_timeout(operation_timeout)
}

/// `host:port` of a `postgres://user@host:port/db…` URL.
fn url_host_port(url: &str) -> String {
    let after_user = url.split_once('@').map_or(url, |(_, rest)| rest);
    after_user.split(['/', '?']).next().unwrap_or(after_user).to_owned()
}

/// Enqueues one message, receives and acks it: each a hot statement on a kept connection.
/// A failure comes back as its kind and text.
async fn one_round_trip(engine: &PostgresEngine, q: &QueueRef) -> Result<(), (ErrorKind, String)> {
    let failed = |kind: ErrorKind, e: &dyn std::fmt::Display| (kind, e.to_string());
    let enqueued = engine.enqueue(q, vec![NewMessage::new("again")]).await;
    enqueued.map_err(|e| failed(e.kind(), &e))?;
    let got = engine
        .try_receive(q, &take(10))
        .await
        .map_err(|e| failed(e.kind(), &e))?;
    let receipts: Vec<_> = got.deliveries.iter().map(|d| d.receipt()).collect();
    for acked in engine.ack_many(q, &receipts).await.map_err(|e| failed(e.kind(), &e))? {
        acked.map_err(|e| failed(e.kind(), &e))?;
    }
    Ok(())
}

/// `aggregate` over the backends analyzing or vacuuming this schema's `messages` table.
async fn maintenance_running(conn: &mut sqlx::PgConnection, aggregate: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT {aggregate} FROM (SELECT pid FROM pg_stat_progress_vacuum WHERE relid = 'messages'::regclass \
         UNION SELECT pid FROM pg_stat_progress_analyze WHERE relid = 'messages'::regclass) AS running"
    ))
    .fetch_one(conn)
    .await
    .expect("read maintenance progress")
}

/// Enqueues `n` messages, then receives and acks them all.
async fn churn(engine: &PostgresEngine, q: &QueueRef, n: usize) {
    for chunk in 0..n.div_ceil(500) {
        let batch = (0..500.min(n - chunk * 500))
            .map(|i| NewMessage::new(format!("{chunk}-{i}")))
            .collect();
        engine.enqueue(q, batch).await.expect("enqueue");
    }
    let mut settled = 0;
    while settled < n {
        let got = engine.try_receive(q, &take(100)).await.expect("receive");
        let receipts: Vec<_> = got.deliveries.iter().map(|d| d.receipt()).collect();
        for acked in engine.ack_many(q, &receipts).await.expect("ack") {
            acked.expect("a fresh lease is acked");
        }
        settled += receipts.len();
    }
}

/// A node's cached queue row goes stale when another node deletes the queue: the next
/// enqueue on the first node notices (its insert finds no queue row), creates the queue
/// anew and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_after_another_node_deleted_the_queue_recreates_it() {
    let schema = TestSchema::new();
    let (a, b) = two_nodes(&schema, Arc::new(SystemClock)).await;
    let q = queue("recreated");
    a.enqueue(&q, vec![NewMessage::new("before")]).await.expect("enqueue");
    b.delete_queue(&q).await.expect("delete on the other node");
    let id = a.enqueue(&q, vec![NewMessage::new("after")]).await.expect("enqueue")[0].id;
    let got = b.try_receive(&q, &take(10)).await.expect("receive").deliveries;
    assert_eq!(got.len(), 1, "only the message enqueued after the delete");
    assert_eq!(got[0].message.id, id);
    assert_eq!(got[0].message.payload.as_ref(), b"after");
}

/// Has `b` sweep `q` (a receive), then `a` lease a new message for 100 ms: a lease `b` has
/// not seen. Returns that delivery and the receive options with the short lease.
async fn lease_briefly_after_a_sweep(
    a: &PostgresEngine,
    b: &PostgresEngine,
    q: &QueueRef,
) -> (Vec<courier_core::Delivery>, ReceiveOptions) {
    a.enqueue(q, vec![NewMessage::new("warm-up")]).await.expect("enqueue");
    let warm = b.try_receive(q, &take(1)).await.expect("receive").deliveries;
    b.ack(q, &warm[0].receipt()).await.expect("ack");
    a.enqueue(q, vec![NewMessage::new("m")]).await.expect("enqueue");
    let short = ReceiveOptions {
        lease: Some(Duration::from_millis(100)),
        ..take(1)
    };
    let first = a.try_receive(q, &short).await.expect("receive").deliveries;
    assert_eq!(first.len(), 1);
    (first, short)
}

/// Leases taken on another node after this node's last sweep come back here no later than
/// the sweep interval after they lapse; leases this node knows of come back on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lapsed_on_another_node_comes_back_within_the_sweep_interval() {
    const SWEEP_INTERVAL_MS: u64 = 250;
    let schema = TestSchema::new();
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let (a, b) = two_nodes(&schema, clock.clone()).await;
    let q = queue("lapsed");
    let (first, short) = lease_briefly_after_a_sweep(&a, &b, &q).await;
    clock.advance(Duration::from_millis(SWEEP_INTERVAL_MS));
    let again = b.try_receive(&q, &take(1)).await.expect("receive").deliveries;
    assert_eq!(again.len(), 1, "lapsed 150 ms ago, taken again on the other node");
    assert_eq!(again[0].message.id, first[0].message.id);
    assert_eq!(again[0].lease.attempt, 2);
    // A's own lease on a message it receives is tracked exactly: due 100 ms later, back then.
    a.enqueue(&q, vec![NewMessage::new("n")]).await.expect("enqueue");
    let own = a.try_receive(&q, &short).await.expect("receive").deliveries;
    assert_eq!(own.len(), 1);
    clock.advance(Duration::from_millis(100));
    let back = a.try_receive(&q, &take(1)).await.expect("receive").deliveries;
    assert_eq!(back.len(), 1, "this node's own lease comes back the moment it lapses");
    assert_eq!(back[0].message.id, own[0].message.id);
}

/// A policy changed on one node reaches the enqueues and receives of another within the
/// cache's freshness bound (one second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_set_on_another_node_applies_within_a_second() {
    let schema = TestSchema::new();
    let (a, b) = two_nodes(&schema, Arc::new(SystemClock)).await;
    let q = queue("policy");
    a.enqueue(&q, vec![NewMessage::new("warm-up")]).await.expect("enqueue");
    let policy = QueuePolicy {
        max_attempts: 2,
        ..QueuePolicy::default()
    };
    b.set_policy(&q, policy).await.expect("set policy on the other node");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let id = a.enqueue(&q, vec![NewMessage::new("m")]).await.expect("enqueue")[0].id;
    let info = b.get_message(&q, id).await.expect("get");
    assert_eq!(info.max_attempts, 2, "the new policy's default applies");
}

/// A node whose cached queue id went stale (the queue deleted and recreated on another node)
/// still accepts a valid ack: a refusal is always decided on the queue row read afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_through_a_stale_queue_id_is_still_accepted() {
    let schema = TestSchema::new();
    let (a, b) = two_nodes(&schema, Arc::new(SystemClock)).await;
    let q = queue("stale-id");
    a.enqueue(&q, vec![NewMessage::new("old")]).await.expect("enqueue");
    let old = a.try_receive(&q, &take(1)).await.expect("receive").deliveries;
    assert_eq!(old.len(), 1, "node A has the queue row cached now");
    b.delete_queue(&q).await.expect("delete on B");
    b.enqueue(&q, vec![NewMessage::new("new")]).await.expect("enqueue on B");
    let new = b.try_receive(&q, &take(1)).await.expect("receive on B").deliveries;
    assert_eq!(new.len(), 1);
    a.ack(&q, &new[0].receipt())
        .await
        .expect("a valid lease is accepted on A despite its stale cache");
    assert_eq!(b.stats(&q).await.expect("stats").in_flight, 0);
}

/// A receiver long-polling on one node gets a message whose short lease, taken on another
/// node after this node's last sweep, lapsed: within the sweep interval, not at the ~2 s
/// recheck (it waits for the sweep that will reclaim the lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_gets_a_lease_lapsed_on_another_node_within_the_sweep_interval() {
    let schema = TestSchema::new();
    let (a, b) = two_nodes(&schema, Arc::new(SystemClock)).await;
    let q = queue("lapse-wait");
    let (first, _) = lease_briefly_after_a_sweep(&a, &b, &q).await;
    let started = Instant::now();
    let waiting = ReceiveOptions {
        wait: Duration::from_secs(5),
        ..take(1)
    };
    let got = b.receive(&q, &waiting).await.expect("long poll").deliveries;
    assert_eq!(got.len(), 1, "the lapsed message came back");
    assert_eq!(got[0].message.id, first[0].message.id);
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "back within the lease and the sweep interval, took {:?}",
        started.elapsed()
    );
}

/// A connection holding the messages table locked in `mode` until it commits: in ACCESS
/// EXCLUSIVE mode every statement on the table waits for it.
async fn lock_messages(schema: &TestSchema, mode: &str) -> sqlx::PgConnection {
    let mut blocker = schema.connect().await;
    blocker.execute("BEGIN").await.expect("begin");
    blocker
        .execute(format!("LOCK TABLE messages IN {mode} MODE").as_str())
        .await
        .expect("lock");
    blocker
}

/// Concurrent receives share a statement; a receiver that goes away while that statement runs
/// (an HTTP client that disconnected) does not leave its messages leased to no one until the
/// lease runs out: they are ready again at once, with no attempt counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_leased_for_a_receiver_that_left_are_given_back_at_once() {
    let schema = TestSchema::new();
    let engine = Arc::new(common::open(&schema, Arc::new(SystemClock)).await);
    let q = queue("left");
    let id = engine.enqueue(&q, vec![NewMessage::new("m")]).await.expect("enqueue")[0].id;
    let younger = engine
        .enqueue(&q, vec![NewMessage::new("younger")])
        .await
        .expect("enqueue")[0]
        .id;

    // Hold the receive's statement (or the sweep before it) until the receiver has left.
    let mut blocker = lock_messages(&schema, "ACCESS EXCLUSIVE").await;
    let receiver = {
        let (engine, q) = (engine.clone(), q.clone());
        tokio::spawn(async move { engine.try_receive(&q, &take(1)).await })
    };
    let mut watcher = schema.connect().await;
    let waiting_since = Instant::now();
    loop {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'messages'::regclass")
                .fetch_one(&mut watcher)
                .await
                .expect("pg_locks");
        if waiting > 0 {
            break;
        }
        assert!(
            waiting_since.elapsed() < Duration::from_secs(10),
            "the receive never reached the table"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiver.abort();
    assert!(receiver.await.expect_err("aborted").is_cancelled());
    blocker.execute("COMMIT").await.expect("commit");
    // The statement goes on without its receiver and leases the message.
    while engine.get_message(&q, id).await.expect("get").deliveries == 0 {
        assert!(
            waiting_since.elapsed() < Duration::from_secs(10),
            "the held receive never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The lease has committed; the release follows on a task of its own.
    let back_by = Instant::now() + Duration::from_secs(5);
    while engine.get_message(&q, id).await.expect("get").status != MessageStatus::Ready {
        assert!(Instant::now() < back_by, "still leased to the receiver that left");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let again = engine
        .try_receive(&q, &take(1))
        .await
        .expect("receive")
        .deliveries
        .into_iter()
        .next()
        .expect("ready again");
    assert_eq!(
        again.message.id, id,
        "given back in its place, ahead of a younger message"
    );
    assert_eq!(again.lease.attempt, 1, "giving it back counted no attempt");
    assert_eq!(again.message.deliveries, 2, "it was delivered once, to no one");
    assert_eq!(
        again.lease.fencing_token,
        FencingToken(2),
        "the fencing token still only grows"
    );
    let next = engine.try_receive(&q, &take(1)).await.expect("receive").deliveries;
    assert_eq!(next.iter().map(|d| d.message.id).collect::<Vec<_>>(), vec![younger]);
}

/// Receivers that queue up behind a running receive share the next statement: its rows are
/// dealt in pick order, each receiver taking up to what it asked for, the earliest first; one
/// left with nothing is told when something next falls due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_receivers_are_dealt_the_oldest_first() {
    let schema = TestSchema::new();
    let engine = Arc::new(common::open(&schema, Arc::new(SystemClock)).await);
    let q = queue("dealt");
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(
            engine
                .enqueue(&q, vec![NewMessage::new(format!("m{n}"))])
                .await
                .expect("enqueue")[0]
                .id,
        );
    }
    let mut blocker = lock_messages(&schema, "ACCESS EXCLUSIVE").await;
    // The first receive runs alone and waits on the lock; the next three queue behind it, in
    // this order, and share one statement.
    let mut receivers = Vec::new();
    for wants in [1, 2, 3, 1] {
        let (engine, q) = (engine.clone(), q.clone());
        receivers.push(tokio::spawn(async move { engine.try_receive(&q, &take(wants)).await }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocker.execute("COMMIT").await.expect("commit");
    let mut got = Vec::new();
    for receiver in receivers {
        got.push(receiver.await.expect("receiver").expect("receive"));
    }
    let dealt: Vec<Vec<_>> = got
        .iter()
        .map(|b| b.deliveries.iter().map(|d| d.message.id).collect())
        .collect();
    assert_eq!(
        dealt,
        vec![vec![ids[0]], vec![ids[1], ids[2]], vec![ids[3]], vec![]],
        "oldest first, each up to what it asked for"
    );
    let first_deadline = got[0].deliveries[0].lease.deadline;
    assert_eq!(
        got[3].next_due,
        Some(first_deadline),
        "the empty-handed one learns when a lease ends"
    );
    assert!(got[..3].iter().all(|b| b.next_due.is_none()));
}
