//! Idempotent enqueue: a key seen within the queue's dedup window adds nothing and returns the
//! first id; the window runs from the first enqueue; 0 disables it; keys are per queue.

use courier_core::{ListOptions, QueuePolicy};

use super::{msg, queue, Ctx};
use crate::harness::Harness;

fn keyed(payload: &str, key: &str) -> courier_core::NewMessage {
    msg(payload).with_idempotency_key(key)
}

async fn live_count(ctx: &Ctx) -> usize {
    let page = ctx
        .engine
        .list_messages(&ctx.q, ListOptions::default())
        .await
        .expect("list");
    page.items.len()
}

/// A repeat within the window returns the first id with `duplicate: true` and adds nothing.
pub async fn idempotent_enqueue_within_window_returns_first_id(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let first = ctx.put(keyed("first", "k")).await;
    ctx.advance_ms(QueuePolicy::default().dedup_window_ms - 1);
    let again = ctx.put_raw(vec![keyed("second", "k")]).await;
    assert_eq!(again[0].id, first);
    assert!(again[0].duplicate);
    assert_eq!(live_count(&ctx).await, 1);
    assert_eq!(
        &ctx.info(first).await.payload[..],
        b"first",
        "the first payload is kept"
    );
}

/// The window runs from the first enqueue and is not extended by duplicates; after it a
/// key starts a new window with a new message.
pub async fn dedup_window_runs_from_first_enqueue(h: &dyn Harness) {
    let policy = QueuePolicy {
        dedup_window_ms: 10_000,
        ..QueuePolicy::default()
    };
    let ctx = Ctx::with_policy(h, policy).await;
    let first = ctx.put(keyed("1", "k")).await;
    ctx.advance_ms(6_000);
    let dup = ctx.put_raw(vec![keyed("2", "k")]).await;
    assert_eq!((dup[0].id, dup[0].duplicate), (first, true));
    ctx.advance_ms(4_000);
    let fresh = ctx.put_raw(vec![keyed("3", "k")]).await;
    assert!(!fresh[0].duplicate, "the window ended 10 s after the first enqueue");
    assert_ne!(fresh[0].id, first);
    ctx.advance_ms(5_000);
    let dup = ctx.put_raw(vec![keyed("4", "k")]).await;
    assert_eq!((dup[0].id, dup[0].duplicate), (fresh[0].id, true), "a new window began");
    assert_eq!(live_count(&ctx).await, 2);
}

/// A window of 0 disables dedup.
pub async fn dedup_window_zero_disables_dedup(h: &dyn Harness) {
    let policy = QueuePolicy {
        dedup_window_ms: 0,
        ..QueuePolicy::default()
    };
    let ctx = Ctx::with_policy(h, policy).await;
    let out = ctx.put_raw(vec![keyed("1", "k"), keyed("2", "k")]).await;
    let again = ctx.put_raw(vec![keyed("3", "k")]).await;
    assert!(out.iter().chain(&again).all(|e| !e.duplicate));
    assert_eq!(live_count(&ctx).await, 3);
}

/// A key repeated inside one batch maps to the batch's first message with that key.
pub async fn duplicate_key_in_one_batch_maps_to_first(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let out = ctx
        .put_raw(vec![
            keyed("a", "k"),
            keyed("b", "k"),
            keyed("c", "j"),
            keyed("d", "k"),
            msg("e"),
        ])
        .await;
    let flags: Vec<bool> = out.iter().map(|e| e.duplicate).collect();
    assert_eq!(flags, [false, true, false, true, false]);
    assert_eq!(out[1].id, out[0].id);
    assert_eq!(out[3].id, out[0].id);
    assert!(out[0].id < out[2].id && out[2].id < out[4].id);
    assert_eq!(live_count(&ctx).await, 3);
}

/// Keys are remembered per queue: the same key on another queue is a new message.
pub async fn dedup_keys_are_per_queue(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let first = ctx.put(keyed("a", "k")).await;
    let other = queue("default", "other");
    let out = ctx
        .engine
        .enqueue(&other, vec![keyed("a", "k")])
        .await
        .expect("enqueue");
    assert!(!out[0].duplicate);
    assert_ne!(out[0].id, first);
    let other_ns = queue("elsewhere", "orders");
    let out = ctx
        .engine
        .enqueue(&other_ns, vec![keyed("a", "k")])
        .await
        .expect("enqueue");
    assert!(!out[0].duplicate, "same queue name, other namespace");
}

/// Idempotency records outlive the message: after ack and after purge a repeat is still a
/// duplicate of the first id.
pub async fn dedup_records_outlive_ack_and_purge(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let acked = ctx.put(keyed("a", "k")).await;
    let d = ctx.take_id(acked).await;
    ctx.engine.ack(&ctx.q, &d.receipt()).await.expect("ack");
    let again = ctx.put_raw(vec![keyed("a", "k")]).await;
    assert_eq!((again[0].id, again[0].duplicate), (acked, true));
    let purged = ctx.put(keyed("b", "j")).await;
    assert_eq!(ctx.engine.purge(&ctx.q).await.expect("purge"), 1);
    let again = ctx.put_raw(vec![keyed("b", "j")]).await;
    assert_eq!((again[0].id, again[0].duplicate), (purged, true));
    assert_eq!(live_count(&ctx).await, 0);
}
