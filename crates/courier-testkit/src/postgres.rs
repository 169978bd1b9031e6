//! The shared test PostgreSQL: its URL (`COURIER_TEST_POSTGRES_URL`), a fresh schema per test
//! that is dropped afterwards, and one clear failure when the server cannot be reached.
//!
//! Tests never skip for a missing database: they fail and say how to start one.

use sqlx::{Connection, Executor, PgConnection};

/// Where the tests find PostgreSQL unless told otherwise.
pub const URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The environment variable that overrides [`URL_DEFAULT`].
pub const URL_ENV: &str = "COURIER_TEST_POSTGRES_URL";

/// The test server's URL.
pub fn url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| URL_DEFAULT.to_owned())
}

/// Fails the test with `what`, `error` and how to get a server running.
pub fn unreachable(what: &str, error: impl std::fmt::Display) -> ! {
    panic!(
        "{what}: {error}\n\
         The PostgreSQL tests need a server at {} (set {URL_ENV} to use another). Start the local one \
         with `pg_ctlcluster $(ls /etc/postgresql) main start` (scripts/services.sh does it for \
         scripts/test), or any server with trust auth for user postgres and a database `test`.",
        url()
    )
}

/// A schema of its own on the test server, dropped (with everything in it) when this is dropped.
/// The engine creates it when it opens.
#[derive(Debug)]
pub struct TestSchema {
    /// The schema's name, `courier_t_<16 hex digits>`.
    pub name: String,
}

impl Default for TestSchema {
    fn default() -> Self {
        Self::new()
    }
}

impl TestSchema {
    /// A fresh, unused schema name.
    pub fn new() -> Self {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        Self {
            name: format!("courier_t_{}", &hex[..16]),
        }
    }

    /// A plain connection whose search path is this schema, for tests that look underneath.
    pub async fn connect(&self) -> PgConnection {
        let mut conn = PgConnection::connect(&url())
            .await
            .unwrap_or_else(|e| unreachable("cannot connect to PostgreSQL", e));
        conn.execute(format!("SET search_path TO {}", self.name).as_str())
            .await
            .unwrap_or_else(|e| unreachable("cannot set the search path", e));
        conn
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if !run_detached(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)) {
            eprintln!("could not drop test schema {}", self.name);
        }
    }
}

/// A login role that may use the tables of a schema migrated beforehand and nothing more (no
/// `CREATE` on the database or the schema), as an application's role in a careful deploy.
/// Dropped, with its grants, when this is dropped.
#[derive(Debug)]
pub struct AppRole {
    /// The role's name, the schema's with `_app` appended.
    pub name: String,
    /// The test server's URL with this role's credentials, everything else kept.
    pub url: String,
}

impl TestSchema {
    /// Creates an [`AppRole`] for the tables (and sequences) the schema holds now.
    pub async fn app_role(&self) -> AppRole {
        const PASSWORD: &str = "courier";
        let (role, s) = (format!("{}_app", self.name), &self.name);
        let grants = format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'; GRANT USAGE ON SCHEMA {s} TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {role}; \
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {role}"
        );
        let mut admin = self.connect().await;
        admin
            .execute(sqlx::raw_sql(&grants))
            .await
            .unwrap_or_else(|e| unreachable("cannot create the application role", e));
        let url = url();
        let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", &url));
        let after_user = rest.split_once('@').map_or(rest, |(_, host)| host);
        AppRole {
            url: format!("{scheme}://{role}:{PASSWORD}@{after_user}"),
            name: role,
        }
    }
}

impl Drop for AppRole {
    fn drop(&mut self) {
        let role = &self.name;
        if !run_detached(format!("DROP OWNED BY {role}; DROP ROLE {role}")) {
            eprintln!("could not drop test role {role}");
        }
    }
}

/// Runs `sql` on a connection of its own; best effort, for `Drop`, which cannot await and may
/// run inside the test's runtime, hence a thread with its own small runtime. Returns whether it
/// ran.
fn run_detached(sql: String) -> bool {
    let ran = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async move {
            let mut conn = PgConnection::connect(&url()).await.ok()?;
            conn.execute("SET lock_timeout = '10s'").await.ok()?;
            conn.execute(sqlx::raw_sql(&sql)).await.ok()?;
            conn.close().await.ok()
        })
    })
    .join();
    matches!(ran, Ok(Some(())))
}

/// Waits until a session with this `application_name` waits for a lock (a row, a table, the
/// catalog), for tests that hold a transaction open and must release it only once the code
/// under test is blocked behind it. Panics naming `what` after 10 s.
pub async fn until_waiting_for_a_lock(application_name: &str, what: &str) {
    let mut watch = PgConnection::connect(&url())
        .await
        .unwrap_or_else(|e| unreachable("cannot connect to PostgreSQL", e));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(application_name)
        .fetch_one(&mut watch)
        .await
        .unwrap_or_else(|e| unreachable("cannot read pg_stat_activity", e));
        if waiting > 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what} never waited for the lock");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
