//! Listing, stats and administration: list/get without leasing, cursors, purge, delete,
//! policies, queue listing, errors on unknown queues, readiness and shutdown.

use std::time::Duration;

use courier_core::{
    Delivery, ErrorKind, LeaseError, ListOptions, MessageStatus, NackIntent, Namespace, QueueError, QueuePolicy,
    Receipt, Redrive, StateError,
};
use serde_json::json;

use super::retry::{fail_once, failure};
use super::{counts, counts_of, ids, msg, queue, unknown_id, Ctx};
use crate::harness::Harness;

fn page(after: Option<courier_core::MessageId>, limit: usize) -> ListOptions {
    ListOptions { after, limit }
}

/// `list_messages` and `get_message` show messages with their status and lease no one.
pub async fn list_and_get_without_leasing(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let a = ctx.put(msg("a")).await;
    let d = ctx.take_id(a).await;
    let b = ctx.put(msg("b")).await;
    let c = ctx.put(msg("c").with_delay(Duration::from_secs(60))).await;
    let listed = ctx
        .engine
        .list_messages(&ctx.q, ListOptions::default())
        .await
        .expect("list");
    assert_eq!(listed.next_after, None);
    let got: Vec<_> = listed.items.iter().map(|m| (m.id, m.status, m.deliveries)).collect();
    assert_eq!(
        got,
        vec![
            (a, MessageStatus::InFlight, 1),
            (b, MessageStatus::Ready, 0),
            (c, MessageStatus::Delayed, 0)
        ]
    );
    assert_eq!(listed.items[0].visible_at, d.lease.deadline);
    assert_eq!(ctx.info(b).await, listed.items[1], "get and list agree");
    assert_eq!(ctx.info(b).await.deliveries, 0, "looking leases nothing");
    assert_eq!(ids(&ctx.take(10).await), vec![b], "b is still ready");
}

/// Pages follow the cursor in id order; `next_after` is set only when more follow.
pub async fn list_pages_with_cursor(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let dead = ctx.put(msg("dead").with_max_attempts(1)).await;
    fail_once(&ctx, dead, "x").await;
    let out = ctx.put_raw((0..5).map(|i| msg(&i.to_string())).collect()).await;
    let id: Vec<_> = out.iter().map(|e| e.id).collect();
    let p1 = ctx.engine.list_messages(&ctx.q, page(None, 2)).await.expect("list");
    assert_eq!(
        p1.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        id[0..2],
        "dead letters are skipped"
    );
    assert_eq!(p1.next_after, Some(id[1]));
    let p2 = ctx
        .engine
        .list_messages(&ctx.q, page(p1.next_after, 2))
        .await
        .expect("list");
    assert_eq!(p2.items.iter().map(|m| m.id).collect::<Vec<_>>(), id[2..4]);
    assert_eq!(p2.next_after, Some(id[3]));
    let p3 = ctx
        .engine
        .list_messages(&ctx.q, page(p2.next_after, 2))
        .await
        .expect("list");
    assert_eq!(p3.items.iter().map(|m| m.id).collect::<Vec<_>>(), id[4..5]);
    assert_eq!(p3.next_after, None);
    let all = ctx.engine.list_messages(&ctx.q, page(None, 5)).await.expect("list");
    assert_eq!(all.items.len(), 5);
    assert_eq!(all.next_after, None, "an exactly full last page has no cursor");
}

/// `dlq_list` pages through dead letters only, in id order.
pub async fn dlq_list_pages_dead_letters(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let mut dead = Vec::new();
    for i in 0..3 {
        let id = ctx.put(msg(&i.to_string()).with_max_attempts(1)).await;
        fail_once(&ctx, id, "x").await;
        dead.push(id);
    }
    ctx.put(msg("live")).await;
    let p1 = ctx.engine.dlq_list(&ctx.q, page(None, 2)).await.expect("dlq_list");
    assert_eq!(p1.items.iter().map(|m| m.id).collect::<Vec<_>>(), dead[0..2]);
    assert!(p1.items.iter().all(|m| m.status == MessageStatus::DeadLettered));
    assert_eq!(p1.next_after, Some(dead[1]));
    let p2 = ctx
        .engine
        .dlq_list(&ctx.q, page(p1.next_after, 2))
        .await
        .expect("dlq_list");
    assert_eq!(p2.items.iter().map(|m| m.id).collect::<Vec<_>>(), dead[2..3]);
    assert_eq!(p2.next_after, None);
}

