//! Receive and leases: delivery order, lease fields, expiry and redelivery with a higher
//! fencing token, lease validity, ack, extend, `next_due`, and concurrent receivers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use courier_core::{
    ErrorKind, FencingToken, LeaseError, LeaseId, MessageStatus, NackIntent, NewMessage, QueuePolicy, Receipt,
    ReceiveOptions,
};

use super::{at, ids, msg, queue, unknown_id, Ctx};
use crate::harness::Harness;

fn with_lease(opts_lease_ms: u64, max: usize) -> ReceiveOptions {
    ReceiveOptions {
        max_messages: max,
        lease: Some(Duration::from_millis(opts_lease_ms)),
        ..ReceiveOptions::default()
    }
}

/// Receive takes ready messages in `(visible_at, id)` order.
pub async fn receive_takes_oldest_visible_first(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let delays = [3_000, 0, 1_000, 1_000, 0];
    let mut id = Vec::new();
    for d in delays {
        id.push(ctx.put(msg("m").with_delay(Duration::from_millis(d))).await);
    }
    ctx.advance_ms(3_000);
    assert_eq!(ids(&ctx.take(2).await), vec![id[1], id[4]], "visible at T, in id order");
    assert_eq!(ids(&ctx.take(10).await), vec![id[2], id[3], id[0]]);
}

/// At most `max_messages` come back per receive.
pub async fn max_messages_caps_the_batch(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    ctx.put_raw((0..5).map(|_| msg("m")).collect()).await;
    assert_eq!(ctx.take(3).await.len(), 3);
    assert_eq!(ctx.take(3).await.len(), 2);
    assert_eq!(ctx.take(3).await.len(), 0);
}

/// Every delivery of one receive has a lease of its own: no two share a lease id, so a
/// receipt names exactly one lease.
pub async fn each_delivery_of_a_batch_has_its_own_lease_id(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    ctx.put_raw((0..5).map(|_| msg("m")).collect()).await;
    // Asking for more than are ready: the batch is short, each lease still its own.
    let batch = ctx.take(8).await;
    assert_eq!(batch.len(), 5);
    let lease_ids: std::collections::HashSet<_> = batch.iter().map(|d| d.lease.lease_id).collect();
    assert_eq!(lease_ids.len(), 5, "lease ids repeat within a batch: {batch:?}");
}

/// The first lease has token 1, attempt 1, the policy lease, and the message shows it.
pub async fn first_lease_has_token_one_and_policy_deadline(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    let deadline = at(t, QueuePolicy::default().lease_ms);
    assert_eq!(d.lease.fencing_token, FencingToken(1));
    assert_eq!(d.lease.attempt, 1);
    assert_eq!(d.lease.deadline, deadline);
    assert_eq!(d.message.status, MessageStatus::InFlight);
    assert_eq!(d.message.deliveries, 1);
    assert_eq!(
        d.message.visible_at, deadline,
        "an in-flight message's visible_at is its deadline"
    );
    let info = ctx.info(id).await;
    assert_eq!(info.status, MessageStatus::InFlight);
    assert_eq!(info.visible_at, deadline);
    assert_eq!(info.deliveries, 1);
    assert_eq!(ctx.stats().await.in_flight, 1);
}

/// The lease is the receive's, else the message's, else the policy's.
pub async fn lease_duration_precedence(h: &dyn Harness) {
    let policy = QueuePolicy {
        lease_ms: 10_000,
        ..QueuePolicy::default()
    };
    let ctx = Ctx::with_policy(h, policy).await;
    let t = ctx.now();
    let own = NewMessage {
        lease: Some(Duration::from_millis(20_000)),
        ..msg("own")
    };
    let own_id = ctx.put(own.clone()).await;
    let plain_id = ctx.put(msg("plain")).await;
    let got = ctx.take(10).await;
    assert_eq!(ids(&got), vec![own_id, plain_id]);
    assert_eq!(got[0].lease.deadline, at(t, 20_000), "message lease beats policy lease");
    assert_eq!(got[1].lease.deadline, at(t, 10_000), "policy lease by default");
    let own_id = ctx.put(own).await;
    let got = ctx
        .engine
        .try_receive(&ctx.q, &with_lease(5_000, 1))
        .await
        .expect("receive");
    assert_eq!(ids(&got.deliveries), vec![own_id]);
    assert_eq!(
        got.deliveries[0].lease.deadline,
        at(t, 5_000),
        "receive lease beats both"
    );
}

