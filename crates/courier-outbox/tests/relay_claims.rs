//! The relay's claims, each scenario run on PostgreSQL (a fresh schema) and on SQLite (a fresh
//! file): a committed write is published once and a rolled-back one never; relays share a table
//! without publishing a message twice or a key out of order; while one relay holds a key another
//! takes none of its rows; a dead relay's claims lapse and are taken over, and a relay whose
//! claim was taken over settles nothing; claims are renewed while a slow batch publishes; rows
//! held back behind a failed key do not starve other keys; a commit wakes the relay at once.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    assert_once_in_key_order, fast_options, manual_clock, messages, wait_until, Backend, Db, Running, TestPublisher,
};
use courier_core::{PublishError, SystemClock};
use courier_outbox::{OutboxMessage, StatusCounts};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

on_both_databases!(
    committed_write_is_published_once_and_rolled_back_write_never,
    two_relays_publish_every_message_once_in_key_order,
    dead_relays_claims_lapse_and_another_relay_finishes,
    while_one_relay_holds_a_key_another_takes_none_of_its_rows,
    relay_whose_claim_was_taken_over_settles_nothing_even_under_the_same_id,
    rows_held_back_behind_a_failed_key_do_not_starve_other_keys,
    claims_are_renewed_while_a_slow_batch_publishes,
    a_batch_claimed_ahead_is_renewed_while_it_waits,
    commit_wakes_the_relay_long_before_its_poll,
);

async fn committed_write_is_published_once_and_rolled_back_write_never(backend: Backend) {
    let db = Db::open(backend, Arc::new(SystemClock)).await;
    let publisher = TestPublisher::new();
    let relay = Running::start(db.relay(publisher.clone(), fast_options("r")));
    db.write_rolled_back(&[OutboxMessage::new("orders", "never")]).await;
    let message = OutboxMessage::new("orders", "once")
        .with_key("order-1")
        .with_header("tenant", "acme")
        .with_content_type("text/plain");
    let ids = db.write(std::slice::from_ref(&message)).await;
    wait_until("the committed message", WAIT, || async {
        !publisher.published().is_empty()
    })
    .await;
    // Several more polls: nothing else may arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay.stop().await;

    let published = publisher.published();
    assert_eq!(published.len(), 1, "{published:?}");
    let got = &published[0];
    assert_eq!(got.id, ids[0]);
    assert_eq!(got.destination, "orders");
    assert_eq!(got.key.as_deref(), Some("order-1"));
    assert_eq!(&got.payload[..], b"once");
    assert_eq!(got.headers.get("tenant").map(String::as_str), Some("acme"));
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    // Retention defaults to deleting on publish.
    assert_eq!(db.counts().await, StatusCounts::default());
}

