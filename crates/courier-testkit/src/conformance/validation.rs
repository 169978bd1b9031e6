//! Input validation: bad names, durations, sizes and counts are refused as invalid input
//! before anything is stored, and the values at each limit are accepted.

use std::time::Duration;

use courier_core::{
    limits, ErrorKind, ExpiryAction, ListOptions, MessageStatus, NackIntent, Namespace, NewMessage, QueueName,
    QueuePolicy, QueueRef, ReceiveOptions,
};
use serde_json::json;

use super::{msg, Ctx};
use crate::harness::Harness;

const DAY_MS: u64 = 24 * 3600 * 1_000;

/// Names outside `[a-z0-9][a-z0-9._-]{0,127}` cannot be built or deserialized, so no engine
/// can be handed one.
pub async fn invalid_names_refused(_h: &dyn Harness) {
    let long_ok = "a".repeat(128);
    for good in ["orders", "0", "a.b_c-d", long_ok.as_str()] {
        assert!(QueueName::new(good).is_ok(), "{good:?} is valid");
        assert!(Namespace::new(good).is_ok(), "{good:?} is valid");
    }
    let too_long = "a".repeat(129);
    for bad in [
        "",
        "Orders",
        "-x",
        ".x",
        "_x",
        "a/b",
        "../x",
        "or ders",
        "ordérs",
        "q\0",
        too_long.as_str(),
    ] {
        assert!(QueueName::new(bad).is_err(), "{bad:?} is not a queue name");
        assert!(Namespace::new(bad).is_err(), "{bad:?} is not a namespace");
        let as_json = json!({"namespace": bad, "name": "q"});
        assert!(
            serde_json::from_value::<QueueRef>(as_json).is_err(),
            "{bad:?} does not deserialize"
        );
    }
}

/// Every invalid message field refuses the batch and creates nothing; limit values pass.
pub async fn invalid_message_fields_refused(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let long = "k".repeat(limits::TEXT_FIELD_BYTES_MAX + 1);
    let big_attr = "x".repeat(limits::ATTRIBUTES_BYTES_MAX);
    let mut bad: Vec<(&str, NewMessage)> = vec![
        (
            "delay over 15 days",
            msg("m").with_delay(Duration::from_millis(15 * DAY_MS + 1)),
        ),
        ("ttl 0", msg("m").with_ttl(Duration::ZERO)),
        (
            "ttl over 365 days",
            msg("m").with_ttl(Duration::from_millis(365 * DAY_MS + 1)),
        ),
        ("max_attempts 0", msg("m").with_max_attempts(0)),
        ("max_attempts 1001", msg("m").with_max_attempts(1_001)),
        ("empty key", msg("m").with_idempotency_key("")),
        ("long key", msg("m").with_idempotency_key(long.clone())),
        ("empty group", msg("m").with_ordering_group("")),
        ("long group", msg("m").with_ordering_group(long.clone())),
        ("long content type", msg("m").with_content_type(long.clone())),
        (
            "lease 99 ms",
            NewMessage {
                lease: Some(Duration::from_millis(99)),
                ..msg("m")
            },
        ),
        (
            "lease over 12 h",
            NewMessage {
                lease: Some(Duration::from_millis(12 * 3600 * 1_000 + 1)),
                ..msg("m")
            },
        ),
        (
            "payload over 16 MiB",
            NewMessage::new(vec![0u8; limits::PAYLOAD_BYTES_MAX + 1]),
        ),
    ];
    let mut attrs = msg("m");
    attrs.attributes.insert("a".into(), json!(big_attr));
    bad.push(("attributes over 64 KiB", attrs));
    for (what, m) in bad {
        let e = ctx.engine.enqueue(&ctx.q, vec![m]).await.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}");
    }
    let e = ctx
        .engine
        .stats(&ctx.q)
        .await
        .expect_err("no refused enqueue created the queue");
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let at_limits = NewMessage {
        lease: Some(limits::LEASE_MIN),
        ..msg("m")
            .with_delay(limits::DELAY_MAX)
            .with_ttl(Duration::from_millis(1))
            .with_max_attempts(limits::MAX_ATTEMPTS_MAX)
            .with_idempotency_key("k".repeat(limits::TEXT_FIELD_BYTES_MAX))
    };
    ctx.put(at_limits).await;
}

/// Receive options out of range are refused and lease nothing.
pub async fn invalid_receive_options_refused(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let bad = [
        (
            "max 0",
            ReceiveOptions {
                max_messages: 0,
                ..ReceiveOptions::default()
            },
        ),
        (
            "max 1001",
            ReceiveOptions {
                max_messages: 1_001,
                ..ReceiveOptions::default()
            },
        ),
        (
            "wait over 60 s",
            ReceiveOptions {
                wait: Duration::from_millis(60_001),
                ..ReceiveOptions::default()
            },
        ),
        (
            "lease 99 ms",
            ReceiveOptions {
                lease: Some(Duration::from_millis(99)),
                ..ReceiveOptions::default()
            },
        ),
        (
            "lease over 12 h",
            ReceiveOptions {
                lease: Some(limits::LEASE_MAX + Duration::from_millis(1)),
                ..ReceiveOptions::default()
            },
        ),
    ];
    for (what, opts) in bad {
        let e = ctx.engine.try_receive(&ctx.q, &opts).await.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "try_receive {what}");
        let e = ctx.engine.receive(&ctx.q, &opts).await.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "receive {what}");
    }
    assert_eq!(ctx.info(id).await.status, MessageStatus::Ready, "nothing was leased");
    let most = ReceiveOptions {
        max_messages: limits::RECEIVE_BATCH_MAX,
        lease: Some(limits::LEASE_MAX),
        ..ReceiveOptions::default()
    };
    let got = ctx
        .engine
        .try_receive(&ctx.q, &most)
        .await
        .expect("limits are accepted");
    assert_eq!(got.deliveries.len(), 1);
}

