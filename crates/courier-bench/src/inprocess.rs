//! End-to-end runs against an engine in this process: producers enqueue, consumers receive
//! and ack, and every received payload's stamp feeds the latency histogram.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_core::{NewMessage, QueueEngine, QueueRef, ReceiveOptions};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::latency::{age_of, histogram, stamped_payload, Percentiles};
use crate::{BenchError, Throughput};

/// Shape of one throughput run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) messages: usize,
    pub(crate) batch: usize,
    pub(crate) producers: usize,
    pub(crate) consumers: usize,
    pub(crate) payload_bytes: usize,
}

fn queue() -> QueueRef {
    QueueRef::parse("bench", "throughput").unwrap_or_else(|_| unreachable!("constant names are valid"))
}

/// Sends `shape.messages` through the engine as fast as it goes.
pub(crate) async fn throughput(engine: Arc<dyn QueueEngine>, shape: Shape) -> Result<Throughput, BenchError> {
    let started = Instant::now();
    let received = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for p in 0..shape.producers {
        let count = shape.messages / shape.producers + usize::from(p < shape.messages % shape.producers);
        tasks.spawn(produce(engine.clone(), shape, count));
    }
    for _ in 0..shape.consumers {
        tasks.spawn(consume(engine.clone(), shape, received.clone()));
    }
    let mut latencies = histogram();
    while let Some(joined) = tasks.join_next().await {
        let h = joined.map_err(|e| BenchError::Task(e.to_string()))??;
        latencies.add(&h).map_err(|e| BenchError::Task(e.to_string()))?;
    }
    let elapsed = started.elapsed();
    Ok(Throughput {
        messages: shape.messages,
        seconds: elapsed.as_secs_f64(),
        msgs_per_sec: shape.messages as f64 / elapsed.as_secs_f64(),
        latency: Percentiles::of(&latencies),
    })
}

async fn produce(engine: Arc<dyn QueueEngine>, shape: Shape, count: usize) -> Result<Histogram<u64>, BenchError> {
    let q = queue();
    let mut sent = 0;
    while sent < count {
        let n = shape.batch.min(count - sent);
        let batch = (0..n)
            .map(|_| NewMessage::new(stamped_payload(shape.payload_bytes)))
            .collect();
        engine.enqueue(&q, batch).await?;
        sent += n;
    }
    Ok(histogram())
}

async fn consume(
    engine: Arc<dyn QueueEngine>,
    shape: Shape,
    received: Arc<AtomicUsize>,
) -> Result<Histogram<u64>, BenchError> {
    let q = queue();
    let mut latencies = histogram();
    let opts = ReceiveOptions {
        max_messages: shape.batch,
        wait: Duration::from_millis(100),
        lease: None,
    };
    while received.load(Ordering::Relaxed) < shape.messages {
        let batch = engine.receive(&q, &opts).await?;
        if batch.deliveries.is_empty() {
            continue;
        }
        for d in &batch.deliveries {
            if let Some(age) = age_of(&d.message.payload) {
                latencies.saturating_record(u64::try_from(age.as_micros()).unwrap_or(u64::MAX));
            }
        }
        let receipts: Vec<_> = batch.deliveries.iter().map(|d| d.receipt()).collect();
        for result in engine.ack_many(&q, &receipts).await? {
            result?;
        }
        received.fetch_add(receipts.len(), Ordering::Relaxed);
    }
    Ok(latencies)
}

/// Enqueues single messages at `rate` per second for `duration` on the first node while
/// `consumers` long-poll the second (the same engine on a single-node database); returns the
/// enqueue-to-receive latency.
pub(crate) async fn paced_latency(
    [producer_node, consumer_node]: [Arc<dyn QueueEngine>; 2],
    rate: u32,
    duration: Duration,
    consumers: usize,
    payload_bytes: usize,
) -> Result<Percentiles, BenchError> {
    let total = usize::try_from(u64::from(rate) * duration.as_secs()).unwrap_or(usize::MAX);
    let received = Arc::new(AtomicUsize::new(0));
    let shape = Shape {
        messages: total,
        batch: 1,
        producers: 1,
        consumers,
        payload_bytes,
    };
    let mut tasks = JoinSet::new();
    for _ in 0..consumers {
        tasks.spawn(consume(consumer_node.clone(), shape, received.clone()));
    }
    let q = queue();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..total {
        ticker.tick().await;
        producer_node
            .enqueue(&q, vec![NewMessage::new(stamped_payload(payload_bytes))])
            .await?;
    }
    let mut latencies = histogram();
    while let Some(joined) = tasks.join_next().await {
        let h = joined.map_err(|e| BenchError::Task(e.to_string()))??;
        latencies.add(&h).map_err(|e| BenchError::Task(e.to_string()))?;
    }
    Ok(Percentiles::of(&latencies))
}
