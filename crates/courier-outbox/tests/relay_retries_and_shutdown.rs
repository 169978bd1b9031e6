//! The relay's retries and lifecycle, each scenario run on PostgreSQL and on SQLite: a
//! publisher outage keeps messages pending with growing backoff; only the failed messages of a
//! batch are retried; max attempts marks a message failed, it is listed and retried; retention
//! deletes only old published rows; shutdown finishes the batch in flight, or releases its
//! claims once the grace is over.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    assert_once_in_key_order, fast_options, manual_clock, messages, now_ms, wait_until, Backend, Db, Running,
    TestPublisher,
};
use courier_core::{PublishError, SystemClock};
use courier_outbox::{OutboxMessage, PageRequest, Retention, StatusCounts};

const WAIT: Duration = Duration::from_secs(10);

on_both_databases!(
    publisher_down_keeps_messages_pending_with_growing_backoff_until_it_is_back,
    only_the_failed_messages_of_a_batch_are_retried,
    max_attempts_marks_failed_holds_back_the_key_and_retry_resumes,
    retention_deletes_only_old_published_rows,
    graceful_shutdown_finishes_the_batch_in_flight,
    shutdown_grace_over_releases_the_claims,
);

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

async fn retention_deletes_only_old_published_rows(backend: Backend) {
    let clock = manual_clock();
    let db = Db::open(backend, clock.clone()).await;
    let publisher = TestPublisher::new();
    let options = fast_options("keeper")
        .retention(Retention::KeepFor(Duration::from_secs(3600)))
        .cleanup_interval(Duration::from_millis(30))
        .max_attempts(1);
    let old = db.write(&messages(3, 0)).await;
    // Started only now: a relay already running could publish old[2] before it is set to fail.
    publisher.fail_id(old[2], PublishError::Rejected("refused".into()));
    let relay = Running::start(db.relay(publisher.clone(), options));
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
