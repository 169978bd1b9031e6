//! Per-message state documents: null at `v0`, versioned etags with compare-and-swap, a size
//! limit, a valid lease to touch them, survival across retries and dead-lettering.

use std::time::Duration;

use courier_core::{limits, ErrorKind, Etag, LeaseError, NackIntent, QueuePolicy, Receipt, Redrive, StateError};
use serde_json::{json, Value};

use super::retry::failure;
use super::{msg, unknown_id, Ctx};
use crate::harness::Harness;

async fn state_of(ctx: &Ctx, r: &Receipt) -> (Value, Etag) {
    let doc = ctx.engine.get_state(&ctx.q, r).await.expect("get_state");
    (doc.value, doc.etag)
}

/// A new message's document is `null` with etag `v0`.
pub async fn state_starts_null_at_v0(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    assert_eq!(state_of(&ctx, &d.receipt()).await, (Value::Null, Etag::from_version(0)));
}

/// Every write bumps the version; a write whose `if_match` is not the current etag fails
/// with `EtagMismatch` and changes nothing.
pub async fn state_cas_etag(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let r = ctx.take_id(id).await.receipt();
    let v1 = ctx
        .engine
        .put_state(&ctx.q, &r, json!({"step": 1}), None)
        .await
        .expect("put");
    assert_eq!(v1, Etag::from_version(1));
    let v2 = ctx
        .engine
        .put_state(&ctx.q, &r, json!({"step": 2}), Some(v1.clone()))
        .await;
    assert_eq!(v2.expect("put with the current etag"), Etag::from_version(2));
    let e = ctx
        .engine
        .put_state(&ctx.q, &r, json!({"step": 99}), Some(v1.clone()))
        .await;
    match e.expect_err("old etag") {
        StateError::EtagMismatch { expected, current } => {
            assert_eq!(expected, v1);
            assert_eq!(current, Etag::from_version(2));
        }
        other => panic!("expected EtagMismatch, got {other:?}"),
    }
    assert_eq!(state_of(&ctx, &r).await, (json!({"step": 2}), Etag::from_version(2)));
    let v3 = ctx
        .engine
        .put_state(&ctx.q, &r, json!("plain"), None)
        .await
        .expect("unconditional");
    assert_eq!(v3, Etag::from_version(3));
}

/// The document survives a failure nack and a lease expiry; ack deletes it with the message.
pub async fn state_survives_retry_deleted_on_ack(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    ctx.engine
        .put_state(&ctx.q, &d.receipt(), json!({"done": ["a"]}), None)
        .await
        .expect("put");
    ctx.engine
        .nack(&ctx.q, &d.receipt(), failure("x", Some(0)))
        .await
        .expect("nack");
    let d = ctx.take_id(id).await;
    assert_eq!(
        state_of(&ctx, &d.receipt()).await,
        (json!({"done": ["a"]}), Etag::from_version(1))
    );
    ctx.engine
        .put_state(&ctx.q, &d.receipt(), json!({"done": ["a", "b"]}), None)
        .await
        .expect("put");
    ctx.advance_ms(QueuePolicy::default().lease_ms);
    let d = ctx.take_id(id).await;
    assert_eq!(
        state_of(&ctx, &d.receipt()).await,
        (json!({"done": ["a", "b"]}), Etag::from_version(2))
    );
    ctx.engine.ack(&ctx.q, &d.receipt()).await.expect("ack");
    let e = ctx
        .engine
        .get_state(&ctx.q, &d.receipt())
        .await
        .expect_err("deleted with the message");
    assert!(
        matches!(e, StateError::Lease(LeaseError::MessageNotFound(_))),
        "got {e:?}"
    );
}

/// Dead letters keep payload, attributes and state; redrive brings the state back with them.
pub async fn state_survives_dead_letter_and_redrive(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let mut m = msg("payload").with_max_attempts(1);
    m.attributes.insert("k".into(), json!("v"));
    let id = ctx.put(m).await;
    let d = ctx.take_id(id).await;
    ctx.engine
        .put_state(&ctx.q, &d.receipt(), json!({"cursor": 7}), None)
        .await
        .expect("put");
    ctx.engine
        .nack(&ctx.q, &d.receipt(), failure("fatal", None))
        .await
        .expect("nack");
    let dead = ctx.info(id).await;
    assert_eq!(&dead.payload[..], b"payload");
    assert_eq!(dead.attributes.get("k"), Some(&json!("v")));
    assert_eq!(ctx.engine.dlq_redrive(&ctx.q, Redrive::All).await.expect("redrive"), 1);
    let d = ctx.take_id(id).await;
    assert_eq!(
        state_of(&ctx, &d.receipt()).await,
        (json!({"cursor": 7}), Etag::from_version(1))
    );
}

/// Reading or writing needs a valid lease: stale is `Stale`, unknown is `MessageNotFound`,
/// and a refused write changes nothing.
pub async fn state_needs_valid_lease(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let old = ctx.take_id(id).await.receipt();
    ctx.engine.put_state(&ctx.q, &old, json!(1), None).await.expect("put");
    ctx.advance_ms(QueuePolicy::default().lease_ms);
    let e = ctx.engine.get_state(&ctx.q, &old).await.expect_err("expired lease");
    assert_eq!(e.kind(), ErrorKind::LeaseConflict);
    let current = ctx.take_id(id).await.receipt();
    let e = ctx
        .engine
        .put_state(&ctx.q, &old, json!(2), None)
        .await
        .expect_err("stale lease");
    assert!(matches!(e, StateError::Lease(LeaseError::Stale(_))), "got {e:?}");
    let unknown = Receipt {
        message_id: unknown_id(),
        lease_id: current.lease_id,
    };
    let e = ctx
        .engine
        .get_state(&ctx.q, &unknown)
        .await
        .expect_err("unknown message");
    assert!(
        matches!(e, StateError::Lease(LeaseError::MessageNotFound(_))),
        "got {e:?}"
    );
    let e = ctx
        .engine
        .put_state(&ctx.q, &unknown, json!(3), None)
        .await
        .expect_err("unknown");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(state_of(&ctx, &current).await, (json!(1), Etag::from_version(1)));
    let defer = NackIntent::Defer { delay: Duration::ZERO };
    ctx.engine.nack(&ctx.q, &current, defer).await.expect("defer");
    let e = ctx.engine.get_state(&ctx.q, &current).await.expect_err("not in flight");
    assert_eq!(e.kind(), ErrorKind::LeaseConflict);
}

/// A document of exactly 256 KiB serialized is accepted; one byte more is refused.
pub async fn state_size_limit(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let r = ctx.take_id(id).await.receipt();
    let fits = json!("x".repeat(limits::STATE_BYTES_MAX - 2)); // plus two quotes
    let etag = ctx
        .engine
        .put_state(&ctx.q, &r, fits.clone(), None)
        .await
        .expect("at the limit");
    let too_big = json!("x".repeat(limits::STATE_BYTES_MAX - 1));
    let e = ctx
        .engine
        .put_state(&ctx.q, &r, too_big, None)
        .await
        .expect_err("over the limit");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(state_of(&ctx, &r).await, (fits, etag));
}
