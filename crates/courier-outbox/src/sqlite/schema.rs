//! The outbox and inbox tables on SQLite, as versioned migrations embedded in the crate and
//! applied in order, each in its own `BEGIN IMMEDIATE` transaction (which takes the write lock
//! first, so two processes migrating together apply each version once).
//!
//! A migration is never edited once released; changes are new files appended to [`MIGRATIONS`].

use sqlx::{Connection, Executor, SqliteConnection, SqlitePool};

use crate::error::MigrateError;
use crate::migrations::{self, Migrations, Step};

/// `(version, SQL)`, oldest first; versions are 1, 2, 3, … without gaps.
const MIGRATIONS: Migrations = &[
    (1, include_str!("../../migrations/sqlite/0001_outbox.sql")),
    (2, include_str!("../../migrations/sqlite/0002_inbox.sql")),
];

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    migrations::latest(MIGRATIONS)
}

/// Applies every migration newer than the database's version, each in one transaction, and
/// returns the version. A database newer than this build is refused unchanged. Running it
/// again is a no-op.
pub async fn migrate(pool: &SqlitePool) -> Result<i64, MigrateError> {
    let mut conn = pool.acquire().await?;
    loop {
        match apply_next(&mut conn).await? {
            Step::Applied(version) => tracing::info!(version, "applied sqlite outbox migration"),
            Step::UpToDate(version) => return Ok(version),
        }
    }
}

async fn apply_next(conn: &mut SqliteConnection) -> Result<Step, MigrateError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    (&mut *tx)
        .execute(
            "CREATE TABLE IF NOT EXISTS outbox_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .await?;
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
    sqlx::query(
        "INSERT INTO outbox_migrations (version, applied_at) \
         VALUES (?1, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))",
    )
    .bind(version)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Step::Applied(version))
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
}
