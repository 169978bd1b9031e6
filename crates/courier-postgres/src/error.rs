//! Maps sqlx errors onto Courier's storage errors, and tells which ones a retry of the whole
//! transaction can fix.

use courier_core::StorageError;

/// Result of a database call inside the engine; converted to [`StorageError`] at the edge.
pub(crate) type Db<T> = Result<T, sqlx::Error>;

/// Converts an sqlx error into a [`StorageError`]: anything that says "the database cannot be
/// reached or will not serve now", or that the server ended a session that was fine (a
/// timeout, a termination), is `Unavailable` (a later retry, on another connection, may
/// succeed); the rest is `Internal`, a refused login (wrong password, unknown database) too:
/// no retry can help that.
pub(crate) fn storage(e: sqlx::Error) -> StorageError {
    match &e {
        sqlx::Error::PoolClosed => StorageError::Unavailable("the postgres engine is shut down".into()),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_) => {
            StorageError::Unavailable(format!("postgres unavailable: {e}"))
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|c| is_unavailable_code(&c)) => {
            StorageError::Unavailable(format!("postgres unavailable: {e}"))
        }
        _ if is_conflict(&e) => {
            StorageError::Unavailable(format!("postgres: transaction kept conflicting, retry later: {e}"))
        }
        _ => StorageError::Internal(format!("postgres: {e}")),
    }
}

/// SQLSTATEs that mean the server is unreachable or refuses work for now: class 08 (connection
/// exceptions), 57P01-57P03 (admin/crash shutdown, cannot connect now), class 53 (insufficient
/// resources: too many connections, disk full, out of memory), 25006 (read-only transaction:
/// connected to a standby, e.g. during a failover), and the timeouts with which the server ends
/// a session: 25P03 (idle in transaction), 57P05 (idle session), 25P04 (transaction, 17+).
fn is_unavailable_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57P05" | "25006" | "25P03" | "25P04"
        )
}

/// Deadlock (40P01) or serialization failure (40001): PostgreSQL rolled the transaction back
/// and running it again is the documented remedy.
pub(crate) fn is_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

/// A state the engine's own logic rules out (a bug), reported as `Internal` instead of
/// looping or panicking.
pub(crate) fn broken_invariant(detail: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Protocol(format!("engine invariant broken: {detail}"))
}

/// A decoding failure for data the engine wrote itself (a corrupt row, or a bug).
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored {what} is unreadable: {detail}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_codes_are_connection_and_resource_classes() {
        for code in [
            "08000", "08006", "57P01", "57P03", "57P05", "53300", "25006", "25P03", "25P04",
        ] {
            assert!(is_unavailable_code(code), "{code}");
        }
        // Refused logins (wrong password, no pg_hba entry, no such database, no CONNECT) are
        // FATAL too, but no retry helps.
        for code in ["23505", "42P01", "40P01", "57014", "28P01", "28000", "3D000", "42501"] {
            assert!(!is_unavailable_code(code), "{code}");
        }
    }

    #[test]
    fn pool_errors_are_unavailable() {
        assert!(matches!(
            storage(sqlx::Error::PoolTimedOut),
            StorageError::Unavailable(_)
        ));
        assert!(matches!(storage(sqlx::Error::PoolClosed), StorageError::Unavailable(_)));
        assert!(matches!(storage(sqlx::Error::RowNotFound), StorageError::Internal(_)));
    }
}
