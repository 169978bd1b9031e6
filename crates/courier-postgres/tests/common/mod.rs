//! The test database: a fresh schema per engine on the server named by
//! `COURIER_TEST_POSTGRES_URL`, dropped when the test is done.

#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of this module.

use std::sync::Arc;

use async_trait::async_trait;
use courier_core::Clock;
use courier_postgres::{PostgresEngine, PostgresOptions};
use courier_testkit::{Harness, TestEngine};
use sqlx::{Connection, Executor, PgConnection};

/// Where the tests find PostgreSQL unless told otherwise.
pub const URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The environment variable that overrides [`URL_DEFAULT`].
pub const URL_ENV: &str = "COURIER_TEST_POSTGRES_URL";

/// The test server's URL.
pub fn url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| URL_DEFAULT.to_owned())
}

fn unreachable(what: &str, error: impl std::fmt::Display) -> ! {
    panic!(
        "{what}: {error}\n\
         The PostgreSQL tests need a server at {} (set {URL_ENV} to use another). Start the local one \
         with `pg_ctlcluster $(ls /etc/postgresql) main start` (scripts/services.sh does it for \
         scripts/test), or any server with trust auth for user postgres and a database `test`.",
        url()
    )
}

/// A schema of its own, dropped (with everything in it) when this is dropped.
pub struct TestSchema {
    pub name: String,
}

impl TestSchema {
    /// A fresh, unused schema name; the engine creates the schema when it opens.
    pub fn new() -> Self {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        Self {
            name: format!("courier_t_{}", &hex[..16]),
        }
    }

    /// Options for an engine on this schema with `clock`.
    pub fn options(&self, clock: Arc<dyn Clock>) -> PostgresOptions {
        PostgresOptions::new(&url())
            .unwrap_or_else(|e| unreachable("invalid test database URL", e))
            .schema(&self.name)
            .expect("valid schema name")
            .clock(clock)
            .connections_max(10)
    }

    /// Opens an engine on this schema; several engines on one schema behave like several nodes.
    pub async fn open(&self, clock: Arc<dyn Clock>) -> PostgresEngine {
        match PostgresEngine::open(self.options(clock)).await {
            Ok(engine) => engine,
            Err(e) => unreachable("cannot open a PostgreSQL engine", e),
        }
    }

    /// A plain connection whose search path is this schema, for tests that look underneath.
    pub async fn connect(&self) -> PgConnection {
        let mut conn = PgConnection::connect(&url())
            .await
            .unwrap_or_else(|e| unreachable("cannot connect to PostgreSQL", e));
        conn.execute(format!("SET search_path TO {}", self.name).as_str())
            .await
            .expect("set search_path");
        conn
    }
}

impl Drop for TestSchema {
    /// Best effort. Drop cannot await and may run inside the test's runtime, so the drop runs on
    /// a thread of its own with its own small runtime.
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&url()).await.ok()?;
                conn.execute("SET lock_timeout = '10s'").await.ok()?;
                conn.execute(format!("DROP SCHEMA IF EXISTS {name} CASCADE").as_str())
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test schema {}", self.name);
        }
    }
}

/// Gives the conformance suite and the model test a fresh engine on a fresh schema each time.
pub struct PostgresHarness;

#[async_trait]
impl Harness for PostgresHarness {
    async fn engine(&self, clock: Arc<dyn Clock>) -> TestEngine {
        let schema = TestSchema::new();
        let engine = schema.open(clock).await;
        TestEngine {
            engine: Arc::new(engine),
            guard: Box::new(schema),
        }
    }
}