async fn two_relays_publish_every_message_once_in_key_order(backend: Backend) {
    let db = Db::open(backend, Arc::new(SystemClock)).await;
    let sink = Arc::new(Mutex::new(Vec::new()));
    let (pa, pb) = (
        TestPublisher::with_sink(sink.clone()),
        TestPublisher::with_sink(sink.clone()),
    );
    // Slow enough per batch that the relays keep overlapping once both are going.
    pa.set_delay(Duration::from_millis(3));
    pb.set_delay(Duration::from_millis(3));
    // Closed until each relay holds a batch: otherwise one relay can win every claim (on a
    // loaded machine it may clear each write before the other looks), and the test would not
    // show two relays sharing the work.
    pa.set_gate(false);
    pb.set_gate(false);
    let a = Running::start(db.relay(pa.clone(), fast_options("a").batch_size(25)));
    let b = Running::start(db.relay(pb.clone(), fast_options("b").batch_size(25)));
    let mut written = Vec::new();
    for _ in 0..20 {
        // Every fifth message unkeyed, the rest on 8 keys (key-0 and key-5 fall on the fifths).
        let batch: Vec<OutboxMessage> = messages(50, 10)
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                if i % 5 == 0 {
                    OutboxMessage { key: None, ..m }
                } else {
                    m
                }
            })
            .collect();
        written.extend(db.write(&batch).await);
    }
    wait_until("each relay to hold a batch", WAIT, || async {
        pa.calls() >= 1 && pb.calls() >= 1
    })
    .await;
    pa.set_gate(true);
    pb.set_gate(true);
    wait_until("all 1000 messages", Duration::from_secs(30), || async {
        sink.lock().map(|s| s.len()).unwrap_or(0) >= written.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.stop().await;
    b.stop().await;

    let published = sink.lock().map(|s| s.clone()).unwrap_or_default();
    assert_once_in_key_order(&written, &published);
    let (by_a, by_b) = (pa.published().len(), pb.published().len());
    assert!(
        by_a > 0 && by_b > 0,
        "both relays should have worked: a published {by_a}, b {by_b}"
    );
    assert_eq!(db.counts().await, StatusCounts::default());
}

/// How many of `ids` are claimed by a relay built with id `relay` (`claimed_by` is the id,
/// `#` and a per-relay nonce).
async fn held_by(db: &Db, ids: &[Uuid], relay: &str) -> usize {
    let prefix = format!("{relay}#");
    let mut held = 0;
    for id in ids {
        if db
            .row(*id)
            .await
            .and_then(|r| r.claimed_by)
            .is_some_and(|c| c.starts_with(&prefix))
        {
            held += 1;
        }
    }
    held
}

async fn dead_relays_claims_lapse_and_another_relay_finishes(backend: Backend) {
    let clock = manual_clock();
    let db = Db::open(backend, clock.clone()).await;
    let written = db.write(&messages(20, 3)).await;
    let stuck = TestPublisher::new();
    stuck.set_gate(false);
    let options = |id: &str| fast_options(id).claim_duration(Duration::from_secs(5)).batch_size(10);
    let doomed = Running::start(db.relay(stuck.clone(), options("doomed")));
    // It publishes its first batch and never returns. It cannot claim ahead: every other row
    // belongs to a key whose earlier rows it holds.
    wait_until("the doomed relay to claim a batch", WAIT, || async {
        let claimed = held_by(&db, &written, "doomed").await;
        stuck.calls() == 1 && claimed == 10
    })
    .await;
    doomed.kill();

    let heir = TestPublisher::new();
    let successor = Running::start(db.relay(heir.clone(), options("heir")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        heir.published().is_empty(),
        "claims were still valid and hold back their keys"
    );
    clock.advance(Duration::from_secs(6));
    wait_until("the heir to publish everything", WAIT, || async {
        heir.published().len() == written.len()
    })
    .await;
    successor.stop().await;

    assert_once_in_key_order(&written, &heir.published());
    assert!(stuck.published().is_empty());
    assert_eq!(db.counts().await, StatusCounts::default());
}

async fn while_one_relay_holds_a_key_another_takes_none_of_its_rows(backend: Backend) {
    let clock = manual_clock();
    let db = Db::open(backend, clock.clone()).await;
    let ids = db
        .write(&[
            OutboxMessage::new("orders", "k1").with_key("k"),
            OutboxMessage::new("orders", "k2").with_key("k"),
            OutboxMessage::new("orders", "o1").with_key("other"),
        ])
        .await;
    let slow = TestPublisher::new();
    slow.set_gate(false);
    // A batch of one: relay A holds k1 alone, k2 stays unclaimed behind it.
    let a = Running::start(db.relay(slow.clone(), fast_options("a").batch_size(1)));
    wait_until("A to publish k1", WAIT, || async { slow.calls() == 1 }).await;
    let holder = db.row(ids[0]).await.and_then(|r| r.claimed_by);
    assert!(holder.as_deref().is_some_and(|c| c.starts_with("a#")), "{holder:?}");
    let other = TestPublisher::new();
    let b = db.relay(other.clone(), fast_options("b"));
    assert_eq!(b.pump().await.expect("pump"), 1, "B takes only the other key");
    assert_eq!(b.pump().await.expect("pump"), 0, "k2 waits for k1, whoever holds it");
    assert_eq!(other.published_ids(), vec![ids[2]]);
    assert_eq!(db.row(ids[1]).await.and_then(|r| r.claimed_by), None);
    slow.set_gate(true);
    wait_until("A to publish k2 after k1", WAIT, || async {
        slow.published().len() == 2
    })
    .await;
    a.stop().await;
    assert_eq!(slow.published_ids(), vec![ids[0], ids[1]]);
}

/// Both relays are started with the same id, as two replicas of one deployment would be: the
/// nonce in `claimed_by` still keeps A from settling the claim B took over.
async fn relay_whose_claim_was_taken_over_settles_nothing_even_under_the_same_id(backend: Backend) {
    let clock = manual_clock();
    let db = Db::open(backend, clock.clone()).await;
    let id = db.write(&[OutboxMessage::new("orders", "x")]).await[0];
    // A 30 s claim is renewed every 10 s of real time, so A does not renew during the test.
    let options = || fast_options("replica").claim_duration(Duration::from_secs(30));
    // A stalls while publishing; its claim lapses; B takes the row over and stalls too.
    let stalled = TestPublisher::new();
    stalled.set_gate(false);
    let a = Running::start(db.relay(stalled.clone(), options()));
    wait_until("A to publish", WAIT, || async { stalled.calls() == 1 }).await;
    clock.advance(Duration::from_secs(31));
    let heir = TestPublisher::new();
    heir.set_gate(false);
    let b_relay = db.relay(heir.clone(), options());
    let b_claimer = b_relay.claimer().to_owned();
    assert!(b_claimer.starts_with("replica#"), "{b_claimer}");
    let b = Running::start(b_relay);
    wait_until("B to take the row over", WAIT, || async {
        db.row(id).await.and_then(|r| r.claimed_by).as_deref() == Some(b_claimer.as_str())
    })
    .await;
    // A wakes up and fails: its settle must not touch B's claim or count an attempt.
    stalled.set_down(true);
    stalled.set_gate(true);
    a.stop().await;
    let row = db.row(id).await.expect("row");
    assert_eq!(
        (row.claimed_by.as_deref(), row.attempts),
        (Some(b_claimer.as_str()), 0),
        "{row:?}"
    );
    heir.set_gate(true);
    wait_until("B to publish", WAIT, || async { heir.published().len() == 1 }).await;
    b.stop().await;
    assert_eq!(db.row(id).await, None);
}

async fn rows_held_back_behind_a_failed_key_do_not_starve_other_keys(backend: Backend) {
    let clock = manual_clock();
    let db = Db::open(backend, clock.clone()).await;
    let publisher = TestPublisher::new();
    // A batch of 2 looks at the first 4 due keyed rows for heads: all of them will be rows
    // held back behind key "stuck"'s failed head, so other keys are only found by the walk
    // over the keys.
    let relay = db.relay(publisher.clone(), fast_options("s").batch_size(2).max_attempts(1));
    let stuck_head = db.write(&[OutboxMessage::new("orders", "s0").with_key("stuck")]).await[0];
    publisher.fail_id(stuck_head, PublishError::Rejected("poison".into()));
    assert_eq!(relay.pump().await.expect("pump"), 1);
    assert_eq!(db.row(stuck_head).await.map(|r| r.status), Some("failed".to_owned()));
    let stuck: Vec<OutboxMessage> = (1..=10)
        .map(|i| OutboxMessage::new("orders", format!("s{i}")).with_key("stuck"))
        .collect();
    db.write(&stuck).await;
    let free = db.write(&messages(3, 1)).await;
    while relay.pump().await.expect("pump") > 0 {}
    assert_eq!(
        publisher.published_ids(),
        free,
        "key-0 is published though 10 held-back rows come first"
    );
    assert_eq!(
        db.counts().await,
        StatusCounts {
            pending: 10,
            published: 0,
            failed: 1
        }
    );
}

async fn claims_are_renewed_while_a_slow_batch_publishes(backend: Backend) {
    let db = Db::open(backend, Arc::new(SystemClock)).await;
    let slow = TestPublisher::new();
    // As in the test below: a publish much slower than a claim, with room for a loaded machine.
    slow.set_delay(Duration::from_millis(2500));
    let options = |id: &str| fast_options(id).claim_duration(Duration::from_millis(1000));
    let first = Running::start(db.relay(slow.clone(), options("slow")));
    let written = db.write(&messages(3, 1)).await;
    wait_until("the slow relay to start publishing", WAIT, || async {
        slow.calls() == 1
    })
    .await;
    let other = TestPublisher::new();
    let second = Running::start(db.relay(other.clone(), options("eager")));
    wait_until("the slow batch", WAIT, || async { slow.published().len() == 3 }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.stop().await;
    second.stop().await;
    assert!(
        other.published().is_empty(),
        "the claim lapsed and was taken over: {:?}",
        other.published()
    );
    assert_once_in_key_order(&written, &slow.published());
}

/// A full unkeyed batch makes the relay claim the next one while it publishes; with a publish
/// slower than a claim lasts, that waiting batch must stay claimed too, or another relay takes
/// it over and both publish it.
async fn a_batch_claimed_ahead_is_renewed_while_it_waits(backend: Backend) {
    let db = Db::open(backend, Arc::new(SystemClock)).await;
    let written = db.write(&messages(4, 0)).await;
    let slow = TestPublisher::new();
    // Claims last 1 s and are renewed every third of that; each publish takes 2.5 s. A claim
    // lapses only if renewals stall for two thirds of a second, which a loaded two-core test
    // machine did do with claims of 300 ms.
    slow.set_delay(Duration::from_millis(2500));
    let options = |id: &str| {
        fast_options(id)
            .claim_duration(Duration::from_millis(1000))
            .batch_size(2)
    };
    let first = Running::start(db.relay(slow.clone(), options("slow")));
    // Publishing the first batch and holding the second, claimed ahead: only then may the
    // other relay look (before, it could simply claim the second batch first).
    wait_until(
        "the slow relay to publish one batch and hold the next",
        WAIT,
        || async {
            let held = held_by(&db, &written, "slow").await;
            slow.calls() == 1 && held == written.len()
        },
    )
    .await;
    let other = TestPublisher::new();
    let second = Running::start(db.relay(other.clone(), options("eager")));
    wait_until("both slow batches", WAIT, || async { slow.published().len() == 4 }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.stop().await;
    second.stop().await;
    assert!(
        other.published().is_empty(),
        "the batch claimed ahead lapsed and was taken over: {:?}",
        other.published()
    );
    assert_once_in_key_order(&written, &slow.published());
}

async fn commit_wakes_the_relay_long_before_its_poll(backend: Backend) {
    let db = Db::open(backend, Arc::new(SystemClock)).await;
    let publisher = TestPublisher::new();
    let relay = Running::start(db.relay(
        publisher.clone(),
        fast_options("w").poll_interval(Duration::from_secs(10)),
    ));
    // Let the relay make its first look and go to sleep until woken.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    db.write(&messages(1, 0)).await;
    wait_until("the woken relay", Duration::from_secs(5), || async {
        publisher.published().len() == 1
    })
    .await;
    let took = started.elapsed();
    relay.stop().await;
    assert!(took < Duration::from_secs(2), "took {took:?} with a 10 s poll");
}
