//! Options of the PostgreSQL engine, with their defaults spelled out, and URL parsing.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use courier_core::{Clock, InvalidInput, SystemClock};
use sqlx::postgres::PgConnectOptions;

/// The URL query parameter that names the schema (`postgres://…/db?courier_schema=jobs`).
pub const SCHEMA_PARAM: &str = "courier_schema";
/// The schema Courier uses unless told otherwise.
pub const SCHEMA_DEFAULT: &str = "courier";
/// Fewest connections an engine can work with: the wake-up listener's, the bulk-call
/// watcher's and one to serve calls.
pub const CONNECTIONS_MIN: u32 = 3;
/// Longest schema name: PostgreSQL's identifier limit (NAMEDATALEN - 1).
const SCHEMA_BYTES_MAX: usize = 63;

/// Options for [`crate::PostgresEngine::open`]. Build with `"postgres://…".parse()` or
/// [`PostgresOptions::new`], then the setters.
#[derive(Clone)]
pub struct PostgresOptions {
    pub(crate) connect: PgConnectOptions,
    pub(crate) schema: String,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) connections_max: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) idempotency_sweep_interval: Duration,
    pub(crate) durable_acks: bool,
}

impl fmt::Debug for PostgresOptions {
    // Hand-written so the password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("host", &self.connect.get_host())
            .field("port", &self.connect.get_port())
            .field("user", &self.connect.get_username())
            .field("database", &self.connect.get_database())
            .field("schema", &self.schema)
            .field("clock", &self.clock)
            .field("connections_max", &self.connections_max)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("idempotency_sweep_interval", &self.idempotency_sweep_interval)
            .field("durable_acks", &self.durable_acks)
            .finish()
    }
}

impl PostgresOptions {
    /// Options for the database at `url` (`postgres://user:password@host:port/database`),
    /// with every other setting at its default. Same as `url.parse()`.
    pub fn new(url: &str) -> Result<Self, InvalidInput> {
        url.parse()
    }

    /// The schema that holds Courier's tables (created if missing), so Courier can live beside
    /// an application's own tables. Must match `[a-z_][a-z0-9_]{0,62}`. Default `courier`.
    pub fn schema(mut self, schema: &str) -> Result<Self, InvalidInput> {
        validate_schema(schema)?;
        self.schema = schema.to_owned();
        Ok(self)
    }

    /// The clock deadlines are computed from. Default: [`SystemClock`].
    ///
    /// Every node sharing a database must use clocks that agree (NTP-synchronized system
    /// clocks): leases and delays are stored as epoch milliseconds of the node that wrote them.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Most connections the engine opens: one listens for wake-ups, one watches bulk calls
    /// while they run (see [`operation_timeout`](Self::operation_timeout)), the rest serve
    /// calls. At least 3. Default 16.
    pub fn connections_max(mut self, n: u32) -> Self {
        self.connections_max = n.max(CONNECTIONS_MIN);
        self
    }

    /// How long an operation waits for a connection before failing with
    /// `StorageError::Unavailable`; short, so a down database fails requests fast. Default 2 s.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Longest an operation may take before it fails with `StorageError::Unavailable` (a 503),
    /// waiting for a connection and behind other calls of its queue included: a server that
    /// stopped answering (frozen, or gone without its connections being reset) would otherwise
    /// hold requests until TCP gives up, many minutes later. The statements themselves are
    /// bounded the same way (also those run for several callers at once), and a connection
    /// that timed out is closed rather than used again, so the pool does not fill up with
    /// connections to a vanished server. The bulk operations whose work grows with the queue
    /// (purge, queue deletion, DLQ purge and redrive, stats) may run longer, for as long as the
    /// database is seen working on them: each time this much has passed, another connection
    /// checks that their server process is still busy with them, and they fail when it is
    /// gone or two checks in a row see no work: it blocked on the client or idle for a whole
    /// timeout, or no answer within this timeout. A long poll applies the timeout
    /// to each look at the queue, not to its wait. An operation that timed out
    /// may still take effect, possibly much later if the server was only frozen: retry with
    /// an idempotency key where a duplicate matters. Keep it above the acquire timeout, which
    /// then still decides how long a call waits for a connection. Default 10 s.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How often this node deletes idempotency records whose dedup window has passed.
    /// Default 30 s, as on SQLite.
    pub fn idempotency_sweep_interval(mut self, interval: Duration) -> Self {
        self.idempotency_sweep_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Whether an ack of a message outside ordering groups waits for the WAL flush before it
    /// returns. Default false: it commits as a lease does, without waiting, so a database crash
    /// may take back the acks of its last moments. Such a message is then delivered again once
    /// its lease runs out, with no failure counted: a duplicate, which at-least-once delivery
    /// allows anyway (handlers are idempotent, or run through the inbox). Any later durable
    /// write makes the earlier acks durable too. Acks of grouped messages, nacks and every
    /// other write but a receive's lease always wait for the flush. True makes every ack
    /// durable when it returns, at ~5–20 % of single-message throughput
    /// (docs/BENCHMARKS.md).
    pub fn durable_acks(mut self, durable: bool) -> Self {
        self.durable_acks = durable;
        self
    }

    /// See [`durable_acks`](Self::durable_acks).
    pub fn is_durable_acks(&self) -> bool {
        self.durable_acks
    }

    /// The schema Courier's tables live in.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    /// The sqlx connection options of the database, without Courier's session settings: for
    /// tools that need their own pool on the same database (benchmarks, test clean-up).
    pub fn connect_options(&self) -> PgConnectOptions {
        self.connect.clone()
    }

    /// `user@host:port/database`, without the password: for logs and error messages.
    pub fn location(&self) -> String {
        let c = &self.connect;
        format!(
            "{}@{}:{}/{}",
            c.get_username(),
            c.get_host(),
            c.get_port(),
            c.get_database().unwrap_or_default()
        )
    }
}

impl FromStr for PostgresOptions {
    type Err = InvalidInput;

