//! [`SqliteEngine`]: the `QueueEngine` over one SQLite file, run by the group-commit writer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use courier_core::limits::{ENQUEUE_BATCH_MAX, LEASE_MAX, LEASE_MIN, STATE_BYTES_MAX};
use courier_core::message::millis;
use courier_core::policy::check_duration;
use courier_core::{
    Clock, EnqueueError, Enqueued, Etag, InvalidInput, Lease, LeaseError, ListOptions, MessageId, MessageIdGenerator,
    MessageInfo, NackIntent, Namespace, NewMessage, Page, QueueEngine, QueueError, QueuePolicy, QueueRef, QueueStats,
    QueueSummary, Receipt, ReceiveBatch, ReceiveOptions, Redrive, StateDoc, StateError, StorageError, WaitHub,
};
use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

use crate::admin::Side;
use crate::error::storage;
use crate::options::SqliteOptions;
use crate::writer::{Writer, WriterSetup};

/// The embedded queue engine. Cheap to share behind an `Arc`; all work happens on one
/// writer thread that batches concurrent operations into one transaction and one fsync.
pub struct SqliteEngine {
    writer: Writer,
    hub: Arc<WaitHub>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SqliteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEngine").finish_non_exhaustive()
    }
}

impl SqliteEngine {
    /// Opens (creating if needed) the database, applies migrations and starts the writer.
    ///
    /// The file is locked for this process: a second engine on the same file fails with
    /// [`StorageError::Unavailable`].
    pub async fn open(opts: SqliteOptions) -> Result<Self, StorageError> {
        let clock = opts.clock.clone();
        let (conn, ids, opts) = tokio::task::spawn_blocking(move || open_connection(&opts).map(|(c, i)| (c, i, opts)))
            .await
            .map_err(|e| StorageError::Internal(format!("open task failed: {e}")))??;
        let hub = Arc::new(WaitHub::new());
        let writer = Writer::spawn(WriterSetup {
            conn,
            clock: clock.clone(),
            hub: hub.clone(),
            ids,
            jobs_per_commit_max: opts.jobs_per_commit_max,
            queue_depth_max: opts.queue_depth_max,
            commit_hook: opts.commit_hook.clone(),
        })
        .map_err(|e| StorageError::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { writer, hub, clock })
    }
}

/// More than the number of distinct statements the engine runs.
const STATEMENT_CACHE_CAPACITY: usize = 128;

