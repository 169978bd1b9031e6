//! Maps SQLite errors onto Courier's storage errors.

use courier_core::StorageError;

/// Converts a rusqlite error into a [`StorageError`]; "busy" and "locked" mean another
/// process holds the database, which a retry may outlive.
pub(crate) fn storage(e: rusqlite::Error) -> StorageError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StorageError::Unavailable(format!("sqlite database is locked by another process: {e}"))
        }
        _ => StorageError::Internal(format!("sqlite: {e}")),
    }
}

/// Shorthand for results of SQL calls inside the writer.
pub(crate) type SqlResult<T> = Result<T, StorageError>;
