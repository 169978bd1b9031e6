//! Nack, retries and the dead-letter queue: failures and deferrals, backoff, max attempts,
//! error text, redrive and DLQ purge.

use std::time::Duration;

use courier_core::{
    DeadLetterReason, ErrorKind, FencingToken, LeaseError, ListOptions, MessageId, MessageStatus, NackIntent,
    QueuePolicy, Receipt, Redrive,
};

use super::{at, ids, msg, queue, unknown_id, Ctx};
use crate::harness::Harness;
use crate::model::truncate_error;

pub(crate) fn failure(error: &str, delay_ms: Option<u64>) -> NackIntent {
    NackIntent::Failure {
        error: error.into(),
        delay: delay_ms.map(Duration::from_millis),
    }
}

fn defer(delay_ms: u64) -> NackIntent {
    NackIntent::Defer {
        delay: Duration::from_millis(delay_ms),
    }
}

/// Receives `id` (the only ready message) and nacks it as a failure, ready again at once.
pub(crate) async fn fail_once(ctx: &Ctx, id: MessageId, error: &str) {
    let d = ctx.take_id(id).await;
    ctx.engine
        .nack(&ctx.q, &d.receipt(), failure(error, Some(0)))
        .await
        .expect("nack");
}

/// A failure counts an attempt, keeps the error, and backs off by the policy's first delay.
pub async fn nack_failure_counts_attempt_and_records_error(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    ctx.engine
        .nack(&ctx.q, &d.receipt(), failure("boom", None))
        .await
        .expect("nack");
    let info = ctx.info(id).await;
    assert_eq!(info.failures, 1);
    assert_eq!(info.last_error.as_deref(), Some("boom"));
    assert_eq!(info.status, MessageStatus::Delayed);
    assert_eq!(info.visible_at, at(t, QueuePolicy::default().backoff_initial_ms));
    let e = ctx
        .engine
        .ack(&ctx.q, &d.receipt())
        .await
        .expect_err("a nacked lease is over");
    assert_eq!(e.kind(), ErrorKind::LeaseConflict);
    ctx.advance_ms(QueuePolicy::default().backoff_initial_ms);
    let again = ctx.take_id(id).await;
    assert_eq!(again.lease.attempt, 2);
    assert_eq!(again.lease.fencing_token, FencingToken(2));
}

/// Without an explicit delay, retries follow the policy's exponential, capped backoff.
pub async fn backoff_delays_retry(h: &dyn Harness) {
    let policy = QueuePolicy {
        backoff_initial_ms: 1_000,
        backoff_max_ms: 3_000,
        backoff_multiplier: 2,
        max_attempts: 10,
        ..QueuePolicy::default()
    };
    let ctx = Ctx::with_policy(h, policy).await;
    let id = ctx.put(msg("m")).await;
    for (attempt, wait_ms) in [(1, 1_000), (2, 2_000), (3, 3_000), (4, 3_000)] {
        let d = ctx.take_id(id).await;
        assert_eq!(d.lease.attempt, attempt);
        let t = ctx.now();
        ctx.engine
            .nack(&ctx.q, &d.receipt(), failure("again", None))
            .await
            .expect("nack");
        assert_eq!(ctx.info(id).await.visible_at, at(t, wait_ms), "retry {attempt}");
        ctx.advance_ms(wait_ms - 1);
        ctx.assert_nothing_ready().await;
        ctx.advance_ms(1);
    }
    assert_eq!(ctx.take_id(id).await.lease.attempt, 5);
}

/// An explicit failure delay replaces the backoff, including zero.
pub async fn nack_failure_delay_overrides_backoff(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    ctx.engine
        .nack(&ctx.q, &d.receipt(), failure("x", Some(0)))
        .await
        .expect("nack");
    let d = ctx.take_id(id).await;
    assert_eq!(d.lease.attempt, 2, "delay 0: ready at once");
    ctx.engine
        .nack(&ctx.q, &d.receipt(), failure("y", Some(7_000)))
        .await
        .expect("nack");
    assert_eq!(ctx.info(id).await.visible_at, at(t, 7_000));
}

