//! The group-commit writer: one thread owns the connection and runs every operation.
//!
//! Operations queue up as jobs; the writer takes all that are waiting (up to a limit), runs
//! each inside its own savepoint of one transaction, commits once (one fsync), and only then
//! answers the callers and wakes long-polls. Concurrent writers thus share one fsync.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_core::{Clock, MessageIdGenerator, QueuePolicy, QueueRef, StorageError, Timestamp, WaitHub};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::{storage, SqlResult};
use crate::options::CommitHook;

/// A queue's row id and policy, cached by the writer (the only writer, so never stale).
#[derive(Debug, Clone)]
pub(crate) struct QueueMeta {
    pub(crate) id: i64,
    pub(crate) policy: QueuePolicy,
}

/// What an operation sees while it runs inside the writer's transaction.
pub(crate) struct Ctx<'c> {
    pub(crate) conn: &'c Connection,
    pub(crate) now: Timestamp,
    pub(crate) ids: &'c mut MessageIdGenerator,
    pub(crate) queues: &'c mut HashMap<QueueRef, QueueMeta>,
    wake: &'c mut Vec<QueueRef>,
}

impl Ctx<'_> {
    /// Asks for the queue's long-polls to be woken once this transaction has committed.
    pub(crate) fn wake(&mut self, queue: &QueueRef) {
        if !self.wake.contains(queue) {
            self.wake.push(queue.clone());
        }
    }
}

/// Delivers a job's result once the fate of its transaction is known.
type Reply = Box<dyn FnOnce(Result<(), StorageError>) + Send>;
/// Runs an operation (or, given `None`, skips it) and returns how to answer its caller.
type Job = Box<dyn FnOnce(Option<&mut Ctx<'_>>) -> Reply + Send>;

enum Command {
    Run(Job),
    Shutdown(oneshot::Sender<SqlResult<()>>),
}

/// The handle callers use to run operations on the writer thread.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Command>,
}

/// Everything the writer thread needs.
pub(crate) struct WriterSetup {
    pub(crate) conn: Connection,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hub: Arc<WaitHub>,
    pub(crate) ids: MessageIdGenerator,
    pub(crate) jobs_per_commit_max: usize,
    pub(crate) queue_depth_max: usize,
    pub(crate) commit_hook: Option<CommitHook>,
}

fn closed() -> StorageError {
    StorageError::Unavailable("the sqlite engine is shut down".into())
}

impl Writer {
    /// Starts the writer thread.
    pub(crate) fn spawn(setup: WriterSetup) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(setup.queue_depth_max);
        std::thread::Builder::new()
            .name("courier-sqlite-writer".into())
            .spawn(move || WriterLoop::new(setup).run(rx))?;
        Ok(Self { tx })
    }

    /// Runs `op` in the writer's next transaction and returns its result after commit.
    ///
    /// An `Err` from `op` rolls back that operation's savepoint only; a failed commit turns
    /// every result of the transaction into a storage error.
    pub(crate) async fn run<T, E, F>(&self, op: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<T, E> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |ctx: Option<&mut Ctx<'_>>| {
            let outcome = ctx.map(|ctx| in_savepoint(ctx, op));
            Box::new(move |commit: Result<(), StorageError>| {
                let result = match (commit, outcome) {
                    (Ok(()), Some(outcome)) => outcome,
                    (Err(e), _) => Err(E::from(e)),
                    (Ok(()), None) => Err(E::from(StorageError::Internal("operation was skipped".into()))),
                };
                // The caller may have gone away (request cancelled); the effect stands.
                let _ = reply_tx.send(result);
            })
        });
        self.tx.send(Command::Run(job)).await.map_err(|_| E::from(closed()))?;
        reply_rx.await.map_err(|_| E::from(closed()))?
    }

    /// Checkpoints the WAL into the database file and stops the writer thread.
    pub(crate) async fn shutdown(&self) -> SqlResult<()> {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(done_tx)).await.is_err() {
            return Ok(()); // already stopped
        }
        done_rx.await.unwrap_or(Ok(()))
    }
}

fn in_savepoint<T, E: From<StorageError>>(
    ctx: &mut Ctx<'_>,
    op: impl FnOnce(&mut Ctx<'_>) -> Result<T, E>,
) -> Result<T, E> {
    exec(ctx.conn, "SAVEPOINT job").map_err(E::from)?;
    let outcome = op(ctx);
    let end = if outcome.is_ok() {
        exec(ctx.conn, "RELEASE job")
    } else {
        // The cache may hold a queue created inside the rolled-back savepoint.
        ctx.queues.clear();
        exec(ctx.conn, "ROLLBACK TO job").and_then(|()| exec(ctx.conn, "RELEASE job"))
    };
    end.map_err(E::from)?;
    outcome
}

fn exec(conn: &Connection, sql: &str) -> SqlResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(storage)
}

