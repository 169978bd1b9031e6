//! Enqueue: idempotency keys, ordering-group placement and one insert for the whole batch.
//!
//! Whatever the batch size, an enqueue is a fixed number of statements: claim the keys, find
//! which groups are busy, insert every new message with one `INSERT … SELECT FROM unnest(…)`.
//! A batch without keys or groups, on a queue this node knows, is that one insert alone,
//! outside any explicit transaction ([`enqueue_plain`]).

use std::collections::HashMap;

use courier_core::{Enqueued, MessageId, NewMessage, QueueRef, Timestamp};
use sqlx::PgExecutor;

use crate::error::Db;
use crate::groups::{groups_with_live_messages, lock_groups, lock_queue_shared};
use crate::lease::lease_ms;
use crate::queues::QueueMeta;
use crate::schema::status;
use crate::tx::{Core, Ctx};

/// Adds `messages` (already validated) to `queue` atomically, creating the queue on first use.
pub(crate) async fn enqueue(ctx: &mut Ctx<'_>, queue: &QueueRef, messages: &[NewMessage]) -> Db<Vec<Enqueued>> {
    let generation = ctx.core.cache.generation();
    let meta = crate::queues::find_or_create(ctx, queue).await?;
    // Remembered before commit: if this transaction rolls back, a later plain enqueue that
    // finds no such queue row falls back to this path.
    ctx.core.cache.remember_meta(queue, &meta, generation);
    let mut groups: Vec<&str> = messages.iter().filter_map(|m| m.ordering_group.as_deref()).collect();
    groups.sort_unstable();
    groups.dedup();
    if !groups.is_empty() {
        lock_queue_shared(ctx, meta.id).await?;
        lock_groups(ctx, meta.id, &groups).await?;
    }
    let results = place(ctx, &meta, messages, &groups).await?;
    note_expiries(ctx.core, queue, &meta, messages, ctx.now);
    ctx.wake(queue);
    Ok(results)
}

/// Whether [`enqueue_plain`] can take this batch: nothing to look up or lock first.
pub(crate) fn is_plain(messages: &[NewMessage]) -> bool {
    messages
        .iter()
        .all(|m| m.idempotency_key.is_none() && m.ordering_group.is_none())
}

/// Adds a batch without idempotency keys or ordering groups (see [`is_plain`]) to the queue
/// `meta` describes, with one autocommitted statement; `None`, with nothing added, when that
/// queue row is gone (deleted, perhaps recreated under a new id).
///
/// The insert holds the queue row `FOR KEY SHARE` as [`crate::queues::find_or_create`] does,
/// so a concurrent queue deletion waits for it and then deletes its messages too. The policy
/// defaults (TTL, max attempts) come from `meta`, which may be up to the cache's freshness
/// bound old when the policy was changed on another node.
pub(crate) async fn enqueue_plain(
    core: &Core,
    queue: &QueueRef,
    meta: &QueueMeta,
    messages: &[NewMessage],
) -> Db<Option<Vec<Enqueued>>> {
    debug_assert!(is_plain(messages));
    let now = core.clock.now();
    let ids = core.mint_ids(now, messages.len());
    let mut rows = Rows::default();
    for (&id, m) in ids.iter().zip(messages) {
        rows.push(now, meta, id, m, status::READY);
    }
    if core.on_warm(async |conn| rows.insert(conn, meta.id, now).await).await? == 0 {
        return Ok(None);
    }
    note_expiries(core, queue, meta, messages, now);
    Ok(Some(
        ids.into_iter().map(|id| Enqueued { id, duplicate: false }).collect(),
    ))
}

/// Brings this node's next sweep of the queue forward to the first expiry of `messages`.
fn note_expiries(core: &Core, queue: &QueueRef, meta: &QueueMeta, messages: &[NewMessage], now: Timestamp) {
    if let Some(ttl) = messages.iter().filter_map(|m| m.ttl.or(meta.policy.ttl())).min() {
        core.cache.sweep_by(queue, now.saturating_add(ttl));
    }
}

