//! [`PostgresEngine`]: the `QueueEngine` over a PostgreSQL schema that any number of Courier
//! nodes may share.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use courier_core::limits::{ENQUEUE_BATCH_MAX, LEASE_MAX, LEASE_MIN, STATE_BYTES_MAX};
use courier_core::message::millis;
use courier_core::policy::check_duration;
use courier_core::{
    Clock, EnqueueError, Enqueued, Etag, InvalidInput, Lease, LeaseError, ListOptions, MessageId, MessageInfo,
    NackIntent, Namespace, NewMessage, Page, QueueEngine, QueueError, QueuePolicy, QueueRef, QueueStats, QueueSummary,
    Receipt, ReceiveBatch, ReceiveOptions, Redrive, StateDoc, StateError, StorageError, WaitHub,
};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use tokio::task::JoinHandle;

use crate::admin::{Side, Sweep};
use crate::error::storage;
use crate::hot::HotPath;
use crate::options::PostgresOptions;
use crate::receive::StepLimit;
use crate::tx::{transaction, Core};

/// Rounds of a one-step read and a catch-up before a read sweeps fully in its own transaction.
const CATCH_UP_ROUNDS_MAX: usize = 3;

/// The queue engine on PostgreSQL. Cheap to share behind an `Arc`; every operation is one
/// transaction on a pooled connection, and several engines (nodes) may share one schema.
pub struct PostgresEngine {
    core: Arc<Core>,
    hot: HotPath,
    /// See [`PostgresOptions::operation_timeout`].
    operation_timeout: Duration,
    /// The wake-up listener, notifier and idempotency sweeper tasks, stopped on shutdown and
    /// drop.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for PostgresEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEngine")
            .field("schema", &self.core.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresEngine {
    /// Connects, creates the schema if missing, applies migrations, and starts listening for
    /// other nodes' wake-ups.
    ///
    /// Fails with [`StorageError::Unavailable`] if the database cannot be reached within the
    /// acquire timeout.
    pub async fn open(opts: PostgresOptions) -> Result<Self, StorageError> {
        let pool = connect(&opts);
        migrate_pool(&pool, &opts.schema).await?;
        let hub = Arc::new(WaitHub::with_recheck(crate::wake::RECHECK_INTERVAL));
        let notifier = Arc::new(crate::wake::Notifier::new());
        let core = Arc::new(Core::new(
            pool.clone(),
            crate::tx::watcher_pool(&opts.connect, opts.operation_timeout),
            hub.clone(),
            notifier.clone(),
            &opts,
        ));
        let listener = crate::wake::listen(&opts.connect, &core.channel, opts.operation_timeout)
            .await
            .map_err(storage)?;
        let tasks = vec![
            crate::wake::spawn_listener(
                opts.connect.clone(),
                core.channel.clone(),
                core.notifier.node().to_owned(),
                hub,
                listener,
                opts.operation_timeout,
            ),
            crate::wake::spawn_notifier(pool.clone(), core.channel.clone(), notifier, opts.operation_timeout),
            crate::sweep::spawn(
                pool,
                opts.clock.clone(),
                opts.idempotency_sweep_interval,
                opts.operation_timeout,
            ),
        ];
        Ok(Self {
            hot: HotPath::new(core.clone()),
            operation_timeout: opts.operation_timeout,
            core,
            tasks: Mutex::new(tasks),
        })
    }

    /// Applies any migrations this build has and the database lacks (open does this too).
    /// Returns the schema version.
    pub async fn migrate(&self) -> Result<i64, StorageError> {
        migrate_pool(&self.core.pool, &self.core.schema).await
    }

    /// The schema the engine's tables live in.
    pub fn schema(&self) -> &str {
        &self.core.schema
    }

    /// Runs `operation`, failing it with `Unavailable` if the database has not answered
    /// within the operation timeout. Dropping it there is safe: a transaction not yet committed
    /// rolls back, and the hot path's statements run on tasks of their own that finish (or
    /// fail) once the database answers again.
    async fn bounded<T, E: From<StorageError>>(&self, operation: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        tokio::time::timeout(self.operation_timeout, operation)
            .await
            .unwrap_or_else(|_| {
                Err(StorageError::Unavailable(format!(
                    "postgres did not answer within {} ms; the operation's outcome is unknown",
                    self.operation_timeout.as_millis()
                ))
                .into())
            })
    }

    /// One page of the queue's live messages or dead letters, in enqueue order.
    async fn list(&self, queue: &QueueRef, side: Side, opts: ListOptions) -> Result<Page<MessageInfo>, QueueError> {
        opts.validate()?;
        let core = &self.core;
        self.read_swept(queue, StepLimit::Bounded, |sweep| {
            self.bounded(async move {
                transaction!(core, finish, |ctx| crate::admin::list(
                    &mut ctx, queue, side, opts, sweep
                ))
                .await
                .unwrap_or_else(|e| Err(e.into()))
            })
        })
        .await
    }

    /// Runs `read` (a transaction that sweeps the queue before it looks) with a one-step
    /// sweep; should that step hit its row limit, works the backlog off in steps of their own
    /// (each limited as `limit` says) and reads again, up to [`CATCH_UP_ROUNDS_MAX`] times
    /// (each round finds only what fell due during the one before); then reads sweeping fully.
    /// The common case stays one transaction, and the read shows every lapse and expiry due
    /// when it was called.
    async fn read_swept<T, Fut>(
        &self,
        queue: &QueueRef,
        limit: StepLimit,
        read: impl Fn(Sweep) -> Fut,
    ) -> Result<T, QueueError>
    where
        Fut: Future<Output = Result<Option<T>, QueueError>>,
    {
        for _ in 0..CATCH_UP_ROUNDS_MAX {
            if let Some(value) = read(Sweep::Step).await? {
                return Ok(value);
            }
            crate::receive::catch_up(&self.core, queue, limit).await?;
        }
        read(Sweep::Fully)
            .await?
            .ok_or_else(|| StorageError::Internal("a read that swept fully found rows left to sweep".to_owned()).into())
    }

    fn stop_tasks(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            task.abort();
        }
    }
}

impl Drop for PostgresEngine {
    fn drop(&mut self) {
        // The tasks hold pool handles; without this the pool would outlive the engine.
        self.stop_tasks();
    }
}

/// Creates the schema and applies migrations without starting an engine (for `courier
/// migrate`). Returns the schema version.
pub async fn migrate(opts: &PostgresOptions) -> Result<i64, StorageError> {
    let pool = connect(opts);
    let version = migrate_pool(&pool, &opts.schema).await;
    pool.close().await;
    version
}

/// Longest a session may sit idle inside a transaction before the server ends it. The engine's
/// transactions never wait on the client between statements for more than a moment.
const IDLE_IN_TRANSACTION_MS_MAX: u64 = 30_000;

/// A synchronous commit of a transaction that wrote something (PostgreSQL does not wait for
/// the disk when a transaction wrote no WAL, even with an id), so it returns once the WAL up
/// to it, every earlier commit's included, is on disk. The epoch row is rewritten unchanged;
/// `WHERE one` as in `epoch.rs`.
const FLUSH_SQL: &str = "UPDATE lease_epoch SET epoch = epoch WHERE one";

/// A lazily connecting pool whose every connection searches `schema` and commits synchronously.
fn connect(opts: &PostgresOptions) -> PgPool {
    // `schema` is validated as `[a-z_][a-z0-9_]{0,62}`. synchronous_commit is set explicitly
    // rather than trusting the server's default: a reply must never precede a durable commit
    // (leases and ungrouped acks, whose loss can only cause a redelivery, turn it off for their
    // own statement; see `receive_sql` and `ACK_UNGROUPED_SQL`).
    // A node that stalls inside a transaction (paused, partitioned) would keep row locks that
    // hide messages from every other node's SKIP LOCKED receive, and group locks; the server
    // ends such a session after a bound instead of waiting for TCP to notice. Notices such as
    // "schema already exists, skipping" from idempotent migrations are not worth a log line.
    // Plans are cached (generic) rather than made afresh on every call, which cost more CPU
    // than running the statements; `analyze.rs` keeps the statistics they are made from
    // current while a new table grows. Sequential scans are off because no statement of the
    // engine wants one on a queue table; the planner picks one only on statistics from when
    // the table was small. JIT is off: it compiles a statement for tens of milliseconds,
    // which a short statement never earns back, and `enable_seqscan = off` costs any
    // sequential scan far above its thresholds.
    let session = format!(
        "SET search_path TO \"{}\"; SET synchronous_commit TO on; \
         SET idle_in_transaction_session_timeout TO {IDLE_IN_TRANSACTION_MS_MAX}; \
         SET client_min_messages TO warning; SET plan_cache_mode TO force_generic_plan; SET enable_seqscan TO off; SET jit TO off",
        opts.schema
    );
    let release_timeout = opts.operation_timeout;
    PgPoolOptions::new()
        // The wake-up listener and the bulk-call watcher have a connection each of their own
        // (see `wake::listen` and `tx::watcher_pool`).
        .max_connections(opts.connections_max.saturating_sub(2).max(1))
        .acquire_timeout(opts.acquire_timeout)
        // No ping before handing out a pooled connection: it was a round trip on every
        // operation. After a database restart each stale connection fails one call with
        // `Unavailable` (a retryable error) and is dropped, as it would if the database went
        // away between the ping and the query.
        .test_before_acquire(false)
        .after_release(crate::tx::bounded_release_check(release_timeout))
        .after_connect(move |conn, _meta| {
            let session = session.clone();
            Box::pin(async move {
                conn.execute(sqlx::raw_sql(&session)).await?;
                crate::epoch::join(conn).await
            })
        })
        .connect_lazy_with(opts.connect.clone())
}

async fn migrate_pool(pool: &PgPool, schema: &str) -> Result<i64, StorageError> {
    let mut conn = pool.acquire().await.map_err(storage)?;
    let version = crate::schema::migrate(&mut conn, schema).await?;
    // This connection opened before the lease epoch tables may have existed.
    crate::epoch::join(&mut conn).await.map_err(storage)?;
    Ok(version)
}

fn validate_batch(messages: &[NewMessage]) -> Result<(), InvalidInput> {
    if messages.is_empty() || messages.len() > ENQUEUE_BATCH_MAX {
        return Err(InvalidInput::new(format!(
            "a batch holds 1 to {ENQUEUE_BATCH_MAX} messages, got {}",
            messages.len()
        )));
    }
    for (index, m) in messages.iter().enumerate() {
        m.validate()
            .map_err(|e| InvalidInput::new(format!("message {index}: {e}")))?;
    }
    Ok(())
}

fn encode_state(value: &Value) -> Result<String, InvalidInput> {
    let encoded = serde_json::to_string(value).map_err(|e| InvalidInput::new(format!("state: {e}")))?;
    if encoded.len() > STATE_BYTES_MAX {
        return Err(InvalidInput::new(format!(
            "state document is {} bytes serialized; the limit is {STATE_BYTES_MAX}",
            encoded.len()
        )));
    }
    Ok(encoded)
}

#[async_trait]
impl QueueEngine for PostgresEngine {
    async fn enqueue(&self, queue: &QueueRef, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, EnqueueError> {
        self.bounded(async {
            validate_batch(&messages)?;
            Ok(self.hot.enqueue(queue, messages).await?)
        })
        .await
    }

    async fn try_receive(&self, queue: &QueueRef, opts: &ReceiveOptions) -> Result<ReceiveBatch, QueueError> {
        self.bounded(async {
            opts.validate()?;
            Ok(self.hot.receive(queue, opts).await?)
        })
        .await
    }

    async fn ack_many(
        &self,
        queue: &QueueRef,
        receipts: &[Receipt],
    ) -> Result<Vec<Result<(), LeaseError>>, StorageError> {
        self.bounded(async { self.hot.ack_many(queue, receipts.to_vec()).await })
            .await
    }

    async fn nack(&self, queue: &QueueRef, receipt: &Receipt, intent: NackIntent) -> Result<(), LeaseError> {
        self.bounded(async {
            intent.validate()?;
            let core = &self.core;
            transaction!(core, finish, |ctx| crate::lease::nack(
                &mut ctx,
                queue,
                receipt,
                intent.clone()
            ))
            .await
            .unwrap_or_else(|e| Err(e.into()))
        })
        .await
    }

    async fn extend(&self, queue: &QueueRef, receipt: &Receipt, by: Duration) -> Result<Lease, LeaseError> {
        self.bounded(async {
            check_duration("by_ms", millis(by), LEASE_MIN, LEASE_MAX)?;
            let core = &self.core;
            let lease = transaction!(core, finish, |ctx| crate::lease::extend(&mut ctx, queue, receipt, by))
                .await
                .unwrap_or_else(|e| Err(e.into()))?;
            // The new deadline may come before the sweep planned for the old one.
            core.cache.sweep_by(queue, lease.deadline);
            Ok(lease)
        })
        .await
    }

    async fn get_state(&self, queue: &QueueRef, receipt: &Receipt) -> Result<StateDoc, StateError> {
        self.bounded(async {
            let core = &self.core;
            transaction!(core, finish, |ctx| crate::lease::get_state(&mut ctx, queue, receipt))
                .await
                .unwrap_or_else(|e| Err(e.into()))
        })
        .await
    }

    async fn put_state(
        &self,
        queue: &QueueRef,
        receipt: &Receipt,
        value: Value,
        if_match: Option<Etag>,
    ) -> Result<Etag, StateError> {
        self.bounded(async {
            let encoded = encode_state(&value)?;
            let core = &self.core;
            transaction!(core, finish, |ctx| crate::lease::put_state(
                &mut ctx,
                queue,
                receipt,
                &encoded,
                if_match.as_ref()
            ))
            .await
            .unwrap_or_else(|e| Err(e.into()))
        })
        .await
    }

    async fn get_message(&self, queue: &QueueRef, id: MessageId) -> Result<MessageInfo, QueueError> {
        let core = &self.core;
        self.read_swept(queue, StepLimit::Bounded, |sweep| {
            self.bounded(async move {
                transaction!(core, finish, |ctx| crate::admin::get_message(
                    &mut ctx, queue, id, sweep
                ))
                .await
                .unwrap_or_else(|e| Err(e.into()))
            })
        })
        .await?
        .ok_or(QueueError::MessageNotFound(id))
    }

    async fn list_messages(&self, queue: &QueueRef, opts: ListOptions) -> Result<Page<MessageInfo>, QueueError> {
        self.list(queue, Side::Live, opts).await
    }

    async fn purge(&self, queue: &QueueRef) -> Result<u64, QueueError> {
        let core = &self.core;
        transaction!(watched: core, finish, |ctx| crate::admin::purge(&mut ctx, queue, Side::Live))
            .await
            .unwrap_or_else(|e| Err(e.into()))
    }

    async fn list_queues(&self, namespace: Option<&Namespace>) -> Result<Vec<QueueSummary>, StorageError> {
        self.bounded(async {
            let core = &self.core;
            transaction!(core, finish_ok, |ctx| crate::queues::list(&mut ctx, namespace)).await
        })
        .await
    }

    async fn delete_queue(&self, queue: &QueueRef) -> Result<(), QueueError> {
        let core = &self.core;
        let deleted = transaction!(watched: core, finish, |ctx| crate::queues::delete(&mut ctx, queue))
            .await
            .unwrap_or_else(|e| Err(e.into()));
        core.cache.forget(queue);
        deleted
    }

    async fn set_policy(&self, queue: &QueueRef, policy: QueuePolicy) -> Result<(), QueueError> {
        policy.validate()?;
        let core = &self.core;
        let set = self
            .bounded(async {
                transaction!(core, finish_ok, |ctx| crate::queues::set_policy(
                    &mut ctx, queue, &policy
                ))
                .await
            })
            .await;
        // Also after a timeout: the change may have committed.
        core.cache.forget(queue);
        Ok(set?)
    }

    async fn policy(&self, queue: &QueueRef) -> Result<QueuePolicy, QueueError> {
        self.bounded(async {
            let core = &self.core;
            let meta = transaction!(core, finish, |ctx| crate::queues::require(&mut ctx, queue))
                .await
                .unwrap_or_else(|e| Err(e.into()))?;
            Ok(meta.policy)
        })
        .await
    }

    async fn stats(&self, queue: &QueueRef) -> Result<QueueStats, QueueError> {
        // Watched rather than bounded: counting reads every row of the queue, which takes long
        // on a deep one.
        let core = &self.core;
        let mut stats = self
            .read_swept(queue, StepLimit::Watched, |sweep| async move {
                transaction!(watched: core, finish, |ctx| crate::admin::stats(&mut ctx, queue, sweep))
                    .await
                    .unwrap_or_else(|e| Err(e.into()))
            })
            .await?;
        stats.waiting_receivers = self.core.hub.waiting(queue);
        Ok(stats)
    }

    async fn dlq_list(&self, queue: &QueueRef, opts: ListOptions) -> Result<Page<MessageInfo>, QueueError> {
        self.list(queue, Side::Dead, opts).await
    }

    async fn dlq_purge(&self, queue: &QueueRef) -> Result<u64, QueueError> {
        let core = &self.core;
        transaction!(watched: core, finish, |ctx| crate::admin::purge(&mut ctx, queue, Side::Dead))
            .await
            .unwrap_or_else(|e| Err(e.into()))
    }

    async fn dlq_redrive(&self, queue: &QueueRef, which: Redrive) -> Result<u64, QueueError> {
        let core = &self.core;
        transaction!(watched: core, finish, |ctx| crate::admin::redrive(&mut ctx, queue, &which))
            .await
            .unwrap_or_else(|e| Err(e.into()))
    }

    /// Stops the wake-up listener, makes the leases and acks that committed without waiting
    /// for the disk durable (one synchronous commit flushes the WAL up to it), and closes the
    /// pool; later operations fail with `Unavailable`. A database that cannot be reached is
    /// logged, not an error: every other write was durable when it returned.
    async fn shutdown(&self) -> Result<(), StorageError> {
        self.stop_tasks();
        self.core.cancel_maintenance().await;
        let flush = sqlx::query(FLUSH_SQL).execute(&self.core.pool);
        match tokio::time::timeout(self.operation_timeout, flush).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not flush at shut-down: a database crash may still take back the last leases and acks")
            }
            Err(_) => tracing::warn!(
                "flushing at shut-down timed out: a database crash may still take back the last leases and acks"
            ),
        }
        // `close` marks a pool closed when called, before `release_all`: nothing kept warm is
        // taken again afterwards.
        let (closing, closing_watcher) = (self.core.pool.close(), self.core.watcher.close());
        let closing = async { tokio::join!(closing, closing_watcher) };
        self.core.warm.release_all();
        // Connections still waiting on a server that stopped answering are each closed by
        // the release check within the operation timeout; a bulk operation may run longer.
        if tokio::time::timeout(self.operation_timeout, closing).await.is_err() {
            tracing::warn!(
                timeout_ms = self.operation_timeout.as_millis(),
                "shut down with connections still busy (a long bulk operation, or a database that stopped answering)"
            );
        }
        Ok(())
    }