/// Extend and nack durations out of range are refused and leave the lease as it was.
pub async fn invalid_lease_durations_refused(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let id = ctx.put(msg("m")).await;
    let d = ctx.take_id(id).await;
    let r = d.receipt();
    for by in [Duration::from_millis(99), limits::LEASE_MAX + Duration::from_millis(1)] {
        let e = ctx
            .engine
            .extend(&ctx.q, &r, by)
            .await
            .expect_err("extend out of range");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "extend by {by:?}");
    }
    let too_late = limits::DELAY_MAX + Duration::from_millis(1);
    let intents = [
        NackIntent::Failure {
            error: "x".into(),
            delay: Some(too_late),
        },
        NackIntent::Defer { delay: too_late },
    ];
    for intent in intents {
        let e = ctx
            .engine
            .nack(&ctx.q, &r, intent)
            .await
            .expect_err("nack delay out of range");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    let info = ctx.info(id).await;
    assert_eq!(
        (info.status, info.failures, info.visible_at),
        (MessageStatus::InFlight, 0, d.lease.deadline)
    );
    let lease = ctx
        .engine
        .extend(&ctx.q, &r, limits::LEASE_MIN)
        .await
        .expect("100 ms is accepted");
    assert_eq!(lease.lease_id, d.lease.lease_id);
    ctx.engine
        .nack(
            &ctx.q,
            &r,
            NackIntent::Defer {
                delay: limits::DELAY_MAX,
            },
        )
        .await
        .expect("15 days accepted");
}

/// Policies that break a limit are refused; the queue is not created or keeps its policy.
pub async fn invalid_policy_refused(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    let d = QueuePolicy::default;
    let bad = [
        ("lease 0", QueuePolicy { lease_ms: 0, ..d() }),
        ("lease 99", QueuePolicy { lease_ms: 99, ..d() }),
        ("max_attempts 0", QueuePolicy { max_attempts: 0, ..d() }),
        (
            "max_attempts 1001",
            QueuePolicy {
                max_attempts: 1_001,
                ..d()
            },
        ),
        (
            "initial over max",
            QueuePolicy {
                backoff_initial_ms: 2_000,
                backoff_max_ms: 1_000,
                ..d()
            },
        ),
        (
            "multiplier 0",
            QueuePolicy {
                backoff_multiplier: 0,
                ..d()
            },
        ),
        (
            "multiplier 101",
            QueuePolicy {
                backoff_multiplier: 101,
                ..d()
            },
        ),
        ("ttl 0", QueuePolicy { ttl_ms: Some(0), ..d() }),
        (
            "dedup over 7 days",
            QueuePolicy {
                dedup_window_ms: 7 * DAY_MS + 1,
                ..d()
            },
        ),
    ];
    for (what, p) in &bad {
        let e = ctx.engine.set_policy(&ctx.q, p.clone()).await.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}");
    }
    assert_eq!(
        ctx.engine.policy(&ctx.q).await.expect_err("not created").kind(),
        ErrorKind::NotFound
    );
    let custom = QueuePolicy {
        on_expire: ExpiryAction::Drop,
        max_attempts: 1_000,
        dedup_window_ms: 7 * DAY_MS,
        ..d()
    };
    ctx.engine
        .set_policy(&ctx.q, custom.clone())
        .await
        .expect("limits are accepted");
    for (what, p) in bad {
        assert!(ctx.engine.set_policy(&ctx.q, p).await.is_err(), "{what}");
    }
    assert_eq!(
        ctx.engine.policy(&ctx.q).await.expect("policy"),
        custom,
        "unchanged by refusals"
    );
}

/// Page sizes outside 1..=1000 are refused by both listings.
pub async fn invalid_list_options_refused(h: &dyn Harness) {
    let ctx = Ctx::new(h).await;
    ctx.put(msg("m")).await;
    for limit in [0, limits::LIST_PAGE_MAX + 1] {
        let opts = ListOptions { after: None, limit };
        let e = ctx.engine.list_messages(&ctx.q, opts).await.expect_err("bad limit");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "list_messages limit {limit}");
        let e = ctx.engine.dlq_list(&ctx.q, opts).await.expect_err("bad limit");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "dlq_list limit {limit}");
    }
    let most = ListOptions {
        after: None,
        limit: limits::LIST_PAGE_MAX,
    };
    assert_eq!(
        ctx.engine
            .list_messages(&ctx.q, most)
            .await
            .expect("limit 1000")
            .items
            .len(),
        1
    );
}
