//! Ordering groups: one message of a group in flight at a time, in enqueue order; other
//! groups unaffected; the next message becomes active when the current one leaves.

use std::time::Duration;

use courier_core::{ExpiryAction, MessageStatus, QueuePolicy, Redrive};

use super::retry::{fail_once, failure};
use super::{at, counts, counts_of, ids, msg, Ctx};
use crate::harness::Harness;

fn grouped(payload: &str, group: &str) -> courier_core::NewMessage {
    msg(payload).with_ordering_group(group)
}

/// A group's messages come one at a time in enqueue order; the rest wait as `blocked`.
pub async fn ordering_group_delivers_in_order_one_at_a_time(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let a1 = ctx.put(grouped("a1", "g")).await;
    let a2 = ctx.put(grouped("a2", "g")).await;
    let a3 = ctx.put(grouped("a3", "g")).await;
    assert_eq!(counts_of(&ctx.stats().await), counts(1, 0, 0, 2, 0));
    assert_eq!(ctx.info(a2).await.status, MessageStatus::Blocked);
    for id in [a1, a2, a3] {
        let d = ctx.take_id(id).await;
        ctx.assert_nothing_ready().await;
        ctx.engine.ack(&ctx.q, &d.receipt()).await.expect("ack");
    }
    ctx.assert_nothing_ready().await;
}

/// Other groups and ungrouped messages are not held up by a busy group.
pub async fn other_groups_not_blocked(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let a1 = ctx.put(grouped("a1", "g1")).await;
    let a2 = ctx.put(grouped("a2", "g1")).await;
    let b1 = ctx.put(grouped("b1", "g2")).await;
    let c1 = ctx.put(msg("c1")).await;
    assert_eq!(ids(&ctx.take(10).await), vec![a1, b1, c1]);
    assert_eq!(ctx.info(a2).await.status, MessageStatus::Blocked);
    let b2 = ctx.put(grouped("b2", "g2")).await;
    assert_eq!(ctx.info(b2).await.status, MessageStatus::Blocked, "g2 has b1 in flight");
}

/// A retried or deferred head keeps its group blocked, and it is redelivered before the next.
pub async fn group_stays_blocked_behind_retrying_message(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let a1 = ctx.put(grouped("a1", "g")).await;
    let a2 = ctx.put(grouped("a2", "g")).await;
    let d = ctx.take_id(a1).await;
    ctx.engine
        .nack(&ctx.q, &d.receipt(), failure("x", Some(1_000)))
        .await
        .expect("nack");
    ctx.assert_nothing_ready().await;
    assert_eq!(counts_of(&ctx.stats().await), counts(0, 1, 0, 1, 0));
    ctx.advance_ms(1_000);
    let d = ctx.take_id(a1).await;
    let defer = courier_core::NackIntent::Defer {
        delay: Duration::from_millis(500),
    };
    ctx.engine.nack(&ctx.q, &d.receipt(), defer).await.expect("defer");
    ctx.assert_nothing_ready().await;
    ctx.advance_ms(500);
    ctx.take_id(a1).await;
    ctx.advance_ms(QueuePolicy::default().lease_ms);
    let d = ctx.take_id(a1).await;
    assert_eq!(d.lease.attempt, 3, "lease expiry kept a1 at the head");
    ctx.engine.ack(&ctx.q, &d.receipt()).await.expect("ack");
    ctx.take_id(a2).await;
}

/// When the head is dead-lettered the next message of the group becomes active.
pub async fn group_advances_when_head_dead_lettered(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let a1 = ctx.put(grouped("a1", "g").with_max_attempts(1)).await;
    let a2 = ctx.put(grouped("a2", "g")).await;
    fail_once(&ctx, a1, "fatal").await;
    assert_eq!(ctx.info(a2).await.status, MessageStatus::Ready);
    ctx.take_id(a2).await;
}

/// When the head expires (dropped here) the next message of the group becomes active.
pub async fn group_advances_when_head_expires(h: &dyn Harness) {
    let policy = QueuePolicy {
        on_expire: ExpiryAction::Drop,
        ..QueuePolicy::default()
    };
    let ctx = Ctx::with_policy(h, policy).await;
    let a1 = ctx.put(grouped("a1", "g").with_ttl(Duration::from_millis(1_000))).await;
    let a2 = ctx.put(grouped("a2", "g")).await;
    ctx.advance_ms(1_000);
    ctx.take_id(a2).await;
    assert!(ctx.engine.get_message(&ctx.q, a1).await.is_err(), "a1 was dropped");
}

/// A message behind a delayed head is blocked, not ready; once the head leaves, it becomes
/// active with its own `visible_at`, ready or delayed.
pub async fn unblocked_message_keeps_its_own_visible_at(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let head = ctx
        .put(grouped("head", "g").with_delay(Duration::from_millis(5_000)))
        .await;
    let early = ctx.put(grouped("early", "g")).await;
    let late = ctx
        .put(grouped("late", "g").with_delay(Duration::from_millis(60_000)))
        .await;
    ctx.assert_nothing_ready().await;
    assert_eq!(ctx.info(early).await.status, MessageStatus::Blocked);
    ctx.advance_ms(5_000);
    let d = ctx.take_id(head).await;
    ctx.advance_ms(5_000);
    let plain = ctx.put(msg("plain")).await;
    ctx.engine.ack(&ctx.q, &d.receipt()).await.expect("ack");
    let info = ctx.info(early).await;
    assert_eq!(info.status, MessageStatus::Ready);
    assert_eq!(info.visible_at, t, "its own visible_at, from enqueue");
    let got = ctx.take(10).await;
    assert_eq!(ids(&got), vec![early, plain], "early sorts first by its visible_at");
    // Settle `early`: `late` becomes active but is still delayed.
    ctx.engine.ack(&ctx.q, &got[0].receipt()).await.expect("ack");
    let info = ctx.info(late).await;
    assert_eq!(info.status, MessageStatus::Delayed);
    assert_eq!(info.visible_at, at(t, 60_000));
}

/// A redriven message whose group has a live message is blocked behind it; a new message
/// whose group has only dead letters is not.
pub async fn redrive_into_busy_group_is_blocked(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let a1 = ctx.put(grouped("a1", "g").with_max_attempts(1)).await;
    fail_once(&ctx, a1, "fatal").await;
    let a2 = ctx.put(grouped("a2", "g")).await;
    assert_eq!(
        ctx.info(a2).await.status,
        MessageStatus::Ready,
        "dead letters do not block"
    );
    let d = ctx.take_id(a2).await;
    assert_eq!(ctx.engine.dlq_redrive(&ctx.q, Redrive::All).await.expect("redrive"), 1);
    assert_eq!(ctx.info(a1).await.status, MessageStatus::Blocked);
    ctx.assert_nothing_ready().await;
    ctx.engine.ack(&ctx.q, &d.receipt()).await.expect("ack");
    ctx.take_id(a1).await;
}