/// Purge deletes every live message, in flight too, and returns the count; dead letters stay.
pub async fn purge(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let dead = ctx.put(msg("dead").with_max_attempts(1)).await;
    fail_once(&ctx, dead, "x").await;
    let leased = ctx.put(msg("leased")).await;
    let d = ctx.take_id(leased).await;
    ctx.put(msg("ready")).await;
    ctx.put(msg("delayed").with_delay(Duration::from_secs(60))).await;
    ctx.put(msg("g1").with_ordering_group("g")).await;
    ctx.put(msg("g2").with_ordering_group("g")).await;
    assert_eq!(ctx.engine.purge(&ctx.q).await.expect("purge"), 5);
    assert_eq!(counts_of(&ctx.stats().await), counts(0, 0, 0, 0, 1));
    let e = ctx
        .engine
        .ack(&ctx.q, &d.receipt())
        .await
        .expect_err("purged while leased");
    assert!(matches!(e, LeaseError::MessageNotFound(_)), "got {e:?}");
    assert_eq!(ctx.info(dead).await.status, MessageStatus::DeadLettered);
    assert_eq!(ctx.engine.purge(&ctx.q).await.expect("purge"), 0);
    let g3 = ctx.put(msg("g3").with_ordering_group("g")).await;
    assert_eq!(
        ctx.info(g3).await.status,
        MessageStatus::Ready,
        "the purged group blocks nothing"
    );
}

/// Deleting a queue removes its messages, dead letters, policy and idempotency records.
pub async fn delete_queue(h: &dyn Harness) {
    let policy = QueuePolicy {
        lease_ms: 5_000,
        ..QueuePolicy::default()
    };
    let ctx = Ctx::with_policy(h, policy).await;
    let keyed = ctx.put(msg("k").with_idempotency_key("key")).await;
    let dead = ctx.put(msg("dead").with_max_attempts(1)).await;
    let other = queue("default", "other");
    ctx.engine.enqueue(&other, vec![msg("stays")]).await.expect("enqueue");
    let d = ctx.take(10).await;
    ctx.engine
        .nack(&ctx.q, &d[1].receipt(), failure("x", None))
        .await
        .expect("nack");
    ctx.engine.delete_queue(&ctx.q).await.expect("delete_queue");
    let e = ctx.engine.stats(&ctx.q).await.expect_err("deleted");
    assert!(matches!(e, QueueError::QueueNotFound(_)), "got {e:?}");
    let e = ctx
        .engine
        .dlq_list(&ctx.q, ListOptions::default())
        .await
        .expect_err("deleted");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let names: Vec<_> = ctx
        .engine
        .list_queues(None)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.queue)
        .collect();
    assert_eq!(names, vec![other.clone()]);
    assert_eq!(ctx.engine.stats(&other).await.expect("other queue untouched").ready, 1);
    let e = ctx.engine.delete_queue(&ctx.q).await.expect_err("already gone");
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let again = ctx.put_raw(vec![msg("k").with_idempotency_key("key")]).await;
    assert!(!again[0].duplicate, "idempotency records went with the queue");
    assert_ne!(again[0].id, keyed);
    assert_eq!(
        ctx.engine.policy(&ctx.q).await.expect("recreated"),
        QueuePolicy::default()
    );
    let e = ctx
        .engine
        .get_message(&ctx.q, dead)
        .await
        .expect_err("dead letters went too");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

