//! Long polls, in real time on a `SystemClock` engine: a waiting receive is woken by commits
//! that may make a message ready (enqueue, nack, ack in a group) and by due times, and times
//! out empty after its wait. Bounds are loose (seconds) so a slow machine does not flake.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_core::{
    FencingToken, NackIntent, QueueEngine, QueuePolicy, QueueRef, ReceiveBatch, ReceiveOptions, SystemClock,
};

use super::{ids, msg, queue};
use crate::harness::Harness;

/// How long the receivers here are willing to wait.
const WAIT: Duration = Duration::from_secs(5);
/// A woken receiver must return well before `WAIT`.
const QUICK: Duration = Duration::from_secs(2);

struct Live {
    engine: Arc<dyn QueueEngine>,
    q: QueueRef,
    _guard: Box<dyn Any + Send + Sync>,
}

async fn live(h: &dyn Harness) -> Live {
    let te = h.engine(Arc::new(SystemClock)).await;
    let q = queue("default", "polled");
    te.engine
        .set_policy(&q, QueuePolicy::default())
        .await
        .expect("set_policy");
    Live {
        engine: te.engine,
        q,
        _guard: te.guard,
    }
}

fn waiting(wait: Duration) -> ReceiveOptions {
    ReceiveOptions {
        wait,
        ..ReceiveOptions::default()
    }
}

/// Starts a long poll on another task; it reports the batch and how long it took.
fn spawn_receive(l: &Live, wait: Duration) -> tokio::task::JoinHandle<(ReceiveBatch, Duration)> {
    let engine = Arc::clone(&l.engine);
    let q = l.q.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let batch = engine.receive(&q, &waiting(wait)).await.expect("receive");
        (batch, started.elapsed())
    })
}

async fn finish(task: tokio::task::JoinHandle<(ReceiveBatch, Duration)>) -> (ReceiveBatch, Duration) {
    tokio::time::timeout(WAIT * 2, task)
        .await
        .expect("the long poll ended")
        .expect("receiver task")
}

/// An enqueue wakes a waiting receiver at once.
pub async fn long_poll_woken_by_enqueue(h: &dyn Harness) {
    let l = live(h).await;
    let task = spawn_receive(&l, WAIT);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = l.engine.enqueue(&l.q, vec![msg("wake")]).await.expect("enqueue");
    let (batch, took) = finish(task).await;
    assert_eq!(ids(&batch.deliveries), vec![out[0].id]);
    assert!(took < QUICK, "woken by the enqueue, took {took:?}");
}

/// A delayed message wakes a waiting receiver when it becomes due, without another commit.
pub async fn long_poll_woken_when_delayed_message_due(h: &dyn Harness) {
    let l = live(h).await;
    let started = Instant::now();
    let m = msg("later").with_delay(Duration::from_millis(300));
    let out = l.engine.enqueue(&l.q, vec![m]).await.expect("enqueue");
    let task = spawn_receive(&l, WAIT);
    let (batch, _) = finish(task).await;
    let took = started.elapsed();
    assert_eq!(ids(&batch.deliveries), vec![out[0].id]);
    assert!(
        took >= Duration::from_millis(290),
        "not before it was due, took {took:?}"
    );
    assert!(took < QUICK, "woken when due, took {took:?}");
}

/// A lease running out wakes a waiting receiver, which gets the message again.
pub async fn long_poll_woken_when_lease_expires(h: &dyn Harness) {
    let l = live(h).await;
    let out = l.engine.enqueue(&l.q, vec![msg("m")]).await.expect("enqueue");
    let opts = ReceiveOptions {
        lease: Some(Duration::from_millis(300)),
        ..ReceiveOptions::default()
    };
    let first = l.engine.try_receive(&l.q, &opts).await.expect("receive");
    assert_eq!(ids(&first.deliveries), vec![out[0].id]);
    let (batch, took) = finish(spawn_receive(&l, WAIT)).await;
    assert_eq!(ids(&batch.deliveries), vec![out[0].id]);
    assert_eq!(batch.deliveries[0].lease.fencing_token, FencingToken(2));
    assert!(took < QUICK, "woken at the deadline, took {took:?}");
}