/// How often expired idempotency records are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

struct WriterLoop {
    conn: Connection,
    clock: Arc<dyn Clock>,
    hub: Arc<WaitHub>,
    ids: MessageIdGenerator,
    queues: HashMap<QueueRef, QueueMeta>,
    jobs_per_commit_max: usize,
    commit_hook: Option<CommitHook>,
    poisoned: Option<String>,
    last_sweep: Instant,
}

impl WriterLoop {
    fn new(setup: WriterSetup) -> Self {
        Self {
            conn: setup.conn,
            clock: setup.clock,
            hub: setup.hub,
            ids: setup.ids,
            queues: HashMap::new(),
            jobs_per_commit_max: setup.jobs_per_commit_max,
            commit_hook: setup.commit_hook,
            poisoned: None,
            last_sweep: Instant::now(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(command) = rx.blocking_recv() {
            let shutdown = match command {
                Command::Run(first) => self.commit_batch(first, &mut rx),
                Command::Shutdown(done) => Some(done),
            };
            if let Some(done) = shutdown {
                let result = self.checkpoint();
                let hub = self.hub.clone();
                // Close the file before answering, so the caller may reopen it at once.
                drop(self);
                let _ = done.send(result);
                hub.notify_all();
                return;
            }
            self.sweep_if_due();
        }
    }

    /// Runs `first` and every job that arrives while the transaction is open (up to the
    /// limit) in one transaction, commits once, then answers and wakes. Jobs that queue up
    /// while earlier ones run join the same commit, so the batch grows with the load without
    /// any artificial wait. Returns a shutdown request met while draining.
    fn commit_batch(&mut self, first: Job, rx: &mut mpsc::Receiver<Command>) -> Option<oneshot::Sender<SqlResult<()>>> {
        if let Some(reason) = &self.poisoned {
            first(None)(Err(StorageError::Poisoned(reason.clone())));
            return None;
        }
        if let Err(e) = exec(&self.conn, "BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "could not begin a transaction");
            first(None)(Err(StorageError::Internal(format!(
                "could not begin a transaction: {e}"
            ))));
            return None;
        }
        let mut wake = Vec::new();
        let mut replies: Vec<Reply> = Vec::new();
        let mut shutdown = None;
        let mut ctx = Ctx {
            conn: &self.conn,
            now: self.clock.now(),
            ids: &mut self.ids,
            queues: &mut self.queues,
            wake: &mut wake,
        };
        replies.push(first(Some(&mut ctx)));
        while replies.len() < self.jobs_per_commit_max {
            match rx.try_recv() {
                Ok(Command::Run(job)) => replies.push(job(Some(&mut ctx))),
                Ok(Command::Shutdown(done)) => {
                    shutdown = Some(done);
                    break;
                }
                Err(_) => break,
            }
        }
        match self.commit() {
            Ok(()) => {
                for reply in replies {
                    reply(Ok(()));
                }
                for queue in &wake {
                    self.hub.notify(queue);
                }
            }
            Err(reason) => {
                tracing::error!(%reason, "sqlite commit failed; the engine now refuses writes");
                let _ = exec(&self.conn, "ROLLBACK");
                // What we cached may describe rows that were rolled back.
                self.queues.clear();
                self.poisoned = Some(reason.clone());
                for reply in replies {
                    reply(Err(StorageError::Poisoned(reason.clone())));
                }
            }
        }
        shutdown
    }

    fn commit(&self) -> Result<(), String> {
        if let Some(hook) = &self.commit_hook {
            hook()?;
        }
        exec(&self.conn, "COMMIT").map_err(|e| e.to_string())
    }

    fn checkpoint(&self) -> SqlResult<()> {
        if self.poisoned.is_some() {
            return Ok(());
        }
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(storage)
    }

    /// Deletes idempotency records whose window has passed; logs and carries on on error.
    fn sweep_if_due(&mut self) {
        if self.poisoned.is_some() || self.last_sweep.elapsed() < SWEEP_INTERVAL {
            return;
        }
        self.last_sweep = Instant::now();
        let now = self.clock.now().as_millis();
        if let Err(error) = self
            .conn
            .execute("DELETE FROM idempotency WHERE expires_at <= ?1", [now])
        {
            tracing::warn!(%error, "sweeping expired idempotency keys failed");
        }
    }
}