/// Stats count every status and the age of the oldest ready message.
pub async fn stats_counts_each_status(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let dead = ctx.put(msg("dead").with_max_attempts(1)).await;
    fail_once(&ctx, dead, "x").await;
    let leased = ctx.put(msg("leased")).await;
    ctx.take_id(leased).await;
    ctx.put(msg("late").with_delay(Duration::from_secs(3_600))).await;
    ctx.advance_ms(1_000);
    ctx.put(msg("g1").with_ordering_group("g")).await;
    ctx.put(msg("g2").with_ordering_group("g")).await;
    ctx.advance_ms(500);
    ctx.put(msg("ready")).await;
    let s = ctx.stats().await;
    assert_eq!(counts_of(&s), counts(2, 1, 1, 1, 1));
    assert_eq!(
        s.oldest_ready_age_ms, 500,
        "g1 is the oldest ready message (the leased one is older)"
    );
    assert_eq!(s.waiting_receivers, 0);
}

/// More than any engine sweeps in one step: reading a queue must still show all of it.
const BACKLOG: usize = 2_500;

/// Enqueues [`BACKLOG`] messages built by `make`, in batches the engine accepts.
async fn put_backlog(ctx: &Ctx, make: impl Fn(usize) -> courier_core::NewMessage) -> Vec<courier_core::MessageId> {
    let mut all = Vec::with_capacity(BACKLOG);
    for chunk in (0..BACKLOG).collect::<Vec<_>>().chunks(500) {
        let out = ctx.put_raw(chunk.iter().map(|&i| make(i)).collect()).await;
        all.extend(out.into_iter().map(|e| e.id));
    }
    all
}

/// Leases every message of the queue, then lets all those leases lapse at the same moment.
async fn lease_all_then_lapse(ctx: &Ctx) {
    let mut leased = 0;
    while leased < BACKLOG {
        let got = ctx.take(1_000).await.len();
        assert!(got > 0, "every message is ready to lease");
        leased += got;
    }
    ctx.advance_ms(QueuePolicy::default().lease_ms + 1);
}

/// When a big backlog of leases lapses at once, get, list and stats each show every lapse
/// taken into account, however many rows the engine's maintenance works off per step.
pub async fn reads_see_every_lapsed_lease_of_a_big_backlog(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let all = put_backlog(&ctx, |i| msg(&format!("m{i}"))).await;
    let (last, before_last) = (all[BACKLOG - 1], all[BACKLOG - 2]);

    lease_all_then_lapse(&ctx).await;
    assert_eq!(
        ctx.info(last).await.status,
        MessageStatus::Ready,
        "get sees the last lapse"
    );

    lease_all_then_lapse(&ctx).await;
    let tail = ctx
        .engine
        .list_messages(&ctx.q, page(Some(before_last), 1))
        .await
        .expect("list");
    assert_eq!(tail.items.iter().map(|m| m.id).collect::<Vec<_>>(), vec![last]);
    assert_eq!(tail.items[0].status, MessageStatus::Ready, "list sees the last lapse");

    lease_all_then_lapse(&ctx).await;
    assert_eq!(counts_of(&ctx.stats().await), counts(BACKLOG as u64, 0, 0, 0, 0));
}

/// When a big backlog expires at once, the dead-letter listing and stats show every expiry,
/// also of an ordering group whose next message each expiry makes active, and a queue that
/// drops expired messages drops them all.
pub async fn reads_see_every_expiry_of_a_big_backlog(h: &dyn Harness) {
    let ttl = Duration::from_secs(1);
    let ctx = Ctx::new(h).await;
    put_backlog(&ctx, |i| {
        let m = msg(&format!("m{i}")).with_ttl(ttl);
        if i % 2 == 0 {
            m.with_ordering_group("g")
        } else {
            m
        }
    })
    .await;
    ctx.advance_ms(1_001);
    let dead = ctx.engine.dlq_list(&ctx.q, page(None, 1_000)).await.expect("dlq list");
    assert_eq!(dead.items.len(), 1_000);
    assert!(dead.next_after.is_some(), "more dead letters than one page");
    assert_eq!(counts_of(&ctx.stats().await), counts(0, 0, 0, 0, BACKLOG as u64));

    let dropping = QueuePolicy {
        on_expire: courier_core::ExpiryAction::Drop,
        ..QueuePolicy::default()
    };
    let ctx = Ctx::with_policy(h, dropping).await;
    put_backlog(&ctx, |i| msg(&format!("m{i}")).with_ttl(ttl)).await;
    ctx.advance_ms(1_001);
    assert_eq!(counts_of(&ctx.stats().await), counts(0, 0, 0, 0, 0));
}

