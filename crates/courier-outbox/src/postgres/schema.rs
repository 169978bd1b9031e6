//! The outbox and inbox tables on PostgreSQL, as versioned migrations embedded in the crate and
//! applied in order, each in its own transaction, inside the configured schema.
//!
//! A migration is never edited once released; changes are new files appended to [`MIGRATIONS`].
//! The version table (`outbox_migrations`) is separate from the queue engine's, so both can
//! share the default `courier` schema.

use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::error::MigrateError;
use crate::migrations::{self, Migrations, Step};
use crate::postgres::validate_schema;

/// `(version, SQL)`, oldest first; versions are 1, 2, 3, … without gaps.
const MIGRATIONS: Migrations = &[
    (1, include_str!("../../migrations/postgres/0001_outbox.sql")),
    (2, include_str!("../../migrations/postgres/0002_inbox.sql")),
];

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    migrations::latest(MIGRATIONS)
}

/// Creates `schema` if missing and applies every migration newer than its version, each in one
/// transaction under an advisory lock, so processes migrating together apply each version
/// once. Returns the schema version. A database newer than this build is refused unchanged.
/// Running it again is a no-op.
pub async fn migrate(pool: &PgPool, schema: &str) -> Result<i64, MigrateError> {
    validate_schema(schema)?;
    let mut conn = pool.acquire().await?;
    ensure_schema(&mut conn, schema).await?;
    loop {
        match apply_next(&mut conn, schema).await? {
            Step::Applied(version) => tracing::info!(version, schema, "applied outbox migration"),
            Step::UpToDate(version) => return Ok(version),
        }
    }
}

/// Creates `schema` unless it exists, on its own, before any migration's transaction: the
/// queue engine's migration (same default schema name, a lock of its own) may be creating it
/// at that moment, and `CREATE SCHEMA IF NOT EXISTS` then waits for it and fails with a unique
/// violation (23505) once it commits, which means the schema now exists. The queue engine's
/// `schema.rs` does the same from its side.
async fn ensure_schema(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(&mut *conn)
        .await?;
    if exists {
        return Ok(());
    }
    match conn
        .execute(sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")))
        .await
    {
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => Ok(()),
        other => other.map(drop),
    }
}

/// In one transaction: takes the lock, reads the version, applies the next migration if any.
async fn apply_next(conn: &mut PgConnection, schema: &str) -> Result<Step, MigrateError> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(schema))
        .execute(&mut *tx)
        .await?;
    // `schema` is validated as `[a-z_][a-z0-9_]*`; quoting also covers reserved words. The
    // migrations name tables unqualified, so the search path points them at the schema.
    let scope = format!("SET LOCAL client_min_messages TO warning; SET LOCAL search_path TO \"{schema}\"");
    (&mut *tx).execute(sqlx::raw_sql(&scope)).await?;
    // Only a schema without the table gets the DDL: PostgreSQL checks the privilege a `CREATE
    // … IF NOT EXISTS` needs before it looks whether the table exists, so a relay whose role
    // may only use the tables (migrated beforehand by the owner) could not start otherwise.
    let bootstrapped: bool = sqlx::query_scalar("SELECT to_regclass('outbox_migrations') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await?;
    if !bootstrapped {
        let bootstrap = "CREATE TABLE IF NOT EXISTS outbox_migrations \
             (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())";
        (&mut *tx).execute(sqlx::raw_sql(bootstrap)).await?;
    }
    let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM outbox_migrations")
        .fetch_one(&mut *tx)
        .await?;
    let next = match migrations::next(MIGRATIONS, current) {
        Ok(next) => next,
        Err(too_new) => {
            tx.rollback().await?;
            return Err(too_new);
        }
    };
    let Some((version, sql)) = next else {
        tx.commit().await?;
        return Ok(Step::UpToDate(current));
    };
    (&mut *tx).execute(sqlx::raw_sql(sql)).await?;
    sqlx::query("INSERT INTO outbox_migrations (version) VALUES ($1)")
        .bind(version)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Step::Applied(version))
}

/// The advisory lock that serializes outbox migrations of one schema on every node: FNV-1a of
/// the schema and a fixed tag, so it differs from the queue engine's migration lock.
fn lock_key(schema: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = schema
        .bytes()
        .chain([0xff])
        .chain(*b"courier-outbox-migrate")
        .fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME));
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_without_gaps() {
        for (index, (version, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i64::try_from(index).unwrap_or(-1) + 1);
        }
    }

    #[test]
    fn lock_keys_differ_per_schema() {
        assert_ne!(lock_key("a"), lock_key("b"));
        assert_eq!(lock_key("a"), lock_key("a"));
    }
}
