//! Picks and opens the storage engine from a database URL: `sqlite://path` (the default, from
//! `--data-dir`) or `postgres://…` (many nodes sharing one database).
//!
//! The scheme decides the engine; everything after it is the engine's own `FromStr`'s business.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use courier_core::QueueEngine;
use courier_postgres::{PostgresEngine, PostgresOptions};
use courier_sqlite::{SqliteEngine, SqliteOptions};

/// Where the queue lives: the flags `serve` and `migrate` share.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DatabaseArgs {
    /// Directory of the embedded SQLite database (`<data-dir>/courier.db`).
    #[arg(long, env = "COURIER_DATA_DIR", default_value = "./courier-data")]
    pub(crate) data_dir: PathBuf,
    /// Database URL, `sqlite://path` or `postgres://user@host:port/db`; overrides --data-dir.
    #[arg(long, env = "COURIER_DATABASE", hide_env_values = true)]
    pub(crate) database: Option<String>,
    /// PostgreSQL schema for Courier's tables (default `courier`), so Courier can live beside
    /// an application's tables. Only for postgres:// databases.
    #[arg(long, env = "COURIER_SCHEMA")]
    pub(crate) schema: Option<String>,
    #[command(flatten)]
    pub(crate) postgres: PostgresTuning,
}

/// How a node uses a PostgreSQL database: its pool and its time limits. Refused for the other
/// engines, so a flag that would do nothing is never silently ignored.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct PostgresTuning {
    /// Most connections a node opens to PostgreSQL, those of its wake-up listener and its
    /// bulk-call watcher included; at least 3. Default 16. Only for postgres:// databases.
    #[arg(
        long,
        env = "COURIER_CONNECTIONS_MAX",
        value_parser = clap::value_parser!(u32).range(i64::from(courier_postgres::CONNECTIONS_MIN)..)
    )]
    pub(crate) connections_max: Option<u32>,
    /// How long a call waits for a free PostgreSQL connection before it fails with 503.
    /// Default 2000. Only for postgres:// databases.
    #[arg(long, env = "COURIER_ACQUIRE_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) acquire_timeout_ms: Option<u64>,
    /// How long a call to `serve` waits on a PostgreSQL database that stopped answering before
    /// it fails with 503, waiting for a connection included. Bulk operations (purge, queue
    /// deletion, DLQ purge and redrive, stats) run as long as the database is seen working on
    /// them, checked at this interval; they fail after two checks see no work. Default 10000.
    /// Only for postgres:// databases.
    #[arg(long, env = "COURIER_OPERATION_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) operation_timeout_ms: Option<u64>,
    /// Make every ack durable before it returns. By default an ack of a message outside
    /// ordering groups commits without waiting for the WAL flush, so a database crash may take
    /// it back and the message is delivered again (with no failure counted): at-least-once
    /// allows that, and single-message throughput is ~5–20 % higher. Only for postgres://
    /// databases.
    #[arg(long, env = "COURIER_DURABLE_ACKS")]
    pub(crate) durable_acks: bool,
}