/// `oldest_ready_age_ms` is `T - min(enqueued_at)` over ready messages only, 0 with none.
pub async fn oldest_ready_age_counts_ready_only(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    ctx.put(msg("delayed").with_delay(Duration::from_secs(100))).await;
    assert_eq!(ctx.stats().await.oldest_ready_age_ms, 0, "none ready");
    let first = ctx.put(msg("first")).await;
    ctx.advance_ms(1_000);
    ctx.put(msg("second")).await;
    ctx.advance_ms(4_000);
    assert_eq!(ctx.stats().await.oldest_ready_age_ms, 5_000);
    assert_eq!(ids(&ctx.take(1).await), vec![first]);
    assert_eq!(
        ctx.stats().await.oldest_ready_age_ms,
        4_000,
        "the leased one no longer counts"
    );
}

/// `set_policy` creates the queue; a new lease time applies to later leases, while messages
/// keep the max attempts they were enqueued with.
pub async fn set_policy_applies_to_later_enqueues_and_leases(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let first = QueuePolicy {
        max_attempts: 2,
        lease_ms: 1_000,
        ..QueuePolicy::default()
    };
    ctx.engine.set_policy(&ctx.q, first.clone()).await.expect("set_policy");
    assert_eq!(ctx.engine.policy(&ctx.q).await.expect("policy"), first);
    assert_eq!(ctx.stats().await, Default::default(), "created, empty");
    let old = ctx.put(msg("old")).await;
    let second = QueuePolicy {
        max_attempts: 9,
        lease_ms: 7_000,
        ..QueuePolicy::default()
    };
    ctx.engine.set_policy(&ctx.q, second).await.expect("set_policy");
    let new = ctx.put(msg("new")).await;
    assert_eq!(ctx.info(old).await.max_attempts, 2, "kept from enqueue");
    assert_eq!(ctx.info(new).await.max_attempts, 9);
    let t = ctx.now();
    let got = ctx.take(10).await;
    assert_eq!(ids(&got), vec![old, new]);
    assert_eq!(got[0].lease.deadline, super::at(t, 7_000), "the current policy's lease");
    ctx.engine
        .nack(&ctx.q, &got[0].receipt(), failure("x", Some(0)))
        .await
        .expect("nack");
    let d = ctx.take_id(old).await;
    ctx.engine
        .nack(&ctx.q, &d.receipt(), failure("x", Some(0)))
        .await
        .expect("nack");
    assert_eq!(
        ctx.info(old).await.status,
        MessageStatus::DeadLettered,
        "2 failures reached max 2"
    );
}

/// Queues are listed with their policies in name order, optionally for one namespace.
pub async fn list_queues_by_namespace_in_name_order(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    for (ns, name) in [("b", "x"), ("a", "z"), ("a", "y"), ("c", "w")] {
        ctx.engine
            .enqueue(&queue(ns, name), vec![msg("m")])
            .await
            .expect("enqueue");
    }
    let custom = QueuePolicy {
        max_attempts: 3,
        ..QueuePolicy::default()
    };
    ctx.engine
        .set_policy(&queue("a", "y"), custom.clone())
        .await
        .expect("set_policy");
    let all = ctx.engine.list_queues(None).await.expect("list_queues");
    let names: Vec<String> = all.iter().map(|s| s.queue.to_string()).collect();
    assert_eq!(names, ["a/y", "a/z", "b/x", "c/w"]);
    assert_eq!(all[0].policy, custom);
    assert_eq!(all[1].policy, QueuePolicy::default());
    let ns_a = Namespace::new("a").expect("name");
    let a: Vec<String> = ctx
        .engine
        .list_queues(Some(&ns_a))
        .await
        .expect("list")
        .iter()
        .map(|s| s.queue.to_string())
        .collect();
    assert_eq!(a, ["a/y", "a/z"]);
    let none = Namespace::new("zzz").expect("name");
    assert!(ctx.engine.list_queues(Some(&none)).await.expect("list").is_empty());
}

