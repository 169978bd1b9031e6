//! Enqueue: what is stored, when it becomes visible, which defaults apply, id order, and
//! that a batch is all-or-nothing.

use std::time::Duration;

use courier_core::{ErrorKind, ListOptions, MessageStatus, QueuePolicy};
use serde_json::json;

use super::{at, msg, queue, Ctx};
use crate::harness::Harness;

/// A message comes back from `get_message` exactly as sent, ready, with fresh counters.
pub async fn enqueue_stores_message_as_sent(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let mut m = msg("hello").with_content_type("text/plain");
    m.correlation_id = Some("req-7".into());
    m.attributes.insert("tenant".into(), json!("acme"));
    m.attributes.insert("n".into(), json!(3));
    let id = ctx.put(m).await;
    let info = ctx.info(id).await;
    assert_eq!(info.id, id);
    assert_eq!(info.status, MessageStatus::Ready);
    assert_eq!(&info.payload[..], b"hello");
    assert_eq!(info.content_type.as_deref(), Some("text/plain"));
    assert_eq!(info.correlation_id.as_deref(), Some("req-7"));
    assert_eq!(info.attributes.get("tenant"), Some(&json!("acme")));
    assert_eq!(info.attributes.get("n"), Some(&json!(3)));
    assert_eq!(info.ordering_group, None);
    assert_eq!(info.enqueued_at, t, "enqueued_at is the engine clock's time");
    assert_eq!(info.visible_at, t, "no delay: visible at once");
    assert_eq!(info.expires_at, None, "no TTL anywhere: never expires");
    assert_eq!((info.failures, info.deliveries), (0, 0));
    assert_eq!(info.max_attempts, QueuePolicy::default().max_attempts);
    assert_eq!(info.last_error, None);
    assert_eq!(info.dead_letter_reason, None);
}

/// The first enqueue creates the queue with the default policy.
pub async fn enqueue_creates_queue_with_default_policy(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let err = ctx
        .engine
        .policy(&ctx.q)
        .await
        .expect_err("no queue before the first enqueue");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(ctx.engine.list_queues(None).await.expect("list_queues").is_empty());
    ctx.put(msg("a")).await;
    assert_eq!(ctx.engine.policy(&ctx.q).await.expect("policy"), QueuePolicy::default());
    let queues = ctx.engine.list_queues(None).await.expect("list_queues");
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].queue, ctx.q);
    assert_eq!(queues[0].policy, QueuePolicy::default());
}

/// Ids are UUIDv7 stamped with the engine clock, strictly increasing in enqueue order, even
/// within one millisecond and within one batch.
pub async fn ids_time_ordered(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let mut minted = Vec::new();
    for round in 0..3 {
        for _ in 0..20 {
            minted.push((ctx.put(msg("single")).await, ctx.now()));
        }
        let batch = ctx.put_raw((0..5).map(|_| msg("batch")).collect()).await;
        minted.extend(batch.iter().map(|e| (e.id, ctx.now())));
        ctx.advance_ms(1_000 + round);
    }
    for pair in minted.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "ids must strictly increase: {} then {}",
            pair[0].0,
            pair[1].0
        );
    }
    for (id, t) in &minted {
        assert_eq!(id.0.get_version_num(), 7, "ids are UUIDv7");
        let (secs, nanos) = id.0.get_timestamp().expect("v7 has a timestamp").to_unix();
        let ms = i64::try_from(secs).expect("secs") * 1_000 + i64::from(nanos / 1_000_000);
        assert_eq!(
            ms,
            t.as_millis(),
            "id {id} carries the enqueue time of the engine clock"
        );
    }
    let listed = ctx
        .engine
        .list_messages(
            &ctx.q,
            ListOptions {
                after: None,
                limit: 1_000,
            },
        )
        .await
        .expect("list");
    let listed: Vec<_> = listed.items.iter().map(|m| m.id).collect();
    let expected: Vec<_> = minted.iter().map(|(id, _)| *id).collect();
    assert_eq!(listed, expected, "listing is in enqueue order");
}

