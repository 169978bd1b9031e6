//! What every operation runs inside: one transaction with the clock's time, the wake-ups to
//! send once it commits, and the retry of a transaction PostgreSQL rolled back on a conflict.
//!
//! This is the PostgreSQL counterpart of the SQLite engine's `writer.rs`: there one thread
//! batches operations into a transaction; here each operation has its own, and the database's
//! row locks and advisory locks keep concurrent ones (on any node) apart.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use courier_core::{Clock, MessageId, MessageIdGenerator, QueueRef, StorageError, Timestamp, WaitHub};
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use crate::cache::QueueCache;
use crate::error::{is_conflict, storage, Db};
use crate::wake::Notifier;
use crate::warm::WarmConnections;
use crate::PostgresOptions;

/// How many times a transaction rolled back by a deadlock or serialization failure is run in
/// all before the caller gets `Unavailable`.
const CONFLICT_ATTEMPTS_MAX: u32 = 5;

/// What the operations of one engine share.
pub(crate) struct Core {
    pub(crate) pool: PgPool,
    /// One connection of its own for looking at the backends of bulk operations.
    pub(crate) watcher: PgPool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hub: Arc<WaitHub>,
    /// The schema the tables live in; part of every advisory lock key.
    pub(crate) schema: String,
    /// The LISTEN/NOTIFY channel of this schema.
    pub(crate) channel: String,
    /// Tells other nodes about commits that may have made messages ready.
    pub(crate) notifier: Arc<Notifier>,
    /// Queue rows and sweep times this node remembers between calls.
    pub(crate) cache: QueueCache,
    /// Connections kept for the hot path's autocommitted statements.
    pub(crate) warm: WarmConnections,
    /// See [`crate::PostgresOptions::operation_timeout`].
    pub(crate) operation_timeout: Duration,
    /// See [`crate::PostgresOptions::durable_acks`].
    pub(crate) durable_acks: bool,
    ids: Mutex<MessageIdGenerator>,
    maintenance: Mutex<Maintenance>,
}

/// The backends running this node's background maintenance (vacuum, `ANALYZE`), so shutdown
/// can cancel them, and whether it has.
#[derive(Debug, Default)]
struct Maintenance {
    cancelled: bool,
    /// Each with the statement it runs.
    running: Vec<(Backend, &'static str)>,
}

impl Core {
    pub(crate) fn new(
        pool: PgPool,
        watcher: PgPool,
        hub: Arc<WaitHub>,
        notifier: Arc<Notifier>,
        opts: &PostgresOptions,
    ) -> Self {
        let channel = crate::wake::channel(&opts.schema);
        let warm = WarmConnections::for_pool_of(pool.options().get_max_connections());
        Self {
            pool,
            watcher,
            warm,
            clock: opts.clock.clone(),
            hub,
            schema: opts.schema.clone(),
            channel,
            notifier,
            operation_timeout: opts.operation_timeout,
            durable_acks: opts.durable_acks,
            cache: QueueCache::default(),
            ids: Mutex::new(MessageIdGenerator::new()),
            maintenance: Mutex::default(),
        }
    }

    /// Wakes this node's receivers of `queues` directly and hands the wake-ups for other nodes
    /// to the notifier; called once the change that made messages ready has committed.
    pub(crate) fn announce(&self, queues: &[QueueRef]) {
        for queue in queues {
            self.hub.notify(queue);
        }
        self.notifier.publish(queues);
    }

    /// [`announce`](Self::announce) for `ready` new messages of one queue: wakes only as many
    /// of this node's receivers as they can serve.
    pub(crate) fn announce_ready(&self, queue: &QueueRef, ready: usize) {
        self.hub.notify_ready(queue, ready);
        self.notifier.publish(std::slice::from_ref(queue));
    }

    /// Runs one autocommitted statement on a connection the hot path keeps between
    /// statements (see [`WarmConnections`]).
    pub(crate) async fn on_warm<T>(&self, statement: impl AsyncFnOnce(&mut PgConnection) -> Db<T>) -> Db<T> {
        let mut conn = self.warm.take(&self.pool).await?;
        let outcome = self.within(statement(&mut conn)).await;
        conn.settle(&outcome);
        outcome
    }

    /// Runs `work` (statements on a connection it holds), failing it with a timed-out I/O
    /// error once the operation timeout has passed: the connection may be waiting on a server
    /// that will never answer (a host gone without closing its sockets), and the work may run
    /// on a combiner's task that every later call of its queue waits for. A connection dropped
    /// this way is closed by the pool's release check rather than used again.
    pub(crate) async fn within<T>(&self, work: impl Future<Output = Db<T>>) -> Db<T> {
        within_limit(self.operation_timeout, work).await
    }