/// While its lease is valid, a message is not delivered again.
pub async fn leased_message_not_redelivered_while_lease_valid(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    ctx.advance_ms(QueuePolicy::default().lease_ms - 1);
    let batch = ctx
        .engine
        .try_receive(&ctx.q, &ReceiveOptions::default())
        .await
        .expect("receive");
    assert!(batch.deliveries.is_empty());
    assert_eq!(
        batch.next_due,
        Some(d.lease.deadline),
        "the lease deadline is the next due time"
    );
}

/// An expired lease counts a failed attempt and the message is delivered again with a new
/// lease id, a higher fencing token and the next attempt number; the old receipt is stale.
pub async fn expired_lease_redelivers_with_higher_fencing_token(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let first = ctx.take_id(id).await;
    ctx.advance_ms(QueuePolicy::default().lease_ms);
    let second = ctx.take_id(id).await;
    assert_eq!(second.lease.fencing_token, FencingToken(2));
    assert!(second.lease.fencing_token > first.lease.fencing_token);
    assert_eq!(second.lease.attempt, 2);
    assert_ne!(second.lease.lease_id, first.lease.lease_id);
    assert_eq!(second.message.deliveries, 2);
    assert_eq!(second.message.failures, 1);
    assert_eq!(second.message.last_error.as_deref(), Some("lease expired"));
    let err = ctx.engine.ack(&ctx.q, &first.receipt()).await.expect_err("old lease");
    assert!(matches!(err, LeaseError::Stale(m) if m == id), "got {err:?}");
    ctx.engine
        .ack(&ctx.q, &second.receipt())
        .await
        .expect("current lease acks");
}

/// A reclaimed message is ready again with `visible_at` = its old deadline, so it sorts by
/// that time, not by when the reclaim happened.
pub async fn expired_lease_makes_message_visible_at_its_deadline(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let first = ctx.put(msg("first")).await;
    let got = ctx
        .engine
        .try_receive(&ctx.q, &with_lease(1_000, 1))
        .await
        .expect("receive");
    assert_eq!(ids(&got.deliveries), vec![first]);
    ctx.advance_ms(1_500);
    let later = ctx.put(msg("later")).await;
    ctx.advance_ms(500);
    let info = ctx.info(first).await;
    assert_eq!(info.status, MessageStatus::Ready);
    assert_eq!(info.visible_at, at(t, 1_000));
    assert_eq!(info.failures, 1);
    assert_eq!(ids(&ctx.take(10).await), vec![first, later]);
}

/// A lease is valid while `T < deadline`: at the deadline ack, nack and extend are stale.
pub async fn lease_valid_until_deadline_exclusive(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let a = ctx.put(msg("a")).await;
    let b = ctx.put(msg("b")).await;
    let got = ctx
        .engine
        .try_receive(&ctx.q, &with_lease(1_000, 2))
        .await
        .expect("receive");
    assert_eq!(ids(&got.deliveries), vec![a, b]);
    ctx.advance_ms(999);
    ctx.engine
        .ack(&ctx.q, &got.deliveries[0].receipt())
        .await
        .expect("1 ms before the deadline");
    ctx.advance_ms(1);
    let r = got.deliveries[1].receipt();
    let e = ctx.engine.ack(&ctx.q, &r).await.expect_err("at the deadline");
    assert_eq!(e.kind(), ErrorKind::LeaseConflict);
    let e = ctx
        .engine
        .nack(&ctx.q, &r, NackIntent::Defer { delay: Duration::ZERO })
        .await;
    assert_eq!(e.expect_err("at the deadline").kind(), ErrorKind::LeaseConflict);
    let e = ctx.engine.extend(&ctx.q, &r, Duration::from_secs(10)).await;
    assert_eq!(e.expect_err("at the deadline").kind(), ErrorKind::LeaseConflict);
}

/// A stale receipt (superseded, forged, or for a message not in flight) is refused with
/// `Stale` and changes nothing.
pub async fn stale_ack_is_refused_and_changes_nothing(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let old = ctx.take_id(id).await;
    ctx.advance_ms(QueuePolicy::default().lease_ms);
    let current = ctx.take_id(id).await;
    let before = ctx.info(id).await;
    let forged = Receipt {
        message_id: id,
        lease_id: LeaseId(uuid::Uuid::from_u128(42)),
    };
    for r in [old.receipt(), forged] {
        let e = ctx.engine.ack(&ctx.q, &r).await.expect_err("stale ack");
        assert!(matches!(e, LeaseError::Stale(m) if m == id), "got {e:?}");
        let e = ctx.engine.nack(&ctx.q, &r, fail("x")).await.expect_err("stale nack");
        assert!(matches!(e, LeaseError::Stale(_)), "got {e:?}");
        let e = ctx
            .engine
            .extend(&ctx.q, &r, Duration::from_secs(60))
            .await
            .expect_err("stale extend");
        assert!(matches!(e, LeaseError::Stale(_)), "got {e:?}");
    }
    assert_eq!(ctx.info(id).await, before, "refused operations changed nothing");
    ctx.engine
        .ack(&ctx.q, &current.receipt())
        .await
        .expect("current lease still valid");

    // A message that is not in flight has no valid lease at all.
    let ready = ctx.put(msg("ready")).await;
    let r = Receipt {
        message_id: ready,
        lease_id: current.lease.lease_id,
    };
    let e = ctx.engine.ack(&ctx.q, &r).await.expect_err("not leased");
    assert!(matches!(e, LeaseError::Stale(_)), "got {e:?}");
    assert_eq!(ctx.info(ready).await.status, MessageStatus::Ready);
}