/// A deferral does not count an attempt, keeps no error, and never dead-letters.
pub async fn defer_does_not_count_attempt(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let id = ctx.put(msg("m").with_max_attempts(2)).await;
    for round in 0..3u32 {
        let d = ctx.take_id(id).await;
        assert_eq!(d.lease.attempt, 1, "deferrals are not attempts");
        assert_eq!(d.lease.fencing_token, FencingToken(u64::from(round) + 1));
        ctx.engine
            .nack(&ctx.q, &d.receipt(), defer(2_000))
            .await
            .expect("defer");
        let info = ctx.info(id).await;
        assert_eq!(info.failures, 0);
        assert_eq!(info.last_error, None);
        assert_eq!(info.status, MessageStatus::Delayed);
        assert_eq!(info.visible_at, at(t, 2_000 * (u64::from(round) + 1)));
        assert_eq!(info.deliveries, round + 1, "deliveries count deferred leases too");
        ctx.advance_ms(1_999);
        ctx.assert_nothing_ready().await;
        ctx.advance_ms(1);
    }
}

/// At `failures >= max_attempts` a failed message is dead-lettered with its last error.
pub async fn max_attempts_moves_to_dlq_with_last_error(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m").with_max_attempts(3)).await;
    for e in ["e1", "e2", "e3"] {
        fail_once(&ctx, id, e).await;
    }
    let info = ctx.info(id).await;
    assert_eq!(info.status, MessageStatus::DeadLettered);
    assert_eq!(info.dead_letter_reason, Some(DeadLetterReason::MaxAttempts));
    assert_eq!(info.failures, 3);
    assert_eq!(info.last_error.as_deref(), Some("e3"));
    assert_eq!(&info.payload[..], b"m");
    ctx.assert_nothing_ready().await;
    let s = ctx.stats().await;
    assert_eq!((s.dead_lettered, s.ready, s.delayed), (1, 0, 0));
    let dlq = ctx
        .engine
        .dlq_list(&ctx.q, ListOptions::default())
        .await
        .expect("dlq_list");
    assert_eq!(dlq.items.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
    let live = ctx
        .engine
        .list_messages(&ctx.q, ListOptions::default())
        .await
        .expect("list");
    assert!(live.items.is_empty(), "dead letters are not live");
}

/// A lease running out at the last attempt dead-letters the message too.
pub async fn lease_expiry_at_max_attempts_dead_letters(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m").with_max_attempts(1)).await;
    ctx.take_id(id).await;
    ctx.advance_ms(QueuePolicy::default().lease_ms);
    assert_eq!(ctx.stats().await.dead_lettered, 1);
    let info = ctx.info(id).await;
    assert_eq!(info.dead_letter_reason, Some(DeadLetterReason::MaxAttempts));
    assert_eq!(info.failures, 1);
    assert_eq!(info.last_error.as_deref(), Some("lease expired"));
    ctx.assert_nothing_ready().await;
}

/// Error text is kept up to 4 KiB, cut at a char boundary.
pub async fn error_text_truncated_at_char_boundary(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let long = "€".repeat(2_000); // 3 bytes each: 6000 bytes, no boundary at 4096
    fail_once(&ctx, id, &long).await;
    let kept = ctx.info(id).await.last_error.expect("error kept");
    assert_eq!(kept.len(), 4_095, "the longest prefix of whole chars within 4096 bytes");
    assert_eq!(kept, truncate_error(&long));
    let exact = "a".repeat(4_096);
    fail_once(&ctx, id, &exact).await;
    assert_eq!(ctx.info(id).await.last_error, Some(exact), "4096 bytes are kept whole");
}

/// Nack with an unknown message or a stale lease is refused and changes nothing.
pub async fn nack_stale_or_unknown_is_refused(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    let unknown = Receipt {
        message_id: unknown_id(),
        lease_id: d.lease.lease_id,
    };
    let e = ctx
        .engine
        .nack(&ctx.q, &unknown, failure("x", None))
        .await
        .expect_err("unknown");
    assert!(matches!(e, LeaseError::MessageNotFound(_)), "got {e:?}");
    ctx.engine.nack(&ctx.q, &d.receipt(), defer(0)).await.expect("defer");
    let e = ctx
        .engine
        .nack(&ctx.q, &d.receipt(), failure("x", None))
        .await
        .expect_err("stale");
    assert!(matches!(e, LeaseError::Stale(_)), "got {e:?}");
    let info = ctx.info(id).await;
    assert_eq!(
        (info.failures, info.last_error),
        (0, None),
        "the stale failure was not counted"
    );
}

/// Redrive by id moves only dead letters of this queue, redrive all moves the rest; both
/// reset failures, reason and expiry and make the message visible at `T`.
pub async fn redrive_all_and_by_id(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let mut dead = Vec::new();
    for (i, m) in [msg("1").with_ttl(Duration::from_secs(100)), msg("2"), msg("3")]
        .into_iter()
        .enumerate()
    {
        let id = ctx.put(m.with_max_attempts(1)).await;
        fail_once(&ctx, id, &format!("bad {i}")).await;
        dead.push(id);
    }
    let [m1, m2, m3] = [dead[0], dead[1], dead[2]];
    let live = ctx.put(msg("live")).await;
    let other = queue("default", "other");
    ctx.engine.enqueue(&other, vec![msg("o")]).await.expect("enqueue");
    let moved = ctx
        .engine
        .dlq_redrive(&other, Redrive::Ids(vec![m1, m2]))
        .await
        .expect("redrive");
    assert_eq!(moved, 0, "ids dead-lettered in another queue are skipped");

    ctx.advance_ms(500);
    let moved = ctx
        .engine
        .dlq_redrive(&ctx.q, Redrive::Ids(vec![m2, unknown_id(), live]))
        .await;
    assert_eq!(moved.expect("redrive"), 1, "only the dead one moves");
    let info = ctx.info(m2).await;
    assert_eq!(info.status, MessageStatus::Ready);
    assert_eq!((info.failures, info.dead_letter_reason), (0, None));
    assert_eq!(info.visible_at, at(t, 500));
    let again = ctx
        .engine
        .dlq_redrive(&ctx.q, Redrive::Ids(vec![m2]))
        .await
        .expect("redrive");
    assert_eq!(again, 0, "a live message is not redriven twice");

    ctx.advance_ms(500);
    assert_eq!(ctx.engine.dlq_redrive(&ctx.q, Redrive::All).await.expect("redrive"), 2);
    let info = ctx.info(m1).await;
    assert_eq!(info.expires_at, None, "redrive clears the expiry");
    assert_eq!(info.visible_at, at(t, 1_000));
    let dlq = ctx
        .engine
        .dlq_list(&ctx.q, ListOptions::default())
        .await
        .expect("dlq_list");
    assert!(dlq.items.is_empty());
    let got = ctx.take(10).await;
    assert_eq!(ids(&got), vec![live, m2, m1, m3], "ordered by (visible_at, id)");
    assert_eq!(got[1].lease.attempt, 1, "a fresh attempt count");
    assert_eq!(
        got[1].lease.fencing_token,
        FencingToken(2),
        "fencing tokens keep growing"
    );
    assert_eq!(ctx.engine.dlq_redrive(&ctx.q, Redrive::All).await.expect("redrive"), 0);
}

/// DLQ purge deletes the dead letters only and returns how many.
pub async fn dlq_purge_deletes_dead_letters(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let mut dead = Vec::new();
    for name in ["d1", "d2"] {
        let id = ctx.put(msg(name).with_max_attempts(1)).await;
        fail_once(&ctx, id, "bad").await;
        dead.push(id);
    }
    let live = ctx.put(msg("live")).await;
    assert_eq!(ctx.engine.dlq_purge(&ctx.q).await.expect("dlq_purge"), 2);
    for id in dead {
        let e = ctx.engine.get_message(&ctx.q, id).await.expect_err("purged");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
    assert_eq!(ctx.info(live).await.status, MessageStatus::Ready);
    assert_eq!(ctx.stats().await.dead_lettered, 0);
    assert_eq!(ctx.engine.dlq_purge(&ctx.q).await.expect("dlq_purge"), 0);
}
