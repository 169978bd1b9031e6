//! The database a bench run measures: a fresh engine per stage (SQLite file or PostgreSQL
//! schema), a second node on the same storage for the cross-node latency run, the raw baseline
//! on the same database, and clean-up of everything the run created.

use std::path::Path;
use std::sync::Arc;

use courier_core::QueueEngine;
use courier_postgres::{PostgresEngine, PostgresOptions};
use courier_sqlite::{SqliteEngine, SqliteOptions};
use sqlx::Executor;

use crate::{baseline, BenchConfig, BenchError, Target};

/// Connections each PostgreSQL engine (and the baseline) may open: the same limit for both.
/// The engine's include its wake-up listener and bulk-call watcher, so 14 serve calls; either
/// way more than the 8 producer and consumer tasks ever use at once.
pub(crate) const POSTGRES_CONNECTIONS: u32 = 16;

/// Storage for one bench run.
pub(crate) enum Backend {
    /// One database file per stage in a temp dir, removed when the stage ends (and the dir
    /// when dropped).
    Sqlite(tempfile::TempDir),
    /// One schema per stage, `courier_bench_<run>_<stage>_<round>`, dropped when the stage
    /// ends or by [`Backend::clean_up`].
    Postgres {
        options: Box<PostgresOptions>,
        run: String,
        schemas: Vec<String>,
    },
}

impl Backend {
    pub(crate) fn new(target: &Target, dir: Option<&Path>) -> Result<Self, BenchError> {
        Ok(match target {
            Target::Sqlite => Self::Sqlite(match dir {
                Some(d) => tempfile::tempdir_in(d)?,
                None => tempfile::tempdir()?,
            }),
            Target::Postgres(options) => Self::Postgres {
                options: Box::new((**options).clone().connections_max(POSTGRES_CONNECTIONS)),
                run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
                schemas: Vec::new(),
            },
        })
    }

    /// What the report calls this engine.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Sqlite(_) => "sqlite (WAL, synchronous=FULL: every write durable before it returns)".to_owned(),
            Self::Postgres { options, .. } => {
                let but = if options.is_durable_acks() {
                    "a lease"
                } else {
                    "a lease and an ack of an ungrouped message"
                };
                format!(
                    "postgres {} (synchronous_commit=on: every write durable before it returns, \
                     but {but}, which a database crash may take back)",
                    options.location()
                )
            }
        }
    }

    /// What the raw baseline does on this database.
    pub(crate) fn describe_baseline(&self) -> String {
        match self {
            Self::Sqlite(_) => "batched INSERT, then SELECT + DELETE, 100 rows per transaction".to_owned(),
            Self::Postgres { .. } => format!(
                "concurrent INSERT … UNNEST and DELETE … FOR UPDATE SKIP LOCKED, 100 rows per statement, \
                 pool of {POSTGRES_CONNECTIONS}"
            ),
        }
    }

    /// Where the paced latency run's producer and consumers run.
    pub(crate) fn describe_nodes(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "one node",
            Self::Postgres { .. } => "two nodes",
        }
    }

    /// A fresh engine on empty storage for the stage `stage`.
    pub(crate) async fn engine(&mut self, stage: &str) -> Result<Arc<dyn QueueEngine>, BenchError> {
        match self {
            Self::Sqlite(dir) => {
                let engine = SqliteEngine::open(SqliteOptions::new(dir.path().join(format!("{stage}.db")))).await?;
                Ok(Arc::new(engine))
            }
            Self::Postgres { options, run, schemas } => {
                let schema = format!("courier_bench_{run}_{stage}");
                schemas.push(schema.clone());
                Ok(Arc::new(open_postgres(options, &schema).await?))
            }
        }
    }

    /// Another node on the storage of the stage opened last: a second `PostgresEngine` with
    /// its own pool and listener. SQLite is single-node, so it is the same engine.
    pub(crate) async fn second_node(&self, first: &Arc<dyn QueueEngine>) -> Result<Arc<dyn QueueEngine>, BenchError> {
        match self {
            Self::Sqlite(_) => Ok(first.clone()),
            Self::Postgres { options, schemas, .. } => {
                let schema = schemas
                    .last()
                    .ok_or_else(|| BenchError::Task("no stage opened yet".into()))?;
                Ok(Arc::new(open_postgres(options, schema).await?))
            }
        }
    }

    /// The raw baseline's rows per second on this database, in fresh storage named `stage`.
    pub(crate) async fn baseline(&mut self, stage: &str, config: &BenchConfig) -> Result<f64, BenchError> {
        let (messages, payload) = (config.messages, config.payload_bytes);
        match self {
            Self::Sqlite(dir) => {
                let path = dir.path().join(format!("{stage}.db"));
                tokio::task::spawn_blocking(move || baseline::sqlite(&path, messages, 100, payload))
                    .await
                    .map_err(|e| BenchError::Task(e.to_string()))?
            }
            Self::Postgres { options, run, schemas } => {
                let schema = format!("courier_bench_{run}_{stage}");
                schemas.push(schema.clone());
                let shape = baseline::PgShape {
                    total: messages,
                    batch: 100,
                    payload_bytes: payload,
                    producers: config.producers,
                    consumers: config.consumers,
                };
                baseline::postgres(options.connect_options(), &schema, shape).await
            }
        }
    }

    /// Ends a stage whose engines are shut down: removes its storage, so autovacuum does not
    /// work through a finished stage's dead rows while the next one is measured (PostgreSQL),
    /// and a run of many rounds does not fill the disk (SQLite).
    pub(crate) async fn end_stage(&mut self) -> Result<(), BenchError> {
        match self {
            Self::Sqlite(dir) => remove_files_in(dir.path()),
            Self::Postgres { options, schemas, .. } => drop_schemas(options, schemas).await,
        }
    }

    /// Drops every schema this run created and did not drop yet (PostgreSQL); the SQLite temp
    /// dir goes on drop.
    pub(crate) async fn clean_up(mut self) -> Result<(), BenchError> {
        match &mut self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres { options, schemas, .. } => drop_schemas(options, schemas).await,
        }
    }
}

/// Removes the files in `dir`: the database, WAL and shared-memory files of a finished stage.
fn remove_files_in(dir: &std::path::Path) -> Result<(), BenchError> {
    for entry in std::fs::read_dir(dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    Ok(())
}

/// Drops `schemas`, forgetting each only once it is dropped, so a failure leaves the rest for
/// [`Backend::clean_up`] to try again.
async fn drop_schemas(options: &PostgresOptions, schemas: &mut Vec<String>) -> Result<(), BenchError> {
    if schemas.is_empty() {
        return Ok(());
    }
    let pool = sqlx::PgPool::connect_with(options.connect_options()).await?;
    while let Some(schema) = schemas.last() {
        pool.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
            .await?;
        schemas.pop();
    }
    pool.close().await;
    Ok(())
}

async fn open_postgres(options: &PostgresOptions, schema: &str) -> Result<PostgresEngine, BenchError> {
    let options = options
        .clone()
        .schema(schema)
        .map_err(|e| BenchError::Task(e.to_string()))?;
    Ok(PostgresEngine::open(options).await?)
}