fn fail(error: &str) -> NackIntent {
    NackIntent::Failure {
        error: error.into(),
        delay: None,
    }
}

/// Acking a message that is not in this queue (unknown, already acked, in another queue,
/// or in a queue that does not exist) is `MessageNotFound`.
pub async fn ack_unknown_message_is_not_found(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    let other = queue("default", "other");
    ctx.engine.enqueue(&other, vec![msg("o")]).await.expect("enqueue");
    let e = ctx.engine.ack(&other, &d.receipt()).await.expect_err("wrong queue");
    assert!(matches!(e, LeaseError::MessageNotFound(m) if m == id), "got {e:?}");
    let e = ctx
        .engine
        .ack(&queue("nowhere", "q"), &d.receipt())
        .await
        .expect_err("unknown queue");
    assert!(matches!(e, LeaseError::MessageNotFound(_)), "got {e:?}");
    assert_eq!(
        ctx.info(id).await.status,
        MessageStatus::InFlight,
        "untouched by the refusals"
    );
    let unknown = Receipt {
        message_id: unknown_id(),
        lease_id: d.lease.lease_id,
    };
    let e = ctx.engine.ack(&ctx.q, &unknown).await.expect_err("unknown id");
    assert!(matches!(e, LeaseError::MessageNotFound(_)), "got {e:?}");
    ctx.engine.ack(&ctx.q, &d.receipt()).await.expect("ack");
    let e = ctx.engine.ack(&ctx.q, &d.receipt()).await.expect_err("second ack");
    assert!(matches!(e, LeaseError::MessageNotFound(m) if m == id), "got {e:?}");
}

/// Ack deletes the message: it is gone from get, list and stats.
pub async fn ack_deletes_message(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    ctx.engine.ack(&ctx.q, &d.receipt()).await.expect("ack");
    let e = ctx.engine.get_message(&ctx.q, id).await.expect_err("deleted");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let page = ctx
        .engine
        .list_messages(&ctx.q, Default::default())
        .await
        .expect("list");
    assert!(page.items.is_empty());
    assert_eq!(ctx.stats().await, Default::default());
    ctx.advance_ms(QueuePolicy::default().lease_ms * 2);
    ctx.assert_nothing_ready().await;
}

/// `ack_many` settles each receipt on its own and reports each result in order.
pub async fn ack_many_settles_each_receipt(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    ctx.put_raw((0..3).map(|_| msg("m")).collect()).await;
    let got = ctx.take(3).await;
    let stale = Receipt {
        message_id: got[1].message.id,
        lease_id: LeaseId(uuid::Uuid::from_u128(7)),
    };
    let unknown = Receipt {
        message_id: unknown_id(),
        lease_id: got[0].lease.lease_id,
    };
    let receipts = [got[0].receipt(), stale, got[2].receipt(), unknown];
    let results = ctx.engine.ack_many(&ctx.q, &receipts).await.expect("ack_many");
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(LeaseError::Stale(_))), "got {:?}", results[1]);
    assert!(results[2].is_ok());
    assert!(
        matches!(results[3], Err(LeaseError::MessageNotFound(_))),
        "got {:?}",
        results[3]
    );
    let s = ctx.stats().await;
    assert_eq!(s.in_flight, 1, "only the stale one is left, still leased");
    ctx.engine
        .ack(&ctx.q, &got[1].receipt())
        .await
        .expect("its real lease still works");
}

