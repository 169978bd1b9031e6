//! Shared by the integration tests: a fresh database per test (a PostgreSQL schema of its own
//! on the test server, dropped afterwards, or a SQLite file in a temporary directory), a
//! publisher that records what it got and can be told to fail, and polling waits.
//!
//! Each test binary uses part of this module, hence the `dead_code` allowance.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of this module.

mod publisher;

// Not every test binary publishes.
#[allow(unused_imports)]
pub use publisher::TestPublisher;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use courier_core::{Clock, ManualClock, OutboundMessage, Publisher, SystemClock, Timestamp};
use courier_outbox::postgres::PgOutbox;
use courier_outbox::sqlite::SqliteOutbox;
use courier_outbox::{FailedPage, OutboxMessage, PageRequest, Relay, RelayOptions, StatusCounts};
use courier_testkit::postgres::{unreachable, url, TestSchema};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgPool, SqlitePool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Which database a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Runs an `async fn scenario(Backend)` once per database, as `scenario::postgres` and
/// `scenario::sqlite`.
#[macro_export]
macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario($crate::common::Backend::Postgres).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario($crate::common::Backend::Sqlite).await;
            }
        }
    )*};
}

/// A manual clock standing at the real time, so rows inserted with database defaults are due.
pub fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(SystemClock.now()))
}

/// A fresh outbox on one database.
pub enum Db {
    Pg {
        schema: TestSchema,
        pool: PgPool,
        outbox: PgOutbox,
    },
    Lite {
        _dir: tempfile::TempDir,
        pool: SqlitePool,
        outbox: SqliteOutbox,
    },
}

/// A row's relay-side state, read with SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowState {
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub claimed_by: Option<String>,
}

/// `RowState` as the query returns it.
type RowTuple = (String, i64, i64, Option<String>, Option<String>);

impl Db {
    pub async fn open(backend: Backend, clock: Arc<dyn Clock>) -> Self {
        match backend {
            Backend::Postgres => Self::postgres(clock).await,
            Backend::Sqlite => Self::sqlite(clock).await,
        }
    }

    pub async fn postgres(clock: Arc<dyn Clock>) -> Self {
        let schema = TestSchema::new();
        let pool = pg_pool().await;
        courier_outbox::postgres::migrate(&pool, &schema.name)
            .await
            .unwrap_or_else(|e| unreachable("cannot migrate the test schema", e));
        let outbox = PgOutbox::new(pool.clone(), &schema.name)
            .expect("schema name")
            .with_clock(clock);
        Self::Pg { schema, pool, outbox }
    }

    pub async fn sqlite(clock: Arc<dyn Clock>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let pool = sqlite_pool(&dir.path().join("outbox.db")).await;
        courier_outbox::sqlite::migrate(&pool).await.expect("sqlite migrate");
        let outbox = SqliteOutbox::new(pool.clone()).with_clock(clock);
        Self::Lite {
            _dir: dir,
            pool,
            outbox,
        }
    }

    /// Writes `messages` in a transaction of their own and commits it through the outbox (which
    /// wakes the relays).
    pub async fn write(&self, messages: &[OutboxMessage]) -> Vec<Uuid> {
        match self {
            Self::Pg { pool, outbox, .. } => {
                let mut tx = pool.begin().await.expect("begin");
                let ids = outbox.write(&mut tx, messages).await.expect("write");
                outbox.commit(tx).await.expect("commit");
                ids
            }
            Self::Lite { pool, outbox, .. } => {
                let mut tx = pool.begin().await.expect("begin");
                let ids = outbox.write(&mut tx, messages).await.expect("write");
                outbox.commit(tx).await.expect("commit");
                ids
            }
        }
    }

    /// Writes `messages` in a transaction that is then rolled back.
    pub async fn write_rolled_back(&self, messages: &[OutboxMessage]) {
        match self {
            Self::Pg { pool, outbox, .. } => {
                let mut tx = pool.begin().await.expect("begin");
                outbox.write(&mut tx, messages).await.expect("write");
                tx.rollback().await.expect("rollback");
            }
            Self::Lite { pool, outbox, .. } => {
                let mut tx = pool.begin().await.expect("begin");
                outbox.write(&mut tx, messages).await.expect("write");
                tx.rollback().await.expect("rollback");
            }
        }
    }

    /// Runs plain SQL as another application would (`{s}.` stands for the schema prefix,
    /// empty on SQLite).
    pub async fn execute(&self, sql: &str) {
        self.try_execute(sql).await.expect("plain SQL");
    }