    /// Runs `work`, a bulk operation on `backend` whose work grows with the queue (so no fixed
    /// time limit fits it), for as long as the database is seen working on it: each time the
    /// operation timeout passes, the watcher's connection looks the backend up while `work`
    /// goes on. The operation fails with a timed-out I/O error when the backend is gone (a
    /// restart, a failover), or when two looks in a row see no work: the backend waiting for
    /// us for a whole timeout (its answer lost on a connection that went silent), or no answer
    /// to the look (a frozen or vanished server). A backend given up on is terminated, so it
    /// does not go on holding the operation's locks.
    pub(crate) async fn watched<T>(&self, backend: Option<Backend>, work: impl Future<Output = Db<T>>) -> Db<T> {
        let Some(backend) = backend else {
            // Its row in pg_stat_activity is hidden from this role: nothing to watch by.
            return work.await;
        };
        let mut work = std::pin::pin!(work);
        let mut no_work_seen = false;
        loop {
            let look = async {
                tokio::time::sleep(self.operation_timeout).await;
                self.within(backend.working(&self.watcher, self.operation_timeout))
                    .await
            };
            let working = tokio::select! {
                // A finished operation wins over a look that came back at the same moment.
                biased;
                outcome = &mut work => return outcome,
                look = look => look,
            };
            let working = match working {
                Ok(Some(working)) => working,
                Ok(None) => return Err(stopped_working(backend)),
                // The server answered, refusing the look (say, too many connections): it is
                // up, and nothing says the operation stopped.
                Err(e @ sqlx::Error::Database(_)) => {
                    tracing::debug!(error = %e, pid = backend.pid, "a look at the backend of a bulk operation was refused");
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, pid = backend.pid, "could not look up the backend of a bulk operation");
                    false
                }
            };
            if !working && no_work_seen {
                backend.terminate(self).await;
                return Err(stopped_working(backend));
            }
            no_work_seen = !working;
        }
    }

    /// Runs `work`, background maintenance sending `sql` on `backend`, where
    /// [`cancel_maintenance`](Self::cancel_maintenance) can reach it. Once that has run, no
    /// maintenance starts, and one it cancelled fails with `PoolClosed`, as one that could not
    /// get a connection from the closed pool does: the engine shut down, nothing went wrong.
    /// Work on a backend this role cannot see (`None`, see [`backend_of`]) cannot be cancelled.
    pub(crate) async fn as_maintenance<T>(
        &self,
        backend: Option<Backend>,
        sql: &'static str,
        work: impl Future<Output = Db<T>>,
    ) -> Db<T> {
        {
            let mut maintenance = self.maintenance.lock().unwrap_or_else(PoisonError::into_inner);
            if maintenance.cancelled {
                return Err(sqlx::Error::PoolClosed);
            }
            maintenance.running.extend(backend.map(|backend| (backend, sql)));
        }
        let _registered = backend.map(|backend| Registered { core: self, backend });
        let outcome = work.await;
        let cancelled = self
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cancelled;
        match outcome {
            Err(_) if cancelled => Err(sqlx::Error::PoolClosed),
            outcome => outcome,
        }
    }