fn open_connection(opts: &SqliteOptions) -> Result<(Connection, MessageIdGenerator), StorageError> {
    if let Some(dir) = opts.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut conn = Connection::open(&opts.path).map_err(storage)?;
    // Every statement of the engine stays prepared; the default (16) would evict hot ones.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    // Exclusive locking first: WAL then needs no shared memory, and a second process on the
    // same file fails at once instead of corrupting the writer's assumptions.
    conn.execute_batch(&format!(
        "PRAGMA busy_timeout = 0; PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; \
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536;",
        opts.synchronous.pragma()
    ))
    .map_err(storage)?;
    crate::schema::migrate(&mut conn)?;
    let mut ids = MessageIdGenerator::new();
    let newest: Option<[u8; 16]> = conn
        .query_row("SELECT id FROM messages ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
        .optional()
        .map_err(storage)?;
    if let Some(bytes) = newest {
        ids.observe(MessageId::from_bytes(bytes));
    }
    Ok((conn, ids))
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
impl QueueEngine for SqliteEngine {
    async fn enqueue(&self, queue: &QueueRef, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>, EnqueueError> {
        validate_batch(&messages)?;
        let queue = queue.clone();
        self.writer
            .run(move |ctx| crate::enqueue::enqueue(ctx, &queue, messages))
            .await
    }

    async fn try_receive(&self, queue: &QueueRef, opts: &ReceiveOptions) -> Result<ReceiveBatch, QueueError> {
        opts.validate()?;
        let (queue, opts) = (queue.clone(), opts.clone());
        self.writer
            .run(move |ctx| crate::receive::try_receive(ctx, &queue, &opts))
            .await
    }

    async fn ack_many(
        &self,
        queue: &QueueRef,
        receipts: &[Receipt],
    ) -> Result<Vec<Result<(), LeaseError>>, StorageError> {
        let (queue, receipts) = (queue.clone(), receipts.to_vec());
        self.writer
            .run(move |ctx| crate::lease::ack_many(ctx, &queue, &receipts))
            .await
    }

    async fn nack(&self, queue: &QueueRef, receipt: &Receipt, intent: NackIntent) -> Result<(), LeaseError> {
        intent.validate()?;
        let (queue, receipt) = (queue.clone(), *receipt);
        self.writer
            .run(move |ctx| crate::lease::nack(ctx, &queue, &receipt, intent))
            .await
    }

    async fn extend(&self, queue: &QueueRef, receipt: &Receipt, by: Duration) -> Result<Lease, LeaseError> {
        check_duration("by_ms", millis(by), LEASE_MIN, LEASE_MAX)?;
        let (queue, receipt) = (queue.clone(), *receipt);
        self.writer
            .run(move |ctx| crate::lease::extend(ctx, &queue, &receipt, by))
            .await
    }

    async fn get_state(&self, queue: &QueueRef, receipt: &Receipt) -> Result<StateDoc, StateError> {
        let (queue, receipt) = (queue.clone(), *receipt);
        self.writer
            .run(move |ctx| crate::lease::get_state(ctx, &queue, &receipt))
            .await
    }

    async fn put_state(
        &self,
        queue: &QueueRef,
        receipt: &Receipt,
        value: Value,
        if_match: Option<Etag>,
    ) -> Result<Etag, StateError> {
        let encoded = encode_state(&value)?;
        let (queue, receipt) = (queue.clone(), *receipt);
        self.writer
            .run(move |ctx| crate::lease::put_state(ctx, &queue, &receipt, encoded, if_match))
            .await
    }

    async fn get_message(&self, queue: &QueueRef, id: MessageId) -> Result<MessageInfo, QueueError> {
        let queue = queue.clone();
        self.writer
            .run(move |ctx| crate::admin::get_message(ctx, &queue, id))
            .await?
            .ok_or(QueueError::MessageNotFound(id))
    }

    async fn list_messages(&self, queue: &QueueRef, opts: ListOptions) -> Result<Page<MessageInfo>, QueueError> {
        opts.validate()?;
        let queue = queue.clone();
        self.writer
            .run(move |ctx| crate::admin::list(ctx, &queue, Side::Live, opts))
            .await
    }

    async fn purge(&self, queue: &QueueRef) -> Result<u64, QueueError> {
        let queue = queue.clone();
        self.writer
            .run(move |ctx| crate::admin::purge(ctx, &queue, Side::Live))
            .await
    }

    async fn list_queues(&self, namespace: Option<&Namespace>) -> Result<Vec<QueueSummary>, StorageError> {
        let namespace = namespace.cloned();
        self.writer
            .run(move |ctx| crate::queues::list(ctx, namespace.as_ref()))
            .await
    }

    async fn delete_queue(&self, queue: &QueueRef) -> Result<(), QueueError> {
        let queue = queue.clone();
        self.writer.run(move |ctx| crate::queues::delete(ctx, &queue)).await
    }

    async fn set_policy(&self, queue: &QueueRef, policy: QueuePolicy) -> Result<(), QueueError> {
        policy.validate()?;
        let queue = queue.clone();
        self.writer
            .run(move |ctx| crate::queues::set_policy(ctx, &queue, policy))
            .await
    }

    async fn policy(&self, queue: &QueueRef) -> Result<QueuePolicy, QueueError> {
        let queue = queue.clone();
        self.writer
            .run(move |ctx| crate::queues::require(ctx, &queue).map(|m| m.policy))
            .await
    }

    async fn stats(&self, queue: &QueueRef) -> Result<QueueStats, QueueError> {
        let q = queue.clone();
        let mut stats = self.writer.run(move |ctx| crate::admin::stats(ctx, &q)).await?;
        stats.waiting_receivers = self.hub.waiting(queue);
        Ok(stats)
    }

    async fn dlq_list(&self, queue: &QueueRef, opts: ListOptions) -> Result<Page<MessageInfo>, QueueError> {
        opts.validate()?;
        let queue = queue.clone();
        self.writer
            .run(move |ctx| crate::admin::list(ctx, &queue, Side::Dead, opts))
            .await
    }

    async fn dlq_purge(&self, queue: &QueueRef) -> Result<u64, QueueError> {
        let queue = queue.clone();
        self.writer
            .run(move |ctx| crate::admin::purge(ctx, &queue, Side::Dead))
            .await
    }

    async fn dlq_redrive(&self, queue: &QueueRef, which: Redrive) -> Result<u64, QueueError> {
        let queue = queue.clone();
        self.writer
            .run(move |ctx| crate::admin::redrive(ctx, &queue, which))
            .await
    }

    async fn shutdown(&self) -> Result<(), StorageError> {
        self.writer.shutdown().await
    }

    async fn ready(&self) -> Result<(), StorageError> {
        self.writer
            .run(|ctx| ctx.conn.query_row("SELECT 1", [], |_| Ok(())).map_err(storage))
            .await
    }

    fn wait_hub(&self) -> &WaitHub {
        &self.hub
    }

    fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }
}
