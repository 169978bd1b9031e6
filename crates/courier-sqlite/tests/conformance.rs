//! The shared conformance suite of `courier-testkit` and its model-based property test, run
//! against the SQLite engine: each test gets its own database file in its own temp dir.

use std::sync::Arc;

use async_trait::async_trait;
use courier_core::Clock;
use courier_sqlite::{SqliteEngine, SqliteOptions};
use courier_testkit::{Harness, TestEngine};

/// Opens a fresh SQLite engine in a new temp dir, kept alive by the returned guard.
pub struct SqliteHarness;

#[async_trait]
impl Harness for SqliteHarness {
    async fn engine(&self, clock: Arc<dyn Clock>) -> TestEngine {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = SqliteOptions::new(dir.path().join("courier.db")).clock(clock);
        let engine = SqliteEngine::open(opts).await.expect("open sqlite engine");
        TestEngine {
            engine: Arc::new(engine),
            guard: Box::new(dir),
        }
    }
}

courier_testkit::conformance_tests!(SqliteHarness);
courier_testkit::model_tests!(SqliteHarness);