    /// Cancels the maintenance running on the server and lets none start afterwards: at
    /// shutdown, so no vacuum or `ANALYZE` goes on working, or waiting for a lock, for a node
    /// that is gone (the server would only notice the closed connection when it next answers).
    ///
    /// Best effort, in bounded statements. It cancels a backend only while it runs its
    /// maintenance statement: one that finished meanwhile may already serve another call on
    /// the same connection, which a cancel must not hit. A statement registered but not yet
    /// running on the server is cancelled by a later round, as long as the work stays
    /// registered, for up to [`CANCEL_WINDOW`] after the first round. It stops at once when
    /// a round cannot reach the server or no registered backend can ever be seen running
    /// (gone, or on a server with `track_activities` off, whose statements it therefore misses).
    pub(crate) async fn cancel_maintenance(&self) {
        self.maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cancelled = true;
        let mut deadline = None;
        loop {
            let running = self.running_maintenance();
            if running.is_empty() {
                return;
            }
            match self.cancel_running(&running).await {
                Ok(0) => {
                    tracing::debug!(
                        left = running.len(),
                        "maintenance registered on backends that show no statements (gone, or track_activities off); not cancelled"
                    );
                    return;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "could not cancel the maintenance running at shutdown");
                    return;
                }
            }
            // Counted from the end of the first round, which may have had to connect first.
            let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + CANCEL_WINDOW);
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(
                    left = self.running_maintenance().len(),
                    "maintenance still registered after the cancel window; the pool closes its connections when it ends"
                );
                return;
            }
            tokio::time::sleep(CANCEL_RECHECK).await;
        }
    }

    fn running_maintenance(&self) -> Vec<(Backend, &'static str)> {
        self.maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running
            .clone()
    }

    /// One round of [`cancel_maintenance`](Self::cancel_maintenance): how many of the
    /// `running` backends can still be seen running their statement (present, with activity
    /// tracked), whether or not this round cancelled them.
    async fn cancel_running(&self, running: &[(Backend, &'static str)]) -> Db<i64> {
        let (pids, starts, statements): (Vec<i32>, Vec<i64>, Vec<&str>) =
            running.iter().map(|(b, sql)| (b.pid, b.started_us, *sql)).collect();
        self.within(async {
            sqlx::query_scalar(CANCEL_MAINTENANCE_SQL)
                .bind(&pids)
                .bind(&starts)
                .bind(&statements)
                .fetch_one(&self.watcher)
                .await
        })
        .await
    }

    /// `n` fresh ids stamped `now`, increasing in the order returned.
    pub(crate) fn mint_ids(&self, now: Timestamp, n: usize) -> Vec<MessageId> {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        (0..n).map(|_| ids.next(now)).collect()
    }
}

/// A PostgreSQL backend (server process) as `pg_stat_activity` shows it. The start time is
/// part of the name: after a restart, or on another server after a failover, the same process
/// id may belong to another session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backend {
    pid: i32,
    started_us: i64,
}

/// `pg_stat_activity`'s row of the backend `$1` started at `$2` (microseconds since the epoch).
const BACKEND_ROW: &str =
    "FROM pg_stat_activity WHERE pid = $1 AND (extract(epoch FROM backend_start) * 1000000)::bigint = $2";

impl Backend {
    /// Whether the backend is working on its operation: running a statement (not blocked on
    /// sending to or reading from us), or between two of them for less than `recent`; `None`
    /// if it is gone. With `track_activities` off the server cannot tell, and neither can we.
    async fn working(self, watcher: &PgPool, recent: Duration) -> Db<Option<bool>> {
        let sql = format!(
            "SELECT CASE WHEN state = 'active' THEN wait_event_type IS DISTINCT FROM 'Client' \
               WHEN state IS NULL OR state = 'disabled' THEN true \
               ELSE clock_timestamp() - state_change < $3 * interval '1 millisecond' END {BACKEND_ROW}"
        );
        let recent_ms = i64::try_from(recent.as_millis()).unwrap_or(i64::MAX);
        sqlx::query_scalar(&sql)
            .bind(self.pid)
            .bind(self.started_us)
            .bind(recent_ms)
            .fetch_optional(watcher)
            .await
    }

    /// Ends the backend given up on, best effort: its transaction rolls back and its locks go
    /// now rather than when the server notices the closed connection. A role may end its own
    /// sessions.
    async fn terminate(self, core: &Core) {
        let sql = format!("SELECT pg_terminate_backend(pid) {BACKEND_ROW}");
        let ended = core.within(async {
            sqlx::query(&sql)
                .bind(self.pid)
                .bind(self.started_us)
                .execute(&core.watcher)
                .await
        });
        if let Err(e) = ended.await {
            tracing::debug!(error = %e, pid = self.pid, "could not end the backend of an abandoned bulk operation");
        }
    }
}

/// Longest [`Core::cancel_maintenance`] goes on cancelling maintenance that is still registered,
/// after its first round: a statement sent just before the cancel reaches the server within a
/// moment.
pub(crate) const CANCEL_WINDOW: Duration = Duration::from_millis(500);
/// Pause between two rounds of [`Core::cancel_maintenance`].
const CANCEL_RECHECK: Duration = Duration::from_millis(10);

/// Cancels the backends `$1` started at `$2` (as in [`BACKEND_ROW`]) that are running the
/// statement `$3` at this moment, and counts those of them that show their activity: the
/// others (gone, or with `track_activities` off: state `disabled`) no round can cancel.
/// `CASE`, so a backend not running its statement is never signalled; `MATERIALIZED`, so the
/// cancels run although only the count is read.
const CANCEL_MAINTENANCE_SQL: &str = "WITH seen AS MATERIALIZED (SELECT CASE \
       WHEN a.state = 'active' AND a.query = m.query THEN pg_cancel_backend(a.pid) END AS cancelled \
     FROM pg_stat_activity a \
     JOIN unnest($1::int[], $2::bigint[], $3::text[]) AS m(pid, started_us, query) \
       ON a.pid = m.pid AND (extract(epoch FROM a.backend_start) * 1000000)::bigint = m.started_us \
     WHERE a.state IS DISTINCT FROM 'disabled') \
     SELECT count(*) FROM seen";