/// Extend sets `deadline = T + by` and keeps lease id, token and attempt.
pub async fn extend_moves_deadline_keeps_lease(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    ctx.advance_ms(20_000);
    let lease = ctx
        .engine
        .extend(&ctx.q, &d.receipt(), Duration::from_secs(60))
        .await
        .expect("extend");
    assert_eq!(lease.deadline, at(t, 80_000));
    assert_eq!(lease.lease_id, d.lease.lease_id);
    assert_eq!(lease.fencing_token, d.lease.fencing_token);
    assert_eq!(lease.attempt, d.lease.attempt);
    assert_eq!(ctx.info(id).await.visible_at, at(t, 80_000));
    ctx.advance_ms(59_999);
    ctx.assert_nothing_ready().await;
    assert_eq!(
        ctx.info(id).await.status,
        MessageStatus::InFlight,
        "still leased past the old deadline"
    );
    // Extending may also shorten the lease.
    let lease = ctx
        .engine
        .extend(&ctx.q, &d.receipt(), Duration::from_millis(100))
        .await
        .expect("extend");
    assert_eq!(lease.deadline, at(t, 80_099));
    ctx.advance_ms(100);
    assert_eq!(ctx.take_id(id).await.lease.attempt, 2, "the shortened lease ran out");
}

/// A lease shortened by extend lapses at its new deadline, not at a later sweep the engine
/// planned for the old one: receive, extend by 100 ms, and 100 ms later it is back.
pub async fn shortened_lease_lapses_at_its_new_deadline(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let later = ctx.put(msg("later").with_delay(Duration::from_secs(10))).await;
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    let lease = ctx
        .engine
        .extend(&ctx.q, &d.receipt(), Duration::from_millis(100))
        .await
        .expect("extend");
    assert_eq!(lease.deadline, at(t, 100));
    ctx.advance_ms(99);
    let batch = ctx
        .engine
        .try_receive(&ctx.q, &ReceiveOptions::default())
        .await
        .expect("receive");
    assert!(batch.deliveries.is_empty(), "still leased before the new deadline");
    assert_eq!(batch.next_due, Some(at(t, 100)), "the new deadline is what comes next");
    ctx.advance_ms(1);
    assert_eq!(ctx.take_id(id).await.lease.attempt, 2, "the shortened lease ran out");
    assert_eq!(ctx.info(later).await.status, MessageStatus::Delayed);
}

/// `next_due` is the earliest delayed `visible_at` or in-flight deadline, `None` when there
/// is neither.
pub async fn next_due_reports_earliest_delayed_or_lease_deadline(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let empty = ReceiveOptions::default();
    ctx.put(msg("later").with_delay(Duration::from_millis(10_000))).await;
    let now_id = ctx.put(msg("now")).await;
    let got = ctx
        .engine
        .try_receive(&ctx.q, &with_lease(5_000, 1))
        .await
        .expect("receive");
    assert_eq!(ids(&got.deliveries), vec![now_id]);
    let batch = ctx.engine.try_receive(&ctx.q, &empty).await.expect("receive");
    assert!(batch.deliveries.is_empty());
    assert_eq!(batch.next_due, Some(at(t, 5_000)), "the lease deadline comes first");
    ctx.engine.ack(&ctx.q, &got.deliveries[0].receipt()).await.expect("ack");
    let batch = ctx.engine.try_receive(&ctx.q, &empty).await.expect("receive");
    assert_eq!(batch.next_due, Some(at(t, 10_000)), "then the delayed message");
    ctx.advance_ms(10_000);
    let d = ctx.take(1).await;
    ctx.engine.ack(&ctx.q, &d[0].receipt()).await.expect("ack");
    let batch = ctx.engine.try_receive(&ctx.q, &empty).await.expect("receive");
    assert_eq!(batch.next_due, None, "nothing pending");
}

/// Receiving from a queue that does not exist yields an empty batch and creates nothing.
pub async fn unknown_queue_receive_is_empty(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let batch = ctx
        .engine
        .try_receive(&ctx.q, &ReceiveOptions::default())
        .await
        .expect("receive");
    assert!(batch.deliveries.is_empty());
    assert_eq!(batch.next_due, None);
    let e = ctx
        .engine
        .stats(&ctx.q)
        .await
        .expect_err("receive does not create the queue");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

/// Many tasks receiving at once from 500 messages: each message is delivered exactly once
/// while leases are long.
pub async fn concurrent_receivers_never_share_a_lease(h: &dyn Harness) {
    const MESSAGES: usize = 500;
    const RECEIVERS: usize = 8;
    let ctx = Ctx::new(h).await;
    for chunk in 0..5 {
        ctx.put_raw((0..100).map(|i| msg(&format!("{chunk}-{i}"))).collect())
            .await;
    }
    let mut tasks = Vec::new();
    for r in 0..RECEIVERS {
        let engine = Arc::clone(&ctx.engine);
        let q = ctx.q.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let opts = ReceiveOptions {
                    max_messages: 1 + r % 7,
                    ..ReceiveOptions::default()
                };
                let batch = engine.try_receive(&q, &opts).await.expect("receive");
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
    assert_eq!(ctx.stats().await.in_flight, MESSAGES as u64);
}
