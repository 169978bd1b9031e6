//! The schema, as versioned migrations applied in order at open, inside the configured schema.
//!
//! A migration is never edited once released; changes are new files in `migrations/`, appended
//! to [`MIGRATIONS`]. The version table lives in the same schema, so Courier can share a
//! database with an application without touching its tables.

use courier_core::StorageError;
use sqlx::{Connection, Executor, PgConnection};

use crate::error::storage;
use crate::groups::lock_key;

/// Message statuses as stored in `messages.status`. SQL text spells them as literals (so the
/// planner can match the partial indexes); these name them on the Rust side.
pub(crate) mod status {
    /// Ready or delayed (visible at `visible_at`).
    pub(crate) const READY: i16 = 0;
    /// Leased; `visible_at` is the lease deadline.
    pub(crate) const IN_FLIGHT: i16 = 1;
    /// Waiting behind an earlier message of its ordering group.
    pub(crate) const BLOCKED: i16 = 2;
    /// In the dead-letter queue.
    pub(crate) const DEAD: i16 = 3;
}

/// `(version, SQL)`, oldest first; versions are 1, 2, 3, … without gaps.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_lease_epochs.sql")),
];

/// The newest schema version this build knows.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// Creates `schema` if missing (on its own, see [`ensure_schema`]), then applies every
/// migration newer than its version, all in one transaction. Nodes starting together serialize
/// on an advisory lock: the first migrates, the others then find nothing to do. A database
/// newer than this build is refused. A migration that fails leaves at most the empty schema.
///
/// A schema already at this build's version is only read, never sent DDL: PostgreSQL checks
/// the privilege a `CREATE … IF NOT EXISTS` needs before it looks whether the object exists,
/// so nodes whose role may only use the tables of a schema migrated beforehand (by `courier
/// migrate` under the owner's role) could not start otherwise.
///
/// The connection's `search_path` must already be `schema` (the pool sets it on connect).
pub(crate) async fn migrate(conn: &mut PgConnection, schema: &str) -> Result<i64, StorageError> {
    ensure_schema(conn, schema).await?;
    let mut tx = conn.begin().await.map_err(storage)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(schema, &[b"migrate"]))
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
    let current = match version(&mut tx).await? {
        Some(current) => current,
        None => {
            let bootstrap = "CREATE TABLE IF NOT EXISTS courier_migrations \
                 (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())";
            (&mut *tx).execute(sqlx::raw_sql(bootstrap)).await.map_err(storage)?;
            version(&mut tx).await?.unwrap_or(0)
        }
    };
    if current > latest_version() {
        return Err(StorageError::Internal(format!(
            "schema {schema} is at version {current}, newer than this build of Courier knows ({}); upgrade Courier",
            latest_version()
        )));
    }
    // Collected first: an iterator adapter held across the awaits below would make this
    // future not `Send` (a known rustc limitation with higher-ranked lifetimes).
    let pending: Vec<(i64, &'static str)> = MIGRATIONS.iter().copied().filter(|(v, _)| *v > current).collect();
    for (version, sql) in pending {
        // `Executor::execute` rather than `RawSql::execute`, whose future is not provably `Send`.
        (&mut *tx).execute(sqlx::raw_sql(sql)).await.map_err(storage)?;
        sqlx::query("INSERT INTO courier_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        tracing::info!(version, schema, "applied postgres migration");
    }
    tx.commit().await.map_err(storage)?;
    Ok(latest_version().max(current))
}

/// Creates `schema` unless it exists, on its own, before the migration's transaction: another
/// process may be creating the same schema at that moment (the outbox's migration, which
/// defaults to the same name and takes a lock of its own), and `CREATE SCHEMA IF NOT EXISTS`
/// then waits for it and fails with a unique violation once it commits. That failure means the
/// schema now exists. An existing schema gets no DDL (see [`migrate`]).
async fn ensure_schema(conn: &mut PgConnection, schema: &str) -> Result<(), StorageError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(&mut *conn)
        .await
        .map_err(storage)?;
    if exists {
        return Ok(());
    }
    // `schema` is validated as `[a-z_][a-z0-9_]{0,62}`; quoting also covers reserved words.
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    match conn.execute(sqlx::raw_sql(&create)).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(UNIQUE_VIOLATION) => Ok(()),
        Err(e) => Err(storage(e)),
    }
}

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// The schema's version from its `courier_migrations` table (0 while it is empty), or `None`
/// when the schema or the table does not exist yet. Resolved through the `search_path`.
async fn version(conn: &mut PgConnection) -> Result<Option<i64>, StorageError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('courier_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(storage)?;
    if !exists {
        return Ok(None);
    }
    let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM courier_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(storage)?;
    Ok(Some(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_without_gaps() {
        for (index, (version, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i64::try_from(index).unwrap() + 1);
        }
    }
}