    async fn ready(&self) -> Result<(), StorageError> {
        self.bounded(async {
            sqlx::query("SELECT 1")
                .execute(&self.core.pool)
                .await
                .map(drop)
                .map_err(storage)
        })
        .await
    }

    fn wait_hub(&self) -> &WaitHub {
        &self.core.hub
    }

    fn clock(&self) -> &dyn Clock {
        self.core.clock.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: T) {}

    /// Compiles only if the futures are `Send`, as `async_trait` callers (the test harness, the
    /// server's state) need; sqlx calls held across awaits can silently lose that.
    #[allow(dead_code)]
    fn open_and_migrate_are_send(opts: PostgresOptions, pool: PgPool) {
        is_send(migrate_pool(&pool, "x"));
        is_send(crate::wake::listen(&opts.connect, "x", Duration::from_secs(1)));
        is_send(PostgresEngine::open(opts));
    }

    // The shutdown tests below need the shared PostgreSQL server (as the crate's tests/ do),
    // and live here because they drive crate-private parts: `core`, `as_maintenance`.

    const SQL: &str = "ANALYZE messages";

    /// A node on a fresh schema, a connection of its pool to run maintenance on, and another
    /// session holding a lock on `messages` that [`SQL`] has to wait for.
    struct Maintained {
        _schema: courier_testkit::postgres::TestSchema,
        node: PostgresEngine,
        blocker: sqlx::PgConnection,
        conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
        backend: Option<crate::tx::Backend>,
    }