impl PostgresTuning {
    /// The first of these flags that was given, for refusing it where it does not apply.
    /// Named as flag and environment variable: either may have set it.
    pub(crate) fn first_given(&self) -> Option<&'static str> {
        [
            (
                self.connections_max.is_some(),
                "--connections-max (COURIER_CONNECTIONS_MAX)",
            ),
            (
                self.acquire_timeout_ms.is_some(),
                "--acquire-timeout-ms (COURIER_ACQUIRE_TIMEOUT_MS)",
            ),
            (
                self.operation_timeout_ms.is_some(),
                "--operation-timeout-ms (COURIER_OPERATION_TIMEOUT_MS)",
            ),
            (self.durable_acks, "--durable-acks (COURIER_DURABLE_ACKS)"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }

    fn apply(&self, mut opts: PostgresOptions) -> PostgresOptions {
        if let Some(n) = self.connections_max {
            opts = opts.connections_max(n);
        }
        if let Some(ms) = self.acquire_timeout_ms {
            opts = opts.acquire_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.operation_timeout_ms {
            opts = opts.operation_timeout(Duration::from_millis(ms));
        }
        opts.durable_acks(self.durable_acks)
    }
}

/// The engine a [`DatabaseArgs`] names, parsed and validated but not yet opened.
#[derive(Debug)]
pub(crate) enum Target {
    Sqlite(SqliteOptions),
    Postgres(Box<PostgresOptions>),
}

impl DatabaseArgs {
    /// Parses the URL (or the data dir) and the schema, naming the problem on bad input.
    pub(crate) fn target(&self) -> anyhow::Result<Target> {
        let Some(url) = &self.database else {
            self.refuse_postgres_flags("the embedded engine (--data-dir)")?;
            return Ok(Target::Sqlite(SqliteOptions::new(self.data_dir.join("courier.db"))));
        };
        match scheme(url) {
            Some("sqlite") => {
                self.refuse_postgres_flags("sqlite:// databases")?;
                Ok(Target::Sqlite(url.parse()?))
            }
            Some("postgres" | "postgresql") => {
                let mut opts = PostgresOptions::new(url)?;
                if let Some(schema) = &self.schema {
                    opts = opts.schema(schema)?;
                }
                Ok(Target::Postgres(Box::new(self.postgres.apply(opts))))
            }
            // Only the scheme is echoed: the rest of a database URL may hold a password.
            Some(other) => bail!("unsupported database URL scheme {other:?}; use sqlite://path or postgres://…"),
            None => bail!("database URL has no scheme; use sqlite://path or postgres://…"),
        }
    }

    fn refuse_postgres_flags(&self, what: &str) -> anyhow::Result<()> {
        if self.schema.is_some() {
            bail!("--schema (COURIER_SCHEMA) applies only to postgres:// databases, not to {what}");
        }
        if let Some(flag) = self.postgres.first_given() {
            bail!("{flag} applies only to postgres:// databases, not to {what}");
        }
        Ok(())
    }
}

impl Target {
    /// Opens the engine (running any pending migrations).
    pub(crate) async fn open(self) -> anyhow::Result<Arc<dyn QueueEngine>> {
        match self {
            Self::Sqlite(opts) => Ok(Arc::new(open_sqlite(opts).await?)),
            Self::Postgres(opts) => {
                let described = describe_postgres(&opts);
                let engine = PostgresEngine::open(*opts)
                    .await
                    .with_context(|| format!("cannot open PostgreSQL database {described}"))?;
                tracing::info!(database = %described, "opened PostgreSQL engine");
                Ok(Arc::new(engine))
            }
        }
    }

    /// Brings the schema up to this build's version without serving; returns a line for people.
    pub(crate) async fn migrate(self) -> anyhow::Result<String> {
        match self {
            Self::Sqlite(opts) => {
                let path = opts.path().display().to_string();
                let engine = open_sqlite(opts).await?;
                engine.shutdown().await.context("cannot close the SQLite database")?;
                Ok(format!("SQLite database {path} is up to date"))
            }
            Self::Postgres(opts) => {
                let described = describe_postgres(&opts);
                let version = courier_postgres::migrate(&opts)
                    .await
                    .with_context(|| format!("cannot migrate PostgreSQL database {described}"))?;
                Ok(format!("PostgreSQL {described} is at schema version {version}"))
            }
        }
    }
}

/// Opens (and migrates) the SQLite database, naming its path on failure.
async fn open_sqlite(opts: SqliteOptions) -> anyhow::Result<SqliteEngine> {
    let path = opts.path().display().to_string();
    let engine = SqliteEngine::open(opts)
        .await
        .with_context(|| format!("cannot open SQLite database {path}"))?;
    tracing::info!(%path, "opened SQLite engine");
    Ok(engine)
}

/// Host, database and schema of `opts`, never the password.
fn describe_postgres(opts: &PostgresOptions) -> String {
    format!("{} (schema {})", opts.location(), opts.schema_name())
}

fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let valid = !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+');
    valid.then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(database: Option<&str>, schema: Option<&str>) -> DatabaseArgs {
        DatabaseArgs {
            data_dir: PathBuf::from("data"),
            database: database.map(str::to_owned),
            schema: schema.map(str::to_owned),
            postgres: PostgresTuning::default(),
        }
    }

    fn error(database: Option<&str>, schema: Option<&str>) -> String {
        args(database, schema)
            .target()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn scheme_is_the_part_before_the_colon() {
        assert_eq!(scheme("sqlite://a/b.db"), Some("sqlite"));
        assert_eq!(scheme("postgres://u:p@h/db"), Some("postgres"));
        assert_eq!(scheme("just/a/path"), None);
        assert_eq!(scheme("://x"), None);
    }

    #[test]
    fn the_scheme_picks_the_engine() {
        assert!(matches!(args(None, None).target(), Ok(Target::Sqlite(_))));
        assert!(matches!(
            args(Some("sqlite://x.db"), None).target(),
            Ok(Target::Sqlite(_))
        ));
        let Ok(Target::Postgres(opts)) = args(Some("postgres://u@h/db"), Some("jobs")).target() else {
            panic!("postgres URL must select the postgres engine");
        };
        assert_eq!(opts.schema_name(), "jobs");
    }

    #[test]
    fn unknown_schemes_and_misplaced_schemas_are_refused_clearly() {
        let e = error(Some("mysql://user:secret@host/db"), None);
        assert!(e.contains("mysql") && !e.contains("secret"), "{e}");
        let e = error(None, Some("jobs"));
        assert!(
            e.contains("--schema (COURIER_SCHEMA) applies only to postgres://"),
            "{e}"
        );
        let e = error(Some("sqlite://x.db"), Some("jobs"));
        assert!(
            e.contains("--schema (COURIER_SCHEMA) applies only to postgres://"),
            "{e}"
        );
        let e = error(Some("postgres://user:secret@host/db"), Some("Bad-Schema"));
        assert!(e.contains("Bad-Schema") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn the_pool_and_time_limits_reach_postgres_and_are_refused_elsewhere() {
        let tuned = |database: Option<&str>, postgres: PostgresTuning| DatabaseArgs {
            postgres,
            ..args(database, None)
        };
        let all = PostgresTuning {
            connections_max: Some(5),
            acquire_timeout_ms: Some(750),
            operation_timeout_ms: Some(2_500),
            durable_acks: true,
        };
        let Ok(Target::Postgres(opts)) = tuned(Some("postgres://u@h/db"), all).target() else {
            panic!("postgres URL must select the postgres engine");
        };
        let described = format!("{opts:?}");
        for expected in [
            "connections_max: 5",
            "acquire_timeout: 750ms",
            "operation_timeout: 2.5s",
            "durable_acks: true",
        ] {
            assert!(described.contains(expected), "{expected} missing from {described}");
        }
        let one_each = [
            (
                "--connections-max (COURIER_CONNECTIONS_MAX)",
                PostgresTuning {
                    connections_max: Some(5),
                    ..PostgresTuning::default()
                },
            ),
            (
                "--acquire-timeout-ms (COURIER_ACQUIRE_TIMEOUT_MS)",
                PostgresTuning {
                    acquire_timeout_ms: Some(750),
                    ..PostgresTuning::default()
                },
            ),
            (
                "--operation-timeout-ms (COURIER_OPERATION_TIMEOUT_MS)",
                PostgresTuning {
                    operation_timeout_ms: Some(2_500),
                    ..PostgresTuning::default()
                },
            ),
            (
                "--durable-acks (COURIER_DURABLE_ACKS)",
                PostgresTuning {
                    durable_acks: true,
                    ..PostgresTuning::default()
                },
            ),
        ];
        for (flag, postgres) in one_each {
            for database in [None, Some("sqlite://x.db")] {
                let e = tuned(database, postgres.clone())
                    .target()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                assert!(e.contains(&format!("{flag} applies only to postgres://")), "{e}");
            }
        }
    }
}
