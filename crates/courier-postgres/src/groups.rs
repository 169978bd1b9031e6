//! Ordering groups across nodes: the advisory locks that serialize changes to one group (and
//! one queue's purge against its grouped enqueues), the live-group check of an enqueue, and the
//! promotion of a group's next message.
//!
//! Lock order, to keep deadlocks rare (the ones left are retried, see `tx::retry`): the
//! queue-wide advisory lock, then group advisory locks in key order, then rows. Settling a
//! message takes its row lock first and the group lock after, which is safe because whoever
//! holds a group lock only ever waits for rows of that group that nobody else can hold.

use courier_core::QueueRef;

use crate::error::{broken_invariant, Db};
use crate::tx::{Core, Ctx};

/// Which of the groups `$2` (text[]) of queue `$1` have a live message: one index probe per
/// group that stops at its first live row (a `DISTINCT` over the groups' rows read every
/// blocked message of a long group, on every enqueue). `ordering_group IS NOT NULL` lets the
/// planner use the partial group index.
pub(crate) const GROUPS_LIVE_SQL: &str = "SELECT g FROM unnest($2::text[]) AS g WHERE EXISTS (\
       SELECT 1 FROM messages WHERE queue_id = $1 AND ordering_group IS NOT NULL AND ordering_group = g \
       AND status IN (0, 1, 2))";

/// Makes the oldest blocked message of group `$2` in queue `$1` active, unless the group has
/// an active one. Returns how many it promoted (0 or 1) and whether it should have promoted
/// one: a blocked message was next in line and none was active.
///
/// The two can differ when the message next in line changed while the statement waited for
/// its row lock: another node's sweep was expiring it (the group lock does not cover expiry).
/// The `status = 2` term, checked again on the row as the sweep left it, keeps a message just
/// dead-lettered from coming back as ready; the caller then runs the statement again, and its
/// new snapshot shows the message after it.
pub(crate) const PROMOTE_SQL: &str = "WITH candidate AS MATERIALIZED (\
       SELECT id FROM messages WHERE queue_id = $1 AND ordering_group IS NOT NULL \
       AND ordering_group = $2 AND status = 2 ORDER BY seq LIMIT 1), \
     busy AS MATERIALIZED (SELECT EXISTS (SELECT 1 FROM messages WHERE queue_id = $1 \
       AND ordering_group IS NOT NULL AND ordering_group = $2 AND status IN (0, 1)) AS yes), \
     promoted AS (UPDATE messages SET status = 0 WHERE queue_id = $1 \
       AND id = (SELECT id FROM candidate) AND status = 2 AND NOT (SELECT yes FROM busy) RETURNING 1) \
     SELECT (SELECT count(*) FROM promoted), EXISTS (SELECT 1 FROM candidate) AND NOT (SELECT yes FROM busy)";

/// Most runs of [`PROMOTE_SQL`] for one group in one promotion. Each run after the first
/// means the message next in line left meanwhile and the group lock keeps new ones out, so
/// the runs end when the blocked messages do; the bound only guards against a bug.
const PROMOTE_RUNS_MAX: usize = 1_000;

/// A stable 64-bit advisory lock key for `parts` within `schema` (FNV-1a; every node computes
/// the same key). Two keys colliding only makes two unrelated operations wait for each other.
pub(crate) fn lock_key(schema: &str, parts: &[&[u8]]) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in std::iter::once(schema.as_bytes()).chain(parts.iter().copied()) {
        // 0xff never occurs in UTF-8, so it separates the parts unambiguously.
        for &byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

fn group_key(core: &Core, queue_id: i64, group: &str) -> i64 {
    lock_key(&core.schema, &[b"group", &queue_id.to_be_bytes(), group.as_bytes()])
}

fn queue_key(core: &Core, queue_id: i64) -> i64 {
    lock_key(&core.schema, &[b"queue", &queue_id.to_be_bytes()])
}

/// Serializes everything that adds a message to a group (enqueue, redrive) or picks a group's
/// next active message (promotion), on every node, until the transaction ends.
pub(crate) async fn lock_groups(ctx: &mut Ctx<'_>, queue_id: i64, groups: &[&str]) -> Db<()> {
    let mut keys: Vec<i64> = groups.iter().map(|g| group_key(ctx.core, queue_id, g)).collect();
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    sqlx::query("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k")
        .bind(keys)
        .execute(ctx.conn())
        .await?;
    Ok(())
}

/// Shared by operations that add grouped messages, exclusive for purge: a purge must not race
/// an enqueue that saw a live group head and placed its message behind it as blocked.
pub(crate) async fn lock_queue_shared(ctx: &mut Ctx<'_>, queue_id: i64) -> Db<()> {
    let key = queue_key(ctx.core, queue_id);
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(key)
        .execute(ctx.conn())
        .await?;
    Ok(())
}

/// See [`lock_queue_shared`].
pub(crate) async fn lock_queue_exclusive(ctx: &mut Ctx<'_>, queue_id: i64) -> Db<()> {
    let key = queue_key(ctx.core, queue_id);
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(ctx.conn())
        .await?;
    Ok(())
}

/// The groups among `groups` that have a live (not dead-lettered) message. The caller holds
/// their group locks. `ordering_group IS NOT NULL` lets the planner use the partial index.
pub(crate) async fn groups_with_live_messages(ctx: &mut Ctx<'_>, queue_id: i64, groups: &[&str]) -> Db<Vec<String>> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(GROUPS_LIVE_SQL)
        .bind(queue_id)
        .bind(groups)
        .fetch_all(ctx.conn())
        .await
}

/// For each group whose active message just left, makes its oldest blocked message active
/// (ready or delayed by its own `visible_at`), and wakes the queue if one was.
pub(crate) async fn promote_groups(ctx: &mut Ctx<'_>, queue: &QueueRef, queue_id: i64, groups: &[String]) -> Db<()> {
    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    lock_groups(ctx, queue_id, &names).await?;
    let mut promoted = false;
    for group in groups {
        promoted |= promote_group(ctx, queue_id, group).await?;
    }
    if promoted {
        ctx.wake(queue);
    }
    Ok(())
}

/// Runs [`PROMOTE_SQL`] for `group`, again while it should have promoted a message and did
/// not; returns whether one was promoted. The caller holds the group's lock.
async fn promote_group(ctx: &mut Ctx<'_>, queue_id: i64, group: &str) -> Db<bool> {
    for _ in 0..PROMOTE_RUNS_MAX {
        // A statement of its own, after the lock: its snapshot sees every commit made under it.
        let (promoted, wanted): (i64, bool) = sqlx::query_as(PROMOTE_SQL)
            .bind(queue_id)
            .bind(group)
            .fetch_one(ctx.conn())
            .await?;
        if promoted > 0 || !wanted {
            return Ok(promoted > 0);
        }
    }
    Err(broken_invariant(format_args!(
        "ordering group {group:?} still had a message to promote after {PROMOTE_RUNS_MAX} runs"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_separate_their_parts() {
        let a = lock_key("courier", &[b"group", b"ab"]);
        assert_eq!(a, lock_key("courier", &[b"group", b"ab"]));
        assert_ne!(a, lock_key("courier", &[b"groupa", b"b"]));
        assert_ne!(a, lock_key("other", &[b"group", b"ab"]));
        // Pinned: every node of a cluster, whatever its build, must compute the same key.
        assert_eq!(
            lock_key("", &[]),
            i64::from_ne_bytes(0xaf64_724c_8602_eb6e_u64.to_ne_bytes())
        );
    }
}