/// Takes a backend off [`Core`]'s running maintenance when its work ends or is dropped.
struct Registered<'a> {
    core: &'a Core,
    backend: Backend,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut maintenance = self.core.maintenance.lock().unwrap_or_else(PoisonError::into_inner);
        maintenance.running.retain(|(running, _)| *running != self.backend);
    }
}

/// The backend `conn` runs on, for [`Core::watched`]; `None` if this role may not see its
/// start time (a session whose current role is not its login role).
pub(crate) async fn backend_of(conn: &mut PgConnection) -> Db<Option<Backend>> {
    let (pid, started_us): (i32, Option<i64>) = sqlx::query_as(
        "SELECT pg_backend_pid(), (SELECT (extract(epoch FROM backend_start) * 1000000)::bigint \
           FROM pg_stat_activity WHERE pid = pg_backend_pid())",
    )
    .fetch_one(conn)
    .await?;
    static WARNED: std::sync::Once = std::sync::Once::new();
    if started_us.is_none() {
        WARNED.call_once(|| {
            tracing::warn!(pid, "this role cannot see its own sessions in pg_stat_activity; bulk operations and maintenance run unwatched, with no time limit");
        });
    }
    Ok(started_us.map(|started_us| Backend { pid, started_us }))
}

/// The watcher's pool: one connection, opened at the first look and closed after a minute
/// unused, so a look never waits for the engine's pool, which the operation it watches may
/// have taken to its last connection. Its acquire timeout is the operation timeout: a look
/// that cannot connect in that time counts as no answer.
pub(crate) fn watcher_pool(connect: &PgConnectOptions, operation_timeout: Duration) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(operation_timeout)
        .idle_timeout(Duration::from_secs(60))
        .after_release(bounded_release_check(operation_timeout))
        .connect_lazy_with(connect.clone())
}

/// What [`bounded_release_check`] answers: whether to keep the connection.
type ReleaseCheck<'c> = std::pin::Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + 'c>>;

/// The check a pool runs on each connection handed back, bounded by `limit`. sqlx pings every
/// connection handed back, first waiting for the answers to whatever was left unread on it,
/// and with no limit a connection to a host that vanished without closing its sockets would
/// hold its pool slot until TCP gives up (many minutes). This ping runs first, bounded; an
/// error closes the connection at once. (sqlx's own ping follows; on a sound connection both
/// are quick.)
pub(crate) fn bounded_release_check(
    limit: Duration,
) -> impl for<'c> Fn(&'c mut PgConnection, PoolConnectionMetadata) -> ReleaseCheck<'c> + Send + Sync + 'static {
    move |conn, _meta| Box::pin(async move { within_limit(limit, conn.ping()).await.map(|()| true) })
}

/// The error of a bulk operation the database stopped working on: an I/O error, as for a
/// call that timed out, so the connection is not used again and the caller gets `Unavailable`.
fn stopped_working(backend: Backend) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "postgres stopped working on this operation (backend {} is gone or waits for an answer that does not come)",
            backend.pid
        ),
    ))
}

/// One operation's transaction.
pub(crate) struct Ctx<'e> {
    pub(crate) tx: Transaction<'static, Postgres>,
    /// The engine clock's time when the transaction began; every deadline is computed from it.
    pub(crate) now: Timestamp,
    pub(crate) core: &'e Core,
    wake: Vec<QueueRef>,
}

impl<'e> Ctx<'e> {
    /// Takes a pooled connection (failing after the acquire timeout) and begins a transaction.
    pub(crate) async fn begin(core: &'e Core) -> Db<Self> {
        let tx = core.pool.begin().await?;
        Ok(Self {
            tx,
            now: core.clock.now(),
            core,
            wake: Vec::new(),
        })
    }

    /// The backend this transaction runs on, for [`Core::watched`]; `None` if this role may
    /// not see its start time (a session whose current role is not its login role).
    pub(crate) async fn backend(&mut self) -> Db<Option<Backend>> {
        backend_of(self.conn()).await
    }

