//! How a conformance suite gets engines: an engine crate implements [`Harness`] once, and
//! every suite function asks it for a fresh, empty, isolated engine driven by a given clock.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use courier_core::{Clock, QueueEngine};

/// A fresh engine plus whatever must outlive it (a temp dir, a schema to drop).
pub struct TestEngine {
    /// The engine under test. Declared first so it drops before `guard`.
    pub engine: Arc<dyn QueueEngine>,
    /// Keeps the engine's storage alive until the test ends.
    pub guard: Box<dyn Any + Send + Sync>,
}

impl TestEngine {
    /// An engine that needs nothing kept alive beside it.
    pub fn unguarded(engine: Arc<dyn QueueEngine>) -> Self {
        Self {
            engine,
            guard: Box::new(()),
        }
    }
}

/// Makes engines for the conformance suite and the model test.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A fresh, empty engine, isolated from every other one, that reads time from `clock`.
    async fn engine(&self, clock: Arc<dyn Clock>) -> TestEngine;
}