/// A batch's results come in the order of its messages, each stored with its own payload.
pub async fn batch_results_follow_message_order(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let out = ctx.put_raw(vec![msg("first"), msg("second"), msg("third")]).await;
    assert_eq!(out.len(), 3);
    for (e, payload) in out.iter().zip(["first", "second", "third"]) {
        assert!(!e.duplicate);
        assert_eq!(&ctx.info(e.id).await.payload[..], payload.as_bytes());
    }
}

/// A delayed message is `delayed` with `visible_at = T + delay` and is delivered at that time,
/// not a millisecond earlier.
pub async fn delay_makes_message_visible_later(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let t = ctx.now();
    let id = ctx.put(msg("later").with_delay(Duration::from_millis(5_000))).await;
    let info = ctx.info(id).await;
    assert_eq!(info.status, MessageStatus::Delayed);
    assert_eq!(info.visible_at, at(t, 5_000));
    assert_eq!(ctx.stats().await.delayed, 1);
    ctx.advance_ms(4_999);
    ctx.assert_nothing_ready().await;
    ctx.advance_ms(1);
    let d = ctx.take_id(id).await;
    assert_eq!(d.lease.attempt, 1);
}

/// TTL and max attempts come from the message, else the policy; without either there is no
/// expiry.
pub async fn message_overrides_beat_policy_defaults(h: &dyn Harness) {
    let policy = QueuePolicy {
        ttl_ms: Some(60_000),
        max_attempts: 3,
        ..QueuePolicy::default()
    };
    let ctx = Ctx::with_policy(h, policy).await;
    let t = ctx.now();
    let plain = ctx.put(msg("plain")).await;
    let custom = ctx
        .put(
            msg("custom")
                .with_ttl(Duration::from_millis(1_000))
                .with_max_attempts(7),
        )
        .await;
    let plain = ctx.info(plain).await;
    assert_eq!(plain.expires_at, Some(at(t, 60_000)), "policy TTL applies");
    assert_eq!(plain.max_attempts, 3, "policy max_attempts applies");
    let custom = ctx.info(custom).await;
    assert_eq!(custom.expires_at, Some(at(t, 1_000)), "message TTL wins");
    assert_eq!(custom.max_attempts, 7, "message max_attempts wins");

    let other = queue("default", "no-ttl");
    let out = ctx.engine.enqueue(&other, vec![msg("x")]).await.expect("enqueue");
    let info = ctx.engine.get_message(&other, out[0].id).await.expect("get");
    assert_eq!(info.expires_at, None);
}

/// One invalid message refuses the whole batch: nothing is added, no queue is created.
pub async fn batch_enqueue_is_atomic(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let bad_batch = || {
        vec![
            msg("ok-1").with_idempotency_key("k1"),
            msg("ok-2").with_ordering_group("g"),
            msg("bad").with_ttl(Duration::ZERO),
        ]
    };
    let err = ctx
        .engine
        .enqueue(&ctx.q, bad_batch())
        .await
        .expect_err("ttl 0 is invalid");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = ctx
        .engine
        .policy(&ctx.q)
        .await
        .expect_err("a refused batch creates no queue");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let existing = ctx.put(msg("existing")).await;
    let err = ctx
        .engine
        .enqueue(&ctx.q, bad_batch())
        .await
        .expect_err("still invalid");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let page = ctx
        .engine
        .list_messages(&ctx.q, ListOptions::default())
        .await
        .expect("list");
    let ids: Vec<_> = page.items.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![existing], "nothing of the refused batch was added");
    // The key of the refused batch was not recorded either.
    let again = ctx.put_raw(vec![msg("ok-1").with_idempotency_key("k1")]).await;
    assert!(!again[0].duplicate, "a refused batch records no idempotency key");
}

/// A batch holds 1 to 1000 messages.
pub async fn batch_size_is_1_to_1000(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let err = ctx.engine.enqueue(&ctx.q, vec![]).await.expect_err("empty batch");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let too_many = (0..1_001).map(|i| msg(&i.to_string())).collect();
    let err = ctx.engine.enqueue(&ctx.q, too_many).await.expect_err("1001 messages");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let most = (0..1_000).map(|i| msg(&i.to_string())).collect();
    let out = ctx.put_raw(most).await;
    assert_eq!(out.len(), 1_000);
    assert_eq!(ctx.stats().await.ready, 1_000);
}