    /// Parses `postgres://…` or `postgresql://…`; a `courier_schema` query parameter sets the
    /// schema, every other parameter is PostgreSQL's (`sslmode`, `application_name`, …).
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(InvalidInput::new(format!(
                "not a postgres URL: expected postgres://user@host:port/database, got {:?}",
                redact(url)
            )));
        }
        let (url, schema) = take_schema_param(url);
        let connect = PgConnectOptions::from_str(&url)
            .map_err(|e| InvalidInput::new(format!("invalid postgres URL {:?}: {e}", redact(&url))))?;
        let opts = Self {
            connect,
            schema: SCHEMA_DEFAULT.to_owned(),
            clock: Arc::new(SystemClock),
            connections_max: 16,
            acquire_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(10),
            idempotency_sweep_interval: Duration::from_secs(30),
            durable_acks: false,
        };
        match schema {
            Some(schema) => opts.schema(&schema),
            None => Ok(opts),
        }
    }
}

/// Splits the `courier_schema` parameter off `url`; the rest goes to sqlx unchanged.
fn take_schema_param(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((SCHEMA_PARAM, value)) => schema = Some(value.to_owned()),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, schema)
}

fn validate_schema(schema: &str) -> Result<(), InvalidInput> {
    let bytes = schema.as_bytes();
    let first_ok = bytes.first().is_some_and(|b| b.is_ascii_lowercase() || *b == b'_');
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if first_ok && rest_ok && bytes.len() <= SCHEMA_BYTES_MAX {
        Ok(())
    } else {
        Err(InvalidInput::new(format!(
            "schema {schema:?} is invalid: use [a-z_][a-z0-9_]{{0,62}}"
        )))
    }
}

/// The URL with any password replaced, for error messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_names_the_database_but_not_the_password() {
        let opts = PostgresOptions::new("postgres://app:hunter2@db.local:6543/orders").expect("valid url");
        assert_eq!(opts.location(), "app@db.local:6543/orders");
    }

    fn check_schema(schema: &str, ok: bool) {
        assert_eq!(validate_schema(schema).is_ok(), ok, "schema {schema:?}");
    }

    #[test]
    fn schema_names_follow_the_identifier_rule() {
        check_schema("courier", true);
        check_schema("_x", true);
        check_schema("jobs_2", true);
        check_schema(&"a".repeat(63), true);
        check_schema(&"a".repeat(64), false);
        check_schema("", false);
        check_schema("2jobs", false);
        check_schema("Jobs", false);
        check_schema("a-b", false);
        check_schema("a\"b", false);
        check_schema("a;drop", false);
    }

    #[test]
    fn parses_urls_and_the_schema_parameter() {
        let o: PostgresOptions = "postgres://u@localhost:5433/app".parse().unwrap();
        assert_eq!(o.schema_name(), "courier");
        assert_eq!(o.connect.get_port(), 5433);
        assert_eq!(o.connect.get_database(), Some("app"));
        let o: PostgresOptions = "postgresql://u@h/app?courier_schema=jobs&application_name=x"
            .parse()
            .unwrap();
        assert_eq!(o.schema_name(), "jobs");
        assert!("postgres://u@h/app?courier_schema=Bad"
            .parse::<PostgresOptions>()
            .is_err());
        assert!("sqlite://x.db".parse::<PostgresOptions>().is_err());
        let o = PostgresOptions::new("postgres://u@h/app")
            .unwrap()
            .schema("other")
            .unwrap();
        assert_eq!(o.schema_name(), "other");
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        let o: PostgresOptions = "postgres://u:secret@h/db".parse().unwrap();
        assert!(!format!("{o:?}").contains("secret"));
    }
}
