//! Picks and opens the storage engine from a database URL: `sqlite://path` today,
//! `postgres://` once that engine exists.
//!
//! The scheme decides the engine; everything after it is the engine's own `FromStr`'s business.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use courier_core::QueueEngine;
use courier_sqlite::{SqliteEngine, SqliteOptions};

/// Opens the engine named by `url`.
pub(crate) async fn open_engine(url: &str) -> anyhow::Result<Arc<dyn QueueEngine>> {
    match scheme(url) {
        Some("sqlite") => {
            let opts: SqliteOptions = url.parse()?;
            open_sqlite(opts).await
        }
        Some("postgres" | "postgresql") => bail!("postgres engine not built yet (use sqlite://path)"),
        // Only the scheme is echoed: the rest of a database URL may hold a password.
        Some(other) => bail!("unsupported database URL scheme {other:?}; use sqlite://path"),
        None => bail!("database URL has no scheme; use sqlite://path"),
    }
}

/// Opens the SQLite engine on `<data_dir>/courier.db`, creating the directory if needed.
pub(crate) async fn open_data_dir(data_dir: &Path) -> anyhow::Result<Arc<dyn QueueEngine>> {
    open_sqlite(SqliteOptions::new(data_dir.join("courier.db"))).await
}

async fn open_sqlite(opts: SqliteOptions) -> anyhow::Result<Arc<dyn QueueEngine>> {
    let path = opts.path().display().to_string();
    let engine = SqliteEngine::open(opts)
        .await
        .with_context(|| format!("cannot open SQLite database {path}"))?;
    tracing::info!(%path, "opened SQLite engine");
    Ok(Arc::new(engine))
}

fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let valid = !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+');
    valid.then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_is_the_part_before_the_colon() {
        assert_eq!(scheme("sqlite://a/b.db"), Some("sqlite"));
        assert_eq!(scheme("postgres://u:p@h/db"), Some("postgres"));
        assert_eq!(scheme("just/a/path"), None);
        assert_eq!(scheme("://x"), None);
    }

    #[tokio::test]
    async fn postgres_and_unknown_schemes_are_refused_clearly() {
        let err = open_engine("postgres://user:secret@host/db")
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("postgres engine not built yet (use sqlite://path)")
        );
        let err = open_engine("mysql://user:secret@host/db")
            .await
            .err()
            .map(|e| e.to_string());
        assert!(err
            .as_deref()
            .is_some_and(|e| e.contains("mysql") && !e.contains("secret")));
    }
}
