//! The raw baselines: the least work a queue on the same database must do, measured in the
//! same run so the engine's figures can be read as a ratio.
//!
//! - SQLite: batched INSERT then batched SELECT + DELETE of the same rows in a plain table, with
//!   the engine's durability (WAL, `synchronous = FULL`, one transaction per batch).
//! - PostgreSQL: producers INSERT batches while consumers `DELETE … FOR UPDATE SKIP LOCKED`
//!   batches of the same rows, concurrently, through a pool as large as the engine's, with
//!   `synchronous_commit = on`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, Connection};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};
use tokio::task::JoinSet;

use crate::backend::POSTGRES_CONNECTIONS;
use crate::BenchError;

/// Inserts `total` rows of `payload_bytes` in batches of `batch`, then deletes them by key in
/// batches of `batch`; returns rows per second through both steps.
pub(crate) fn sqlite(path: &Path, total: usize, batch: usize, payload_bytes: usize) -> Result<f64, BenchError> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
         CREATE TABLE raw (seq INTEGER PRIMARY KEY, id BLOB NOT NULL, payload BLOB NOT NULL);",
    )?;
    let payload = vec![b'x'; payload_bytes];
    let started = Instant::now();
    let mut next = 0i64;
    while usize::try_from(next).unwrap_or(usize::MAX) < total {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO raw (seq, id, payload) VALUES (?1, ?2, ?3)")?;
            for _ in 0..batch {
                insert.execute(params![next, &next.to_be_bytes()[..], &payload[..]])?;
                next += 1;
            }
        }
        tx.commit()?;
    }
    let mut first = 0i64;
    while first < next {
        let tx = conn.transaction()?;
        {
            let mut select = tx.prepare_cached("SELECT seq, payload FROM raw WHERE seq >= ?1 ORDER BY seq LIMIT ?2")?;
            let mut delete = tx.prepare_cached("DELETE FROM raw WHERE seq = ?1")?;
            let rows: Vec<(i64, Vec<u8>)> = select
                .query_map(params![first, batch as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (seq, _) in &rows {
                delete.execute([seq])?;
            }
            first += batch as i64;
        }
        tx.commit()?;
    }
    Ok(next as f64 / started.elapsed().as_secs_f64())
}

/// Shape of the PostgreSQL baseline run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PgShape {
    pub(crate) total: usize,
    pub(crate) batch: usize,
    pub(crate) payload_bytes: usize,
    pub(crate) producers: usize,
    pub(crate) consumers: usize,
}

/// Runs `shape.total` rows through a plain table in `schema`: producers insert batches,
/// consumers delete batches with SKIP LOCKED, all at once; returns rows per second end to end.
pub(crate) async fn postgres(connect: PgConnectOptions, schema: &str, shape: PgShape) -> Result<f64, BenchError> {
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_CONNECTIONS)
        .connect_with(connect.options([("synchronous_commit", "on")]))
        .await?;
    pool.execute(
        format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; \
             CREATE TABLE {schema}.raw (seq bigserial PRIMARY KEY, id uuid NOT NULL, payload bytea NOT NULL)"
        )
        .as_str(),
    )
    .await?;
    let table = Arc::<str>::from(format!("{schema}.raw"));
    let started = Instant::now();
    let deleted = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for p in 0..shape.producers {
        let count = shape.total / shape.producers + usize::from(p < shape.total % shape.producers);
        tasks.spawn(insert_rows(pool.clone(), table.clone(), shape, count));
    }
    for _ in 0..shape.consumers {
        tasks.spawn(delete_rows(pool.clone(), table.clone(), shape, deleted.clone()));
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| BenchError::Task(e.to_string()))??;
    }
    let rows_per_sec = shape.total as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rows_per_sec)
}

async fn insert_rows(pool: PgPool, table: Arc<str>, shape: PgShape, count: usize) -> Result<(), BenchError> {
    let sql = format!("INSERT INTO {table} (id, payload) SELECT * FROM UNNEST($1::uuid[], $2::bytea[])");
    let payload = vec![b'x'; shape.payload_bytes];
    let mut sent = 0;
    while sent < count {
        let n = shape.batch.min(count - sent);
        let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
        let payloads = vec![payload.clone(); n];
        sqlx::query(&sql).bind(&ids).bind(&payloads).execute(&pool).await?;
        sent += n;
    }
    Ok(())
}

async fn delete_rows(
    pool: PgPool,
    table: Arc<str>,
    shape: PgShape,
    deleted: Arc<AtomicUsize>,
) -> Result<(), BenchError> {
    let sql = format!(
        "DELETE FROM {table} WHERE seq IN \
         (SELECT seq FROM {table} ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING payload"
    );
    let limit = i64::try_from(shape.batch).unwrap_or(i64::MAX);
    while deleted.load(Ordering::Relaxed) < shape.total {
        let rows = sqlx::query(&sql).bind(limit).fetch_all(&pool).await?;
        if rows.is_empty() {
            // Producers are behind: yield rather than spin on an empty table.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        deleted.fetch_add(rows.len(), Ordering::Relaxed);
    }
    Ok(())
}