/// A nack that makes a message ready wakes a waiting receiver.
pub async fn long_poll_woken_by_nack(h: &dyn Harness) {
    let l = live(h).await;
    let out = l.engine.enqueue(&l.q, vec![msg("m")]).await.expect("enqueue");
    let first = l
        .engine
        .try_receive(&l.q, &ReceiveOptions::default())
        .await
        .expect("receive");
    let task = spawn_receive(&l, WAIT);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let defer = NackIntent::Defer { delay: Duration::ZERO };
    l.engine
        .nack(&l.q, &first.deliveries[0].receipt(), defer)
        .await
        .expect("nack");
    let (batch, took) = finish(task).await;
    assert_eq!(ids(&batch.deliveries), vec![out[0].id]);
    assert!(took < QUICK, "woken by the nack, took {took:?}");
}

/// Acking the head of an ordering group wakes a receiver waiting for the next message.
pub async fn long_poll_woken_by_ack_unblocking_group(h: &dyn Harness) {
    let l = live(h).await;
    let batch = vec![msg("a1").with_ordering_group("g"), msg("a2").with_ordering_group("g")];
    let out = l.engine.enqueue(&l.q, batch).await.expect("enqueue");
    let first = l
        .engine
        .try_receive(&l.q, &ReceiveOptions::default())
        .await
        .expect("receive");
    assert_eq!(ids(&first.deliveries), vec![out[0].id]);
    let task = spawn_receive(&l, WAIT);
    tokio::time::sleep(Duration::from_millis(100)).await;
    l.engine.ack(&l.q, &first.deliveries[0].receipt()).await.expect("ack");
    let (batch, took) = finish(task).await;
    assert_eq!(ids(&batch.deliveries), vec![out[1].id]);
    assert!(took < QUICK, "woken by the ack, took {took:?}");
}

/// With nothing to deliver a long poll returns empty after its wait, not before; on an
/// unknown queue too.
pub async fn long_poll_times_out_empty(h: &dyn Harness) {
    let l = live(h).await;
    let (batch, took) = finish(spawn_receive(&l, Duration::from_millis(300))).await;
    assert!(batch.deliveries.is_empty());
    assert!(
        took >= Duration::from_millis(290),
        "waited the full wait, took {took:?}"
    );
    assert!(took < QUICK, "gave up after the wait, took {took:?}");
    let unknown = queue("default", "never-created");
    let started = Instant::now();
    let batch = l
        .engine
        .receive(&unknown, &waiting(Duration::from_millis(200)))
        .await
        .expect("receive");
    assert!(batch.deliveries.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(190));
}

/// A ready message is returned at once, whatever the wait.
pub async fn long_poll_returns_at_once_when_ready(h: &dyn Harness) {
    let l = live(h).await;
    l.engine.enqueue(&l.q, vec![msg("m")]).await.expect("enqueue");
    let (batch, took) = finish(spawn_receive(&l, WAIT)).await;
    assert_eq!(batch.deliveries.len(), 1);
    assert!(took < QUICK, "took {took:?}");
}

/// Stats count the receivers long-polling the queue, and stop counting them when they return.
pub async fn waiting_receivers_in_stats(h: &dyn Harness) {
    let l = live(h).await;
    let tasks = [spawn_receive(&l, WAIT), spawn_receive(&l, WAIT)];
    let deadline = Instant::now() + QUICK;
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = l.engine.stats(&l.q).await.expect("stats").waiting_receivers;
        if seen == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 2, "both long polls are counted while waiting");
    l.engine.enqueue(&l.q, vec![msg("a"), msg("b")]).await.expect("enqueue");
    for t in tasks {
        let (batch, took) = finish(t).await;
        assert_eq!(batch.deliveries.len(), 1);
        assert!(took < QUICK, "took {took:?}");
    }
    assert_eq!(l.engine.stats(&l.q).await.expect("stats").waiting_receivers, 0);
}
