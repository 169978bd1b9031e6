//! The relay's promises, each scenario run on PostgreSQL (a fresh schema) and on SQLite (a
//! fresh file): a committed write is published once and a rolled-back one never; relays share a
//! table without publishing a message twice or a key out of order; a dead relay's claims lapse
//! and are taken over; failures are retried per message with growing backoff, then marked
//! failed, listed and retried; claims are renewed while a slow batch publishes; retention and
//! graceful shutdown; a commit wakes the relay long before its poll.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    assert_once_in_key_order, fast_options, manual_clock, messages, now_ms, wait_until, Backend, Db, Running,
    TestPublisher,
};
use courier_core::{PublishError, SystemClock};
use courier_outbox::{OutboxMessage, PageRequest, Retention, StatusCounts};

const WAIT: Duration = Duration::from_secs(10);

on_both_databases!(
    committed_write_is_published_once_and_rolled_back_write_never,
    two_relays_publish_every_message_once_in_key_order,
    dead_relays_claims_lapse_and_another_relay_finishes,
    publisher_down_keeps_messages_pending_with_growing_backoff_until_it_is_back,
    only_the_failed_messages_of_a_batch_are_retried,
    max_attempts_marks_failed_holds_back_the_key_and_retry_resumes,
    rows_held_back_behind_a_failed_key_do_not_starve_other_keys,
    claims_are_renewed_while_a_slow_batch_publishes,
    retention_deletes_only_old_published_rows,
    graceful_shutdown_finishes_the_batch_in_flight,
    shutdown_grace_over_releases_the_claims,
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
    // Slow enough per batch that both relays hold batches at the same time.
    pa.set_delay(Duration::from_millis(3));
    pb.set_delay(Duration::from_millis(3));
    let a = Running::start(db.relay(pa.clone(), fast_options("a").batch_size(25)));
    let b = Running::start(db.relay(pb.clone(), fast_options("b").batch_size(25)));
    let mut written = Vec::new();
    for _ in 0..20 {
        // 10 keys, and every fifth message unkeyed.
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
    wait_until("all 1000 messages", Duration::from_secs(30), || async {
        sink.lock().map(|s| s.len()).unwrap_or(0) >= written.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.stop().await;
    b.stop().await;

    let published = sink.lock().map(|s| s.clone()).unwrap_or_default();
    assert_once_in_key_order(&written, &published);
    assert!(
        !pa.published().is_empty() && !pb.published().is_empty(),
        "both relays should have worked"
    );
    assert_eq!(db.counts().await, StatusCounts::default());
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
        let mut claimed = 0;
        for id in &written {
            if db.row(*id).await.and_then(|r| r.claimed_by).as_deref() == Some("doomed") {
                claimed += 1;
            }
        }
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

async fn publisher_down_keeps_messages_pending_with_growing_backoff_until_it_is_back(backend: Backend) {
    let clock = manual_clock();
    let db = Db::open(backend, clock.clone()).await;
    let publisher = TestPublisher::new();
    publisher.set_down(true);
    let written = db
        .write(&[
            OutboxMessage::new("orders", "a1").with_key("a"),
            OutboxMessage::new("orders", "a2").with_key("a"),
            OutboxMessage::new("orders", "u"),
        ])
        .await;
    let relay = Running::start(db.relay(publisher.clone(), fast_options("r").max_attempts(100)));
    for attempt in 1..=4i64 {
        wait_until("the next attempt", WAIT, || async {
            let first = db.row(written[0]).await.map(|r| r.attempts);
            let unkeyed = db.row(written[2]).await.map(|r| r.attempts);
            first == Some(attempt) && unkeyed == Some(attempt)
        })
        .await;
        let head = db.row(written[0]).await.expect("row");
        assert_eq!(head.status, "pending");
        assert!(
            head.last_error
                .as_deref()
                .is_some_and(|e| e.contains("destination down")),
            "{head:?}"
        );
        // Backoff: base 1 s doubling to 8 s, each wait between half and all of its step.
        let step = (1000i64 << (attempt - 1)).min(8000);
        let wait = head.next_attempt_at - now_ms(clock.as_ref());
        assert!(
            (step / 2..=step).contains(&wait),
            "attempt {attempt}: waits {wait} ms, step {step} ms"
        );
        // The key's second message is never attempted while the first fails.
        assert_eq!(db.row(written[1]).await.map(|r| r.attempts), Some(0));
        clock.advance(Duration::from_secs(8));
    }
    assert!(publisher.published().is_empty());
    publisher.heal();
    clock.advance(Duration::from_secs(8));
    wait_until("everything once the destination is back", WAIT, || async {
        publisher.published().len() == 3
    })
    .await;
    relay.stop().await;
    assert_once_in_key_order(&written, &publisher.published());
    assert_eq!(db.counts().await, StatusCounts::default());
}

async fn only_the_failed_messages_of_a_batch_are_retried(backend: Backend) {
    let clock = manual_clock();
    let db = Db::open(backend, clock.clone()).await;
    let publisher = TestPublisher::new();
    let written = db.write(&messages(10, 0)).await;
    publisher.fail_id(written[3], PublishError::Unavailable("timeout".into()));
    publisher.fail_id(written[7], PublishError::Rejected("no such stream".into()));
    let relay = db.relay(publisher.clone(), fast_options("p").batch_size(100));

    assert_eq!(relay.pump().await.expect("pump"), 10);
    let mut expected: Vec<_> = written
        .iter()
        .copied()
        .filter(|id| *id != written[3] && *id != written[7])
        .collect();
    assert_eq!(publisher.published_ids(), expected);
    for (index, error) in [(3, "timeout"), (7, "no such stream")] {
        let row = db.row(written[index]).await.expect("failed row stays");
        assert_eq!((row.status.as_str(), row.attempts), ("pending", 1));
        assert!(row.last_error.as_deref().is_some_and(|e| e.contains(error)), "{row:?}");
        assert_eq!(row.claimed_by, None);
    }
    assert_eq!(db.row(written[0]).await, None, "published rows are deleted");
    // Not due yet: backing off.
    assert_eq!(relay.pump().await.expect("pump"), 0);

    publisher.heal();
    clock.advance(Duration::from_secs(8));
    assert_eq!(relay.pump().await.expect("pump"), 2);
    expected.extend([written[3], written[7]]);
    assert_eq!(publisher.published_ids(), expected, "each published exactly once");
    assert_eq!(db.counts().await, StatusCounts::default());
}

async fn max_attempts_marks_failed_holds_back_the_key_and_retry_resumes(backend: Backend) {
    let clock = manual_clock();
    let db = Db::open(backend, clock.clone()).await;
    let publisher = TestPublisher::new();
    let ids = db
        .write(&[
            OutboxMessage::new("orders", "a1").with_key("a"),
            OutboxMessage::new("orders", "u1"),
            OutboxMessage::new("orders", "a2").with_key("a"),
            OutboxMessage::new("orders", "b1").with_key("b"),
            OutboxMessage::new("orders", "u2"),
        ])
        .await;
    let (a1, u1, a2, b1, u2) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    for id in [a1, u1, u2] {
        publisher.fail_id(id, PublishError::Rejected("bad subject".into()));
    }
    let relay = db.relay(publisher.clone(), fast_options("m").max_attempts(3));
    for _ in 0..3 {
        relay.pump().await.expect("pump");
        clock.advance(Duration::from_secs(8));
    }
    for id in [a1, u1, u2] {
        let row = db.row(id).await.expect("row");
        assert_eq!((row.status.as_str(), row.attempts), ("failed", 3), "{row:?}");
        assert!(row.last_error.as_deref().is_some_and(|e| e.contains("bad subject")));
    }
    assert_eq!(publisher.published_ids(), vec![b1], "key b is not held back by key a");
    let held = db.row(a2).await.expect("row");
    assert_eq!((held.status.as_str(), held.attempts), ("pending", 0));
    assert_eq!(relay.pump().await.expect("pump"), 0, "a2 waits behind failed a1");

    let first = db.list_failed(PageRequest::first(2)).await;
    assert_eq!(first.messages.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a1, u1]);
    assert_eq!(first.messages[0].attempts, 3);
    assert_eq!(first.messages[0].key.as_deref(), Some("a"));
    let next = first.next_after.expect("a second page");
    let second = db.list_failed(PageRequest::after(next, 2)).await;
    assert_eq!(second.messages.iter().map(|m| m.id).collect::<Vec<_>>(), vec![u2]);
    assert_eq!(second.next_after, None);

    publisher.heal();
    assert_eq!(db.retry_failed(&[a1, b1]).await, 1, "only failed rows are retried");
    let retried = db.row(a1).await.expect("row");
    assert_eq!((retried.status.as_str(), retried.attempts), ("pending", 0));
    assert_eq!(relay.pump().await.expect("pump"), 2, "a1 and a2 together");
    assert_eq!(db.retry_all_failed().await, 2);
    assert_eq!(relay.pump().await.expect("pump"), 2);
    assert_eq!(publisher.published_ids(), vec![b1, a1, a2, u1, u2]);
    assert_eq!(db.counts().await, StatusCounts::default());
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
    slow.set_delay(Duration::from_millis(1200));
    let options = |id: &str| fast_options(id).claim_duration(Duration::from_millis(300));
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

async fn retention_deletes_only_old_published_rows(backend: Backend) {
    let clock = manual_clock();
    let db = Db::open(backend, clock.clone()).await;
    let publisher = TestPublisher::new();
    let options = fast_options("keeper")
        .retention(Retention::KeepFor(Duration::from_secs(3600)))
        .cleanup_interval(Duration::from_millis(30))
        .max_attempts(1);
    let relay = Running::start(db.relay(publisher.clone(), options));
    let old = db.write(&messages(3, 0)).await;
    publisher.fail_id(old[2], PublishError::Rejected("refused".into()));
    wait_until("old rows published or failed", WAIT, || async {
        db.counts().await
            == StatusCounts {
                pending: 0,
                published: 2,
                failed: 1,
            }
    })
    .await;
    clock.advance(Duration::from_secs(40 * 60));
    let new = db.write(&messages(1, 0)).await;
    wait_until("the new row published", WAIT, || async {
        db.counts().await.published == 3
    })
    .await;
    clock.advance(Duration::from_secs(30 * 60));
    wait_until("the cleanup to delete the old published rows", WAIT, || async {
        db.counts().await.published == 1
    })
    .await;
    relay.stop().await;
    assert_eq!(db.row(old[0]).await, None);
    assert_eq!(db.row(new[0]).await.map(|r| r.status), Some("published".to_owned()));
    assert_eq!(
        db.row(old[2]).await.map(|r| r.status),
        Some("failed".to_owned()),
        "failed rows are kept"
    );
}

async fn graceful_shutdown_finishes_the_batch_in_flight(backend: Backend) {
    let db = Db::open(backend, Arc::new(SystemClock)).await;
    let publisher = TestPublisher::new();
    publisher.set_gate(false);
    let relay = Running::start(db.relay(publisher.clone(), fast_options("g")));
    let written = db.write(&messages(3, 1)).await;
    wait_until("the publish to start", WAIT, || async { publisher.calls() == 1 }).await;
    let stopping = tokio::spawn(relay.stop());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!stopping.is_finished(), "shutdown waits for the batch in flight");
    publisher.set_gate(true);
    stopping.await.expect("stopped");
    assert_once_in_key_order(&written, &publisher.published());
    assert_eq!(
        db.counts().await,
        StatusCounts::default(),
        "the batch was settled before stopping"
    );
}

async fn shutdown_grace_over_releases_the_claims(backend: Backend) {
    let db = Db::open(backend, Arc::new(SystemClock)).await;
    let hung = TestPublisher::new();
    hung.set_gate(false);
    let options = fast_options("h").shutdown_grace(Duration::from_millis(100));
    let relay = Running::start(db.relay(hung.clone(), options));
    let written = db.write(&messages(2, 0)).await;
    wait_until("the publish to start", WAIT, || async { hung.calls() == 1 }).await;
    relay.stop().await;
    for id in &written {
        let row = db.row(*id).await.expect("row");
        assert_eq!(
            (row.status.as_str(), row.attempts, row.claimed_by),
            ("pending", 0, None),
            "released unattempted"
        );
    }
    // Released rows are due at once for the next relay.
    let publisher = TestPublisher::new();
    let next = Running::start(db.relay(publisher.clone(), fast_options("next")));
    wait_until("the next relay", WAIT, || async { publisher.published().len() == 2 }).await;
    next.stop().await;
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
