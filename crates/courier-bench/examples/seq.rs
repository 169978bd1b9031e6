//! Experiment: sequential enqueue/receive/ack in batches of 100 (no concurrency).
use courier_core::{NewMessage, QueueEngine, QueueRef, ReceiveOptions};
use std::time::Instant;
#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let e = courier_sqlite::SqliteEngine::open({
        let o = courier_sqlite::SqliteOptions::new(dir.path().join("x.db"));
        if std::env::var("NORMAL").is_ok() {
            o.synchronous(courier_sqlite::Synchronous::Normal)
        } else {
            o
        }
    })
    .await
    .unwrap();
    let q: QueueRef = "b/q".parse().unwrap();
    let n = 1000;
    let t = Instant::now();
    let (mut te, mut tr, mut ta) = (0.0, 0.0, 0.0);
    for _ in 0..n {
        let s = Instant::now();
        e.enqueue(&q, (0..100).map(|_| NewMessage::new(vec![b'x'; 256])).collect())
            .await
            .unwrap();
        te += s.elapsed().as_secs_f64();
        let s = Instant::now();
        let b = e
            .try_receive(
                &q,
                &ReceiveOptions {
                    max_messages: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        tr += s.elapsed().as_secs_f64();
        let s = Instant::now();
        let r: Vec<_> = b.deliveries.iter().map(|d| d.receipt()).collect();
        e.ack_many(&q, &r).await.unwrap();
        ta += s.elapsed().as_secs_f64();
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "{:.0} msg/s; per msg: enqueue {:.2}us receive {:.2}us ack {:.2}us",
        (n * 100) as f64 / el,
        te / (n as f64 * 100.0) * 1e6,
        tr / (n as f64 * 100.0) * 1e6,
        ta / (n as f64 * 100.0) * 1e6
    );
}