    pub async fn try_execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Self::Pg { pool, schema, .. } => {
                let sql = sql.replace("{s}.", &format!("{}.", schema.name));
                sqlx::raw_sql(&sql).execute(pool).await.map(drop)
            }
            Self::Lite { pool, .. } => sqlx::raw_sql(&sql.replace("{s}.", "")).execute(pool).await.map(drop),
        }
    }

    pub fn relay(&self, publisher: Arc<dyn Publisher>, options: RelayOptions) -> Relay {
        match self {
            Self::Pg { outbox, .. } => Relay::postgres(outbox, publisher, options).expect("relay options"),
            Self::Lite { outbox, .. } => Relay::sqlite(outbox, publisher, options).expect("relay options"),
        }
    }

    pub async fn row(&self, id: Uuid) -> Option<RowState> {
        const COLUMNS: &str = "status, CAST(attempts AS BIGINT), next_attempt_at, last_error, claimed_by";
        let row: Option<RowTuple> = match self {
            Self::Pg { pool, schema, .. } => {
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM {}.outbox WHERE id = $1", schema.name))
                    .bind(id)
                    .fetch_optional(pool)
                    .await
            }
            Self::Lite { pool, .. } => {
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"))
                    .bind(id)
                    .fetch_optional(pool)
                    .await
            }
        }
        .expect("read row");
        row.map(|(status, attempts, next_attempt_at, last_error, claimed_by)| RowState {
            status,
            attempts,
            next_attempt_at,
            last_error,
            claimed_by,
        })
    }

    pub async fn counts(&self) -> StatusCounts {
        match self {
            Self::Pg { outbox, .. } => outbox.counts().await,
            Self::Lite { outbox, .. } => outbox.counts().await,
        }
        .expect("counts")
    }

    pub async fn list_failed(&self, page: PageRequest) -> FailedPage {
        match self {
            Self::Pg { outbox, .. } => outbox.list_failed(page).await,
            Self::Lite { outbox, .. } => outbox.list_failed(page).await,
        }
        .expect("list failed")
    }

    pub async fn retry_failed(&self, ids: &[Uuid]) -> u64 {
        match self {
            Self::Pg { outbox, .. } => outbox.retry_failed(ids).await,
            Self::Lite { outbox, .. } => outbox.retry_failed(ids).await,
        }
        .expect("retry failed")
    }

    pub async fn retry_all_failed(&self) -> u64 {
        match self {
            Self::Pg { outbox, .. } => outbox.retry_all_failed().await,
            Self::Lite { outbox, .. } => outbox.retry_all_failed().await,
        }
        .expect("retry all failed")
    }
}

pub async fn pg_pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(12)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url())
        .await
        .unwrap_or_else(|e| unreachable("cannot connect to PostgreSQL", e))
}

pub async fn sqlite_pool(path: &std::path::Path) -> SqlitePool {
    let options = SqliteConnectOptions::from_str("sqlite://")
        .expect("sqlite url")
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("open sqlite")
}

/// A plain PostgreSQL connection for tests that look underneath.
pub async fn pg_connection() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&url())
        .await
        .unwrap_or_else(|e| unreachable("cannot connect to PostgreSQL", e))
}

/// A relay running on a task of its own.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    pub fn start(relay: Relay) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.run(async move {
            let _ = stopped.await;
        }));
        Self { stop: Some(stop), task }
    }

    /// Graceful shutdown; waits until `run` returns.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("relay stops in time")
            .expect("relay task");
    }

    /// The relay "dies": its task is aborted mid-flight and releases nothing.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// Polls `condition` every 10 ms until it holds, failing the test after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Options for tests: a short poll so a missed wake-up costs little, and a claim long enough
/// that it never lapses by accident.
pub fn fast_options(id: &str) -> RelayOptions {
    RelayOptions::default()
        .relay_id(id)
        .poll_interval(Duration::from_millis(20))
        .claim_duration(Duration::from_secs(30))
        .backoff_base(Duration::from_secs(1))
        .backoff_max(Duration::from_secs(8))
}

/// `n` messages for `orders`, with key `key-{i % keys}` (no key when `keys` is 0).
pub fn messages(n: usize, keys: usize) -> Vec<OutboxMessage> {
    (0..n)
        .map(|i| {
            let message = OutboxMessage::new("orders", format!("payload-{i}"));
            if keys == 0 {
                message
            } else {
                message.with_key(format!("key-{}", i % keys))
            }
        })
        .collect()
}

/// The time the clock shows, in ms.
pub fn now_ms(clock: &dyn Clock) -> i64 {
    clock.now().as_millis()
}

pub fn ts(ms: i64) -> Timestamp {
    Timestamp(ms)
}

/// Asserts that `published` holds each of `written` exactly once and, for every key, in write
/// order (`written` is in write order).
pub fn assert_once_in_key_order(written: &[Uuid], published: &[OutboundMessage]) {
    let position: HashMap<Uuid, usize> = written.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let unique: HashSet<Uuid> = published.iter().map(|m| m.id).collect();
    assert_eq!(unique.len(), published.len(), "some message was published twice");
    assert_eq!(
        unique,
        written.iter().copied().collect(),
        "published set differs from written set"
    );
    let mut last_of_key: HashMap<&str, usize> = HashMap::new();
    for message in published {
        let Some(key) = message.key.as_deref() else { continue };
        let at = position[&message.id];
        if let Some(previous) = last_of_key.insert(key, at) {
            assert!(
                previous < at,
                "key {key}: message written #{at} published after #{previous}"
            );
        }
    }
}