    /// The transaction's connection, for `execute(ctx.conn())`.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Asks for the queue's long-polls to be woken, on every node, once this commits.
    pub(crate) fn wake(&mut self, queue: &QueueRef) {
        if !self.wake.contains(queue) {
            self.wake.push(queue.clone());
        }
    }

    /// Commits, then wakes this node's receivers directly and hands the wake-ups for other
    /// nodes to the notifier.
    ///
    /// The NOTIFY is not part of the transaction on purpose: PostgreSQL serializes the commits
    /// of all transactions that notify (a database-wide lock held through the WAL flush), which
    /// defeats group commit and capped single-message throughput at the disk's fsync rate.
    async fn commit(self) -> Db<()> {
        self.tx.commit().await?;
        self.core.announce(&self.wake);
        Ok(())
    }
}

impl Ctx<'_> {
    /// Commits when the operation succeeded and rolls back otherwise, always explicitly: a
    /// transaction that sqlx drops is rolled back later, in the background, and until then its
    /// row locks make other receivers `SKIP LOCKED` past messages that nobody holds.
    pub(crate) async fn finish<T, E>(self, result: Db<Result<T, E>>) -> Db<Result<T, E>> {
        match result {
            Ok(Ok(value)) => {
                self.commit().await?;
                Ok(Ok(value))
            }
            Ok(Err(refused)) => {
                self.tx.rollback().await?;
                Ok(Err(refused))
            }
            Err(e) => Err(self.abandon(e).await),
        }
    }

    /// [`finish`](Self::finish) for operations without a refusal of their own.
    pub(crate) async fn finish_ok<T>(self, result: Db<T>) -> Db<T> {
        match result {
            Ok(value) => {
                self.commit().await?;
                Ok(value)
            }
            Err(e) => Err(self.abandon(e).await),
        }
    }

    /// Rolls back after a database error (a failed transaction keeps its locks until then) and
    /// returns that error; a rollback that fails too means the connection is gone, which
    /// releases the locks just the same.
    async fn abandon(self, e: sqlx::Error) -> sqlx::Error {
        if let Err(rollback) = self.tx.rollback().await {
            tracing::debug!(error = %rollback, "rollback after a failed operation failed too");
        }
        e
    }
}

/// Runs `work` (database calls), failing it with [`timed_out`] once `limit` has passed.
pub(crate) async fn within_limit<T>(limit: Duration, work: impl Future<Output = Db<T>>) -> Db<T> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(timed_out(limit)))
}

/// The error of a database call that got no answer within `limit`: an I/O error, so the
/// connection is treated as broken and the caller gets `Unavailable`.
fn timed_out(limit: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("postgres did not answer within {} ms", limit.as_millis()),
    ))
}

/// Runs `attempt` (one whole transaction) again while PostgreSQL reports a deadlock or a
/// serialization failure, which roll the transaction back and leave nothing changed.
pub(crate) async fn retry<T, F, Fut>(mut attempt: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Db<T>>,
{
    let mut attempts = 1;
    loop {
        match attempt().await {
            Err(e) if is_conflict(&e) && attempts < CONFLICT_ATTEMPTS_MAX => {
                tracing::debug!(error = %e, attempts, "transaction conflicted; running it again");
                attempts += 1;
            }
            other => return other.map_err(storage),
        }
    }
}

/// Runs `$op` (an expression that uses `$ctx`, a fresh transaction on `$core`) and ends the
/// transaction with `$finish` (`finish` or `finish_ok`, see [`Ctx`]); the whole is run again
/// when PostgreSQL rolls it back for a deadlock or serialization failure. Each run is bounded
/// by the operation timeout ([`Core::within`]), except with `watched:` first, for the bulk
/// operations whose work grows with the queue: those run as long as the database is seen
/// working on them ([`Core::watched`]).
macro_rules! transaction {
    (watched: $core:expr, $finish:ident, |$ctx:ident| $op:expr) => {
        $crate::tx::retry(|| async {
            let (mut $ctx, backend) = $core
                .within(async {
                    let mut ctx = $crate::tx::Ctx::begin($core).await?;
                    let backend = ctx.backend().await?;
                    Ok((ctx, backend))
                })
                .await?;
            $core
                .watched(backend, async {
                    let result = $op.await;
                    $ctx.$finish(result).await
                })
                .await
        })
    };
    ($core:expr, $finish:ident, |$ctx:ident| $op:expr) => {
        $crate::tx::retry(|| {
            $core.within(async {
                let mut $ctx = $crate::tx::Ctx::begin($core).await?;
                let result = $op.await;
                $ctx.$finish(result).await
            })
        })
    };
}
pub(crate) use transaction;
