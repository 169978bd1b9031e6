//! The raw baseline: batched INSERT then batched DELETE of the same rows in a plain SQLite
//! table, with the engine's durability (WAL, `synchronous = FULL`, one transaction per batch).

use std::path::Path;
use std::time::Instant;

use rusqlite::{params, Connection};

use crate::BenchError;

/// Inserts `total` rows of `payload_bytes` in batches of `batch`, then deletes them by key in
/// batches of `batch`; returns rows per second through both steps.
pub(crate) fn run(path: &Path, total: usize, batch: usize, payload_bytes: usize) -> Result<f64, BenchError> {
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
