//! The test database: a fresh schema per engine on the server named by
//! `COURIER_TEST_POSTGRES_URL`, dropped when the test is done.

#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of this module.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use courier_core::{Clock, NewMessage, QueueEngine, QueueRef, ReceiveOptions};
use courier_postgres::{PostgresEngine, PostgresOptions};
use courier_testkit::{Harness, TestEngine};

pub use courier_testkit::postgres::{unreachable, url, TestSchema};

/// Options for an engine on `schema` with `clock`.
pub fn options(schema: &TestSchema, clock: Arc<dyn Clock>) -> PostgresOptions {
    PostgresOptions::new(&url())
        .unwrap_or_else(|e| unreachable("invalid test database URL", e))
        .schema(&schema.name)
        .expect("valid schema name")
        .clock(clock)
        .connections_max(10)
}

/// The test database's URL with the connection parameter `param` (`name=value`, URL-encoded).
pub fn url_with(param: &str) -> String {
    let url = url();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

/// Opens an engine on `schema`; several engines on one schema behave like several nodes.
pub async fn open(schema: &TestSchema, clock: Arc<dyn Clock>) -> PostgresEngine {
    match PostgresEngine::open(options(schema, clock)).await {
        Ok(engine) => engine,
        Err(e) => unreachable("cannot open a PostgreSQL engine", e),
    }
}

/// Gives the conformance suite and the model test a fresh engine on a fresh schema each time.
pub struct PostgresHarness;

#[async_trait]
impl Harness for PostgresHarness {
    async fn engine(&self, clock: Arc<dyn Clock>) -> TestEngine {
        let schema = TestSchema::new();
        let engine = open(&schema, clock).await;
        TestEngine {
            engine: Arc::new(engine),
            guard: Box::new(schema),
        }
    }
}

/// Long-polls on `b` while `a` enqueues; true if `b` got that very message, after it was sent
/// and within a second, sooner than the slow recheck, so only a notification can have woken
/// it. `q` should have nothing ready: a receive that finds a message at once proves nothing,
/// and answers false.
pub async fn woken_across_nodes(a: &Arc<PostgresEngine>, b: &Arc<PostgresEngine>, q: &QueueRef) -> bool {
    let receiver = {
        let (b, q) = (b.clone(), q.clone());
        tokio::spawn(async move {
            let opts = ReceiveOptions {
                wait: Duration::from_secs(3),
                ..ReceiveOptions::default()
            };
            let got = b.receive(&q, &opts).await.map(|batch| {
                batch
                    .deliveries
                    .into_iter()
                    .map(|d| d.message.payload)
                    .collect::<Vec<_>>()
            });
            (got, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_at = Instant::now();
    let payload = format!("wake {}", uuid::Uuid::new_v4());
    if a.enqueue(q, vec![NewMessage::new(payload.clone())]).await.is_err() {
        return false;
    }
    match receiver.await.expect("receiver task") {
        (Ok(payloads), at) => {
            payloads.len() == 1
                && payloads[0] == payload.as_bytes()
                && at >= sent_at
                && at.duration_since(sent_at) < Duration::from_secs(1)
        }
        _ => false,
    }
}
