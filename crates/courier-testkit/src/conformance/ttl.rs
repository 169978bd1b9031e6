//! Time to live: expired messages are dead-lettered or dropped by the policy's `on_expire`,
//! whatever their status, except that an in-flight message expires only once its lease ends.

use std::time::Duration;

use courier_core::{DeadLetterReason, ErrorKind, ExpiryAction, MessageStatus, NackIntent, QueuePolicy, ReceiveOptions};

use super::{counts, counts_of, msg, Ctx};
use crate::harness::Harness;

fn drop_policy() -> QueuePolicy {
    QueuePolicy {
        on_expire: ExpiryAction::Drop,
        ..QueuePolicy::default()
    }
}

/// At `expires_at` a message is dead-lettered (reason `expired`) by default, or dropped when
/// the policy says so; not a millisecond before.
pub async fn ttl_expired_message_dead_lettered_or_dropped(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m").with_ttl(Duration::from_millis(1_000))).await;
    ctx.advance_ms(999);
    assert_eq!(ctx.info(id).await.status, MessageStatus::Ready);
    ctx.advance_ms(1);
    let info = ctx.info(id).await;
    assert_eq!(info.status, MessageStatus::DeadLettered);
    assert_eq!(info.dead_letter_reason, Some(DeadLetterReason::Expired));
    assert_eq!(info.failures, 0);
    ctx.assert_nothing_ready().await;

    let ctx = Ctx::with_policy(h, drop_policy()).await;
    let id = ctx.put(msg("m").with_ttl(Duration::from_millis(1_000))).await;
    ctx.advance_ms(1_000);
    assert_eq!(
        counts_of(&ctx.stats().await),
        counts(0, 0, 0, 0, 0),
        "dropped, not dead-lettered"
    );
    let e = ctx.engine.get_message(&ctx.q, id).await.expect_err("dropped");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

/// Without a message TTL the policy's TTL applies.
pub async fn ttl_from_policy_applies(h: &dyn Harness) {
    let policy = QueuePolicy {
        ttl_ms: Some(2_000),
        ..QueuePolicy::default()
    };
    let ctx = Ctx::with_policy(h, policy).await;
    let id = ctx.put(msg("m")).await;
    ctx.advance_ms(1_999);
    assert_eq!(ctx.stats().await.ready, 1);
    ctx.advance_ms(1);
    assert_eq!(ctx.info(id).await.dead_letter_reason, Some(DeadLetterReason::Expired));
}

/// An in-flight message does not expire while leased; when the lease ends (expiry or nack)
/// the TTL applies.
pub async fn in_flight_message_expires_only_after_lease_ends(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m").with_ttl(Duration::from_millis(1_000))).await;
    let opts = ReceiveOptions {
        lease: Some(Duration::from_millis(5_000)),
        ..ReceiveOptions::default()
    };
    ctx.engine.try_receive(&ctx.q, &opts).await.expect("receive");
    ctx.advance_ms(2_000);
    assert_eq!(
        ctx.info(id).await.status,
        MessageStatus::InFlight,
        "leased: not expired"
    );
    ctx.advance_ms(3_000);
    let info = ctx.info(id).await;
    assert_eq!(info.status, MessageStatus::DeadLettered);
    assert_eq!(info.dead_letter_reason, Some(DeadLetterReason::Expired));
    assert_eq!(info.failures, 1, "the lease expiry was counted first");
    assert_eq!(info.last_error.as_deref(), Some("lease expired"));

    let other = ctx.put(msg("n").with_ttl(Duration::from_millis(1_000))).await;
    let d = ctx.take_id(other).await;
    ctx.advance_ms(2_000);
    let defer = NackIntent::Defer { delay: Duration::ZERO };
    ctx.engine
        .nack(&ctx.q, &d.receipt(), defer)
        .await
        .expect("nack within the lease");
    assert_eq!(
        ctx.info(other).await.dead_letter_reason,
        Some(DeadLetterReason::Expired)
    );
}

/// Delayed and blocked messages expire too.
pub async fn delayed_and_blocked_messages_expire(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let delayed = ctx
        .put(
            msg("d")
                .with_delay(Duration::from_millis(10_000))
                .with_ttl(Duration::from_millis(1_000)),
        )
        .await;
    let head = ctx.put(msg("head").with_ordering_group("g")).await;
    let blocked = ctx
        .put(msg("b").with_ordering_group("g").with_ttl(Duration::from_millis(1_000)))
        .await;
    assert_eq!(counts_of(&ctx.stats().await), counts(1, 1, 0, 1, 0));
    ctx.advance_ms(1_000);
    assert_eq!(counts_of(&ctx.stats().await), counts(1, 0, 0, 0, 2));
    for id in [delayed, blocked] {
        assert_eq!(ctx.info(id).await.dead_letter_reason, Some(DeadLetterReason::Expired));
    }
    let d = ctx.take_id(head).await;
    ctx.engine.ack(&ctx.q, &d.receipt()).await.expect("ack");
    ctx.assert_nothing_ready().await;
}

/// Without any TTL a message never expires.
pub async fn no_ttl_never_expires(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    ctx.advance_ms(400 * 24 * 3600 * 1_000);
    assert_eq!(ctx.info(id).await.status, MessageStatus::Ready);
}
