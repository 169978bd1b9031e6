//! Typed errors, one enum per family of operations (write, store and admin, migrate, options),
//! each with a stable [`ErrorKind`] so callers and the HTTP layer branch on the kind.
//!
//! Database failures keep the [`sqlx::Error`]; [`db_kind`] tells "cannot serve now" from the rest.

use courier_core::ErrorKind;

/// Errors of writing messages into the outbox.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// More messages than one write accepts; nothing was written.
    #[error("a write holds at most {max} messages, got {count}")]
    TooMany {
        /// Messages in the refused write.
        count: usize,
        /// The limit, [`crate::message::WRITE_BATCH_MAX`].
        max: usize,
    },
    /// A message breaks a limit; nothing was written.
    #[error("message {index} is invalid: {reason}")]
    Invalid {
        /// Position of the first invalid message in the write.
        index: usize,
        /// Which field and which rule.
        reason: String,
    },
    /// The database refused or failed the insert. The caller's transaction is aborted on
    /// PostgreSQL and should be rolled back.
    #[error("outbox write failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl WriteError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::TooMany { .. } | Self::Invalid { .. } => ErrorKind::InvalidInput,
            Self::Database(e) => db_kind(e),
        }
    }
}

/// Errors of the relay's and the operators' operations on the outbox table.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The request itself is wrong (a page size out of range, …).
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("outbox database operation failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl OutboxError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::InvalidInput,
            Self::Database(e) => db_kind(e),
        }
    }
}

/// Errors of applying the outbox and inbox migrations.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The schema name is not acceptable; nothing was changed.
    #[error(transparent)]
    Invalid(#[from] InvalidOption),
    /// The database holds a newer schema version than this build knows; nothing was changed.
    #[error("the outbox schema is at version {found}, newer than this build knows ({known}); upgrade Courier")]
    TooNew {
        /// The version found in the database.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// The database failed; the migration that was running was rolled back.
    #[error("outbox migration failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl MigrateError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::InvalidInput,
            Self::TooNew { .. } => ErrorKind::Internal,
            Self::Database(e) => db_kind(e),
        }
    }
}

/// An option or name that breaks a rule (a schema name, a batch size, a duration out of range).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid option: {0}")]
pub struct InvalidOption(pub String);

impl InvalidOption {
    /// The kind of this error, always [`ErrorKind::InvalidInput`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// [`ErrorKind::Unavailable`] for errors that say "the database cannot serve now" (connection
/// lost, pool exhausted or closed, server shutting down or out of resources, a deadlock or
/// serialization failure, SQLite busy or locked), [`ErrorKind::Internal`] for the rest.
pub fn db_kind(e: &sqlx::Error) -> ErrorKind {
    let unavailable = match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unavailable_code(&code)),
        _ => false,
    };
    if unavailable {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Internal
    }
}

/// PostgreSQL SQLSTATEs of class 08 (connection), 53 (resources), 57P01-57P03 (shutdown),
/// 25006 (read-only standby), 40P01/40001 (deadlock, serialization: rolled back, run again);
/// SQLite primary codes 5 (busy) and 6 (locked), which sqlx reports as extended codes.
fn is_unavailable_code(code: &str) -> bool {
    let postgres = code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "25006" | "40P01" | "40001");
    let sqlite = code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
    postgres || sqlite
}

/// Cuts `text` to at most `bytes_max` bytes at a character boundary, for error texts stored on
/// a row: a publisher's error can be arbitrarily long.
pub(crate) fn truncate(mut text: String, bytes_max: usize) -> String {
    if text.len() > bytes_max {
        let mut end = bytes_max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_codes() {
        for code in [
            "08006", "53300", "57P01", "25006", "40P01", "40001", "5", "517", "6", "262",
        ] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "57014", "19", "2067", "1"] {
            assert!(!is_unavailable_code(code), "{code}");
        }
        assert_eq!(db_kind(&sqlx::Error::PoolTimedOut), ErrorKind::Unavailable);
        assert_eq!(db_kind(&sqlx::Error::RowNotFound), ErrorKind::Internal);
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("abc".into(), 5), "abc");
        assert_eq!(truncate("abcdef".into(), 3), "abc");
        assert_eq!(truncate("aé".into(), 2), "a");
    }
}
