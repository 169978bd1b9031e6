//! What the two databases' migrations share: a migration list is `(version, SQL)` pairs
//! numbered 1, 2, 3, … without gaps, applied one per transaction; each step picks the next one
//! and refuses a database newer than the build.

use crate::error::MigrateError;

/// `(version, SQL)`, oldest first.
pub(crate) type Migrations = &'static [(i64, &'static str)];

/// What one migration transaction did.
pub(crate) enum Step {
    /// Applied this version.
    Applied(i64),
    /// Nothing to do; the database is at this version.
    UpToDate(i64),
}

/// The newest version in `migrations`.
pub(crate) fn latest(migrations: Migrations) -> i64 {
    migrations.last().map_or(0, |(v, _)| *v)
}

/// The migration to apply to a database at version `current`, if any.
pub(crate) fn next(migrations: Migrations, current: i64) -> Result<Option<(i64, &'static str)>, MigrateError> {
    if current > latest(migrations) {
        return Err(MigrateError::TooNew {
            found: current,
            known: latest(migrations),
        });
    }
    Ok(migrations.iter().copied().find(|(v, _)| *v == current + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: Migrations = &[(1, "a"), (2, "b")];

    #[test]
    fn next_steps() {
        assert_eq!(next(LIST, 0).ok().flatten(), Some((1, "a")));
        assert_eq!(next(LIST, 1).ok().flatten(), Some((2, "b")));
        assert_eq!(next(LIST, 2).ok().flatten(), None);
        assert!(matches!(
            next(LIST, 3),
            Err(MigrateError::TooNew { found: 3, known: 2 })
        ));
    }
}