/// Decides each message's fate (new, or a duplicate of an earlier id) and inserts the new ones.
async fn place(ctx: &mut Ctx<'_>, meta: &QueueMeta, messages: &[NewMessage], groups: &[&str]) -> Db<Vec<Enqueued>> {
    let dedup = !meta.policy.dedup_window().is_zero();
    // A key repeated in the batch belongs to its first message; later ones are duplicates of it.
    let mut first_with_key: HashMap<&str, usize> = HashMap::new();
    let mut candidates = Vec::with_capacity(messages.len());
    for (index, m) in messages.iter().enumerate() {
        match key_of(m, dedup) {
            Some(key) if first_with_key.contains_key(key) => {}
            Some(key) => {
                first_with_key.insert(key, index);
                candidates.push(index);
            }
            None => candidates.push(index),
        }
    }
    let minted = ctx.core.mint_ids(ctx.now, candidates.len());
    let mut ids: HashMap<usize, MessageId> = candidates.iter().copied().zip(minted).collect();
    // Claimed in key order, so two batches sharing keys lock their records in the same order.
    let mut keyed: Vec<(&str, usize)> = first_with_key.iter().map(|(k, i)| (*k, *i)).collect();
    keyed.sort_unstable();
    let keys: Vec<&str> = keyed.iter().map(|(k, _)| *k).collect();
    let key_ids: Vec<uuid::Uuid> = keyed.iter().map(|(_, i)| ids[i].0).collect();
    let taken = claim_keys(ctx, meta, &keys, &key_ids).await?;
    let mut duplicates: HashMap<usize, MessageId> = HashMap::new();
    for (key, id) in taken {
        if let Some(&index) = first_with_key.get(key.as_str()) {
            ids.remove(&index);
            duplicates.insert(index, id);
        }
    }
    let mut busy = groups_with_live_messages(ctx, meta.id, groups).await?;
    let mut rows = Rows::default();
    let mut results = Vec::with_capacity(messages.len());
    for (index, m) in messages.iter().enumerate() {
        let first = key_of(m, dedup).map_or(index, |key| first_with_key[key]);
        if let Some(&id) = duplicates.get(&first) {
            results.push(Enqueued { id, duplicate: true });
            continue;
        }
        let id = ids[&first];
        if first != index {
            results.push(Enqueued { id, duplicate: true });
            continue;
        }
        let blocked = match &m.ordering_group {
            Some(g) if busy.contains(g) => true,
            Some(g) => {
                busy.push(g.clone());
                false
            }
            None => false,
        };
        rows.push(
            ctx.now,
            meta,
            id,
            m,
            if blocked { status::BLOCKED } else { status::READY },
        );
        results.push(Enqueued { id, duplicate: false });
    }
    let now = ctx.now;
    rows.insert(ctx.conn(), meta.id, now).await?;
    Ok(results)
}

/// The message's idempotency key, unless dedup is off (a window of 0).
fn key_of(m: &NewMessage, dedup: bool) -> Option<&str> {
    m.idempotency_key.as_deref().filter(|_| dedup)
}

/// Records `keys` (with the ids their messages will get) unless a key's window is still open;
/// returns the keys that were taken, with the id they already stand for.
///
/// The upsert only overwrites an expired record, and waits on a concurrent transaction that
/// holds the same key, so two nodes enqueueing one key at once add one message, not two.
async fn claim_keys(
    ctx: &mut Ctx<'_>,
    meta: &QueueMeta,
    keys: &[&str],
    ids: &[uuid::Uuid],
) -> Db<Vec<(String, MessageId)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let expires_at = ctx.now.saturating_add(meta.policy.dedup_window()).as_millis();
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO idempotency (queue_id, key, message_id, expires_at) \
         SELECT $1, k, m, $4 FROM unnest($2::text[], $3::uuid[]) AS t(k, m) \
         ON CONFLICT (queue_id, key) DO UPDATE SET message_id = EXCLUDED.message_id, expires_at = EXCLUDED.expires_at \
         WHERE idempotency.expires_at <= $5 RETURNING key",
    )
    .bind(meta.id)
    .bind(keys)
    .bind(ids)
    .bind(expires_at)
    .bind(ctx.now.as_millis())
    .fetch_all(ctx.conn())
    .await?;
    let claimed: std::collections::HashSet<&str> = claimed.iter().map(String::as_str).collect();
    let taken: Vec<&str> = keys.iter().copied().filter(|k| !claimed.contains(k)).collect();
    if taken.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, uuid::Uuid)> =
        sqlx::query_as("SELECT key, message_id FROM idempotency WHERE queue_id = $1 AND key = ANY($2)")
            .bind(meta.id)
            .bind(&taken)
            .fetch_all(ctx.conn())
            .await?;
    Ok(rows.into_iter().map(|(k, id)| (k, MessageId(id))).collect())
}