/// Queue-level operations on an unknown queue fail with `QueueNotFound`; lease operations
/// with `MessageNotFound`.
pub async fn unknown_queue_errors(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    ctx.engine
        .enqueue(&queue("default", "exists"), vec![msg("m")])
        .await
        .expect("enqueue");
    let (e, q) = (&ctx.engine, &ctx.q);
    let qnf = |r: Result<(), QueueError>, op: &str| match r {
        Err(QueueError::QueueNotFound(got)) => assert_eq!(&got, q, "{op} names the queue"),
        other => panic!("{op} on an unknown queue: expected QueueNotFound, got {other:?}"),
    };
    qnf(e.stats(q).await.map(drop), "stats");
    qnf(e.policy(q).await.map(drop), "policy");
    qnf(
        e.list_messages(q, ListOptions::default()).await.map(drop),
        "list_messages",
    );
    qnf(e.get_message(q, unknown_id()).await.map(drop), "get_message");
    qnf(e.purge(q).await.map(drop), "purge");
    qnf(e.delete_queue(q).await, "delete_queue");
    qnf(e.dlq_list(q, ListOptions::default()).await.map(drop), "dlq_list");
    qnf(e.dlq_purge(q).await.map(drop), "dlq_purge");
    qnf(e.dlq_redrive(q, Redrive::All).await.map(drop), "dlq_redrive");
    let r = Receipt {
        message_id: unknown_id(),
        lease_id: courier_core::LeaseId(uuid::Uuid::from_u128(1)),
    };
    let nf = |r: Result<(), LeaseError>, op: &str| {
        assert!(matches!(r, Err(LeaseError::MessageNotFound(_))), "{op}: got {r:?}");
    };
    nf(e.ack(q, &r).await, "ack");
    nf(e.nack(q, &r, NackIntent::Defer { delay: Duration::ZERO }).await, "nack");
    nf(e.extend(q, &r, Duration::from_secs(1)).await.map(drop), "extend");
    let se = |r: Result<(), StateError>, op: &str| {
        assert!(
            matches!(r, Err(StateError::Lease(LeaseError::MessageNotFound(_)))),
            "{op}: got {r:?}"
        );
    };
    se(e.get_state(q, &r).await.map(drop), "get_state");
    se(e.put_state(q, &r, json!(1), None).await.map(drop), "put_state");
    let e2 = e.stats(q).await.expect_err("still unknown");
    assert_eq!(e2.kind(), ErrorKind::NotFound, "none of the above created the queue");
}

/// `get_message` of an id the queue does not hold is `MessageNotFound`.
pub async fn get_message_unknown_id_is_not_found(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    ctx.put(msg("m")).await;
    let other = queue("default", "other");
    let out = ctx.engine.enqueue(&other, vec![msg("o")]).await.expect("enqueue");
    for id in [unknown_id(), out[0].id] {
        match ctx.engine.get_message(&ctx.q, id).await {
            Err(QueueError::MessageNotFound(got)) => assert_eq!(got, id),
            other => panic!("expected MessageNotFound, got {other:?}"),
        }
    }
}

/// A fresh engine is ready; after shutdown it refuses writes as unavailable.
pub async fn ready_then_shutdown_refuses_writes(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    ctx.engine.ready().await.expect("a fresh engine is ready");
    ctx.put(msg("before")).await;
    // Traffic on a known queue first: an engine that keeps connections between calls must
    // still shut down promptly.
    ctx.put(msg("also before")).await;
    let taken = ctx.take(1).await;
    let receipts: Vec<_> = taken.iter().map(Delivery::receipt).collect();
    for acked in ctx.engine.ack_many(&ctx.q, &receipts).await.expect("ack") {
        acked.expect("a fresh lease is acked");
    }
    tokio::time::timeout(Duration::from_secs(10), ctx.engine.shutdown())
        .await
        .expect("shutdown finishes promptly")
        .expect("shutdown");
    let e = ctx
        .engine
        .enqueue(&ctx.q, vec![msg("after")])
        .await
        .expect_err("writes refused");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "got {e:?}");
}