    async fn maintained_behind_a_lock() -> Maintained {
        use courier_testkit::postgres::{url, TestSchema};
        let schema = TestSchema::new();
        let opts = PostgresOptions::new(&url())
            .and_then(|o| o.schema(&schema.name))
            .expect("valid options");
        let node = PostgresEngine::open(opts).await.expect("open");
        let mut blocker = schema.connect().await;
        blocker.execute("BEGIN").await.expect("begin");
        blocker
            .execute("LOCK TABLE messages IN SHARE UPDATE EXCLUSIVE MODE")
            .await
            .expect("lock");
        let mut conn = node.core.pool.acquire().await.expect("connection");
        let backend = crate::tx::backend_of(&mut conn).await.expect("backend");
        assert!(backend.is_some(), "the test role sees its own sessions");
        Maintained {
            _schema: schema,
            node,
            blocker,
            conn,
            backend,
        }
    }

    /// Maintenance registered but not yet running on the server when shutdown cancels (its
    /// statement still on the way) is cancelled once it starts: here an `ANALYZE` that would
    /// otherwise wait for a lock long after the node is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_cancels_maintenance_whose_statement_starts_just_after() {
        let mut m = maintained_behind_a_lock().await;
        let (node, mut conn) = (&m.node, m.conn);
        let (registered, on_registered) = tokio::sync::oneshot::channel();
        // Moved in, so the connection goes back (and the shutdown's close can end) with the work.
        let work = async move {
            let _ = registered.send(());
            tokio::time::sleep(Duration::from_millis(50)).await;
            sqlx::raw_sql(SQL).execute(&mut *conn).await.map(drop)
        };
        let shutdown = async {
            on_registered.await.expect("registered");
            node.shutdown().await.expect("shutdown");
        };
        let both = async { tokio::join!(node.core.as_maintenance(m.backend, SQL, work), shutdown).0 };
        let outcome = tokio::time::timeout(Duration::from_secs(5), both).await;
        assert!(
            matches!(outcome, Ok(Err(sqlx::Error::PoolClosed))),
            "the ANALYZE should end cancelled, not wait for the lock: {outcome:?}"
        );
        m.blocker.execute("COMMIT").await.expect("unlock");
    }

    /// Maintenance on a backend that shows no statements (`track_activities` off) can never be
    /// seen running, so shutdown does not wait out the cancel window for it: one round, then on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_does_not_wait_for_maintenance_it_cannot_see() {
        let mut m = maintained_behind_a_lock().await;
        let (node, mut conn) = (&m.node, m.conn);
        conn.execute("SET track_activities = off").await.expect("untracked");
        let (started, on_started) = tokio::sync::oneshot::channel();
        let work = async move {
            let _ = started.send(());
            sqlx::raw_sql(SQL).execute(&mut *conn).await.map(drop)
        };
        let cancel = async {
            on_started.await.expect("started");
            // The ANALYZE waits for the lock: the moment the cancel should have hit it.
            // pg_locks, since pg_stat_activity shows no wait for an untracked backend.
            let waiting = "SELECT count(*) FROM pg_locks WHERE relation = 'messages'::regclass AND NOT granted";
            while sqlx::query_scalar::<_, i64>(waiting)
                .fetch_one(&mut m.blocker)
                .await
                .expect("pg_locks")
                == 0
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let began = tokio::time::Instant::now();
            node.core.cancel_maintenance().await;
            let took = began.elapsed();
            m.blocker.execute("COMMIT").await.expect("unlock");
            took
        };
        let both = async { tokio::join!(node.core.as_maintenance(m.backend, SQL, work), cancel) };
        let (outcome, took) = tokio::time::timeout(Duration::from_secs(5), both)
            .await
            .expect("the ANALYZE ends once unlocked");
        assert!(
            took < crate::tx::CANCEL_WINDOW,
            "no round can see the ANALYZE, so none should follow the first: took {took:?}"
        );
        assert!(outcome.is_ok(), "the uncancelled ANALYZE finishes: {outcome:?}");
        node.shutdown().await.expect("shutdown");
    }
}