/// The new messages of a batch, column by column, for one `unnest` insert.
#[derive(Default)]
struct Rows {
    id: Vec<uuid::Uuid>,
    status: Vec<i16>,
    visible_at: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    max_attempts: Vec<i32>,
    lease_ms: Vec<Option<i64>>,
    group: Vec<Option<String>>,
    payload: Vec<Vec<u8>>,
    content_type: Vec<Option<String>>,
    attributes: Vec<Option<String>>,
    correlation_id: Vec<Option<String>>,
}

impl Rows {
    fn push(&mut self, now: Timestamp, meta: &QueueMeta, id: MessageId, m: &NewMessage, status: i16) {
        let ttl = m.ttl.or(meta.policy.ttl());
        self.id.push(id.0);
        self.status.push(status);
        self.visible_at.push(now.saturating_add(m.delay).as_millis());
        self.expires_at.push(ttl.map(|ttl| now.saturating_add(ttl).as_millis()));
        let max_attempts = m.max_attempts.unwrap_or(meta.policy.max_attempts);
        self.max_attempts.push(i32::try_from(max_attempts).unwrap_or(i32::MAX));
        self.lease_ms.push(lease_ms(m.lease));
        self.group.push(m.ordering_group.clone());
        self.payload.push(m.payload.to_vec());
        self.content_type.push(m.content_type.clone());
        // Validation already serialized the attributes once, so this cannot fail.
        let attributes = (!m.attributes.is_empty())
            .then(|| serde_json::to_string(&m.attributes).ok())
            .flatten();
        self.attributes.push(attributes);
        self.correlation_id.push(m.correlation_id.clone());
    }

    /// Inserts every row into queue `queue_id` and returns how many; none when that queue row
    /// no longer exists. `WITH ORDINALITY … ORDER BY` makes `seq` follow the batch order.
    async fn insert<'c>(self, executor: impl PgExecutor<'c>, queue_id: i64, now: Timestamp) -> Db<u64> {
        if self.id.is_empty() {
            return Ok(0);
        }
        let inserted = sqlx::query(
            "WITH q AS MATERIALIZED (SELECT id FROM queues WHERE id = $1 FOR KEY SHARE) \
             INSERT INTO messages (queue_id, enqueued_at, id, status, visible_at, expires_at, max_attempts, \
             lease_ms, ordering_group, payload, content_type, attributes, correlation_id) \
             SELECT q.id, $2, t.id, t.status, t.visible_at, t.expires_at, t.max_attempts, t.lease_ms, t.grp, \
             t.payload, t.content_type, t.attributes, t.correlation_id \
             FROM q CROSS JOIN unnest($3::uuid[], $4::smallint[], $5::bigint[], $6::bigint[], $7::integer[], \
             $8::bigint[], $9::text[], $10::bytea[], $11::text[], $12::text[], $13::text[]) WITH ORDINALITY \
             AS t(id, status, visible_at, expires_at, max_attempts, lease_ms, grp, payload, content_type, \
             attributes, correlation_id, ord) ORDER BY t.ord",
        )
        .bind(queue_id)
        .bind(now.as_millis())
        .bind(self.id)
        .bind(self.status)
        .bind(self.visible_at)
        .bind(self.expires_at)
        .bind(self.max_attempts)
        .bind(self.lease_ms)
        .bind(self.group)
        .bind(self.payload)
        .bind(self.content_type)
        .bind(self.attributes)
        .bind(self.correlation_id)
        .execute(executor)
        .await?;
        Ok(inserted.rows_affected())
    }
}
