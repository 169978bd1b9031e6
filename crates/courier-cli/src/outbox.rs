//! Opens an application's outbox from a database URL (`postgres://…` or `sqlite://path`) for
//! `courier relay`, `courier outbox …` and `courier migrate --outbox`.
//!
//! The outbox lives in the application's database, not necessarily Courier's queue database,
//! so it has flags of its own.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use courier_outbox::postgres::PgOutbox;
use courier_outbox::sqlite::SqliteOutbox;
use courier_outbox::{FailedPage, PageRequest, StatusCounts};
use courier_postgres::PostgresOptions;
use courier_server::OutboxAdmin;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

/// Connections a relay or an operator command keeps to the outbox database.
const CONNECTIONS_MAX: u32 = 4;
/// How long a command waits for a connection before it reports the database unreachable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the outbox table lives.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct OutboxArgs {
    /// The application's database holding the outbox table: `postgres://user@host:port/db` or
    /// `sqlite://path/to/app.db`.
    #[arg(long = "database", env = "COURIER_OUTBOX_DATABASE", hide_env_values = true)]
    pub(crate) database: String,
    /// PostgreSQL schema of the outbox and inbox tables (default `courier`).
    #[arg(long, env = "COURIER_OUTBOX_SCHEMA")]
    pub(crate) schema: Option<String>,
}

/// An opened outbox, on either database.
#[derive(Debug, Clone)]
pub(crate) enum Outbox {
    Postgres(PgOutbox),
    Sqlite(SqliteOutbox),
}

impl OutboxArgs {
    /// Connects (lazily) and runs the outbox migrations, so a relay can start on an empty
    /// database; returns the outbox and a line for people naming where it is.
    pub(crate) async fn open(&self) -> anyhow::Result<(Outbox, String)> {
        let (outbox, described) = self.connect()?;
        outbox
            .migrate()
            .await
            .with_context(|| format!("cannot prepare the outbox tables in {described}"))?;
        Ok((outbox, described))
    }

    /// Parses the URL and makes a lazily connecting pool; nothing is sent yet.
    fn connect(&self) -> anyhow::Result<(Outbox, String)> {
        let url = self.database.as_str();
        match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("postgres" | "postgresql") => {
                // The queue engine's URL parser: same syntax, and a location without password.
                let opts = PostgresOptions::new(url)?;
                let schema = self
                    .schema
                    .as_deref()
                    .unwrap_or(courier_outbox::postgres::SCHEMA_DEFAULT);
                let pool = PgPoolOptions::new()
                    .max_connections(CONNECTIONS_MAX)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(opts.connect_options());
                let outbox = PgOutbox::new(pool, schema)?;
                Ok((
                    Outbox::Postgres(outbox),
                    format!("PostgreSQL {} (schema {schema})", opts.location()),
                ))
            }
            Some("sqlite") => {
                if self.schema.is_some() {
                    bail!("--schema applies only to postgres:// databases");
                }
                let opts = SqliteConnectOptions::from_str(url)
                    .with_context(|| format!("invalid SQLite URL {url:?}"))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(ACQUIRE_TIMEOUT);
                let described = format!("SQLite {}", opts.get_filename().display());
                let pool = SqlitePoolOptions::new()
                    .max_connections(CONNECTIONS_MAX)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(opts);
                Ok((Outbox::Sqlite(SqliteOutbox::new(pool)), described))
            }
            // Only the scheme is echoed: the rest of a database URL may hold a password.
            Some(other) => bail!("unsupported outbox database scheme {other:?}; use postgres://… or sqlite://path"),
            None => bail!("outbox database URL has no scheme; use postgres://… or sqlite://path"),
        }
    }
}

impl Outbox {
    /// The operator's view of this outbox, for the HTTP API.
    pub(crate) fn admin(self) -> Arc<dyn OutboxAdmin> {
        match self {
            Self::Postgres(o) => Arc::new(o),
            Self::Sqlite(o) => Arc::new(o),
        }
    }

    /// Creates or upgrades the outbox and inbox tables; returns the schema version.
    pub(crate) async fn migrate(&self) -> anyhow::Result<i64> {
        Ok(match self {
            Self::Postgres(o) => courier_outbox::postgres::migrate(o.pool(), o.schema()).await?,
            Self::Sqlite(o) => courier_outbox::sqlite::migrate(o.pool()).await?,
        })
    }

    pub(crate) async fn list_failed(&self, page: PageRequest) -> anyhow::Result<FailedPage> {
        Ok(match self {
            Self::Postgres(o) => o.list_failed(page).await?,
            Self::Sqlite(o) => o.list_failed(page).await?,
        })
    }

    /// Puts the failed rows `ids` back to pending; returns how many were failed.
    pub(crate) async fn retry_failed(&self, ids: &[Uuid]) -> anyhow::Result<u64> {
        Ok(match self {
            Self::Postgres(o) => o.retry_failed(ids).await?,
            Self::Sqlite(o) => o.retry_failed(ids).await?,
        })
    }

    pub(crate) async fn retry_all_failed(&self) -> anyhow::Result<u64> {
        Ok(match self {
            Self::Postgres(o) => o.retry_all_failed().await?,
            Self::Sqlite(o) => o.retry_all_failed().await?,
        })
    }

    pub(crate) async fn counts(&self) -> anyhow::Result<StatusCounts> {
        Ok(match self {
            Self::Postgres(o) => o.counts().await?,
            Self::Sqlite(o) => o.counts().await?,
        })
    }
}
