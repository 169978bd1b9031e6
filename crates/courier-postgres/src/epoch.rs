//! Lease epochs: leases commit without waiting for the disk, so a database crash may take the
//! last ones back; each incarnation of the database leases from a floor above every token of
//! the one before, so fencing tokens still only grow (docs/specs/queue-semantics.md).

use sqlx::{Acquire, PgConnection};

/// The session setting holding the connection's lease floor. The receive statement reads it
/// with `current_setting`, which fails, rather than leasing with a token too low, on a session
/// that never joined an epoch.
pub(crate) const FLOOR_SETTING: &str = "courier.lease_floor";

/// Copies the floor into the session setting `$1`; a row only if the incarnation has one.
///
/// Statements on the one-row tables say `WHERE one`, so they can use the key: the engine's
/// sessions have `enable_seqscan` off, which costs a sequential scan so high that PostgreSQL
/// compiles it with JIT first (~30–80 ms a statement, on every new connection).
pub(crate) const ADOPT_FLOOR_SQL: &str = "SELECT set_config($1, floor::text, false) FROM lease_epoch_now WHERE one";

/// Counts a new epoch and returns it (see [`ADOPT_FLOOR_SQL`] for `WHERE one`).
pub(crate) const COUNT_EPOCH_SQL: &str = "UPDATE lease_epoch SET epoch = epoch + 1 WHERE one RETURNING epoch";

/// How many tokens one message can be handed within one incarnation before they would reach
/// the next one's floor: 2^32 leases of one message, unreachable in practice.
const EPOCH_SHIFT: u32 = 32;

/// Sets this session's lease floor (in [`FLOOR_SETTING`]) from `lease_epoch_now`, the first
/// connection of an incarnation (after a crash recovery, a failover, or on a new schema)
/// counting a new epoch with a synchronous commit before any lease of it is granted. Does
/// nothing on a schema that is not migrated yet (the connection that migrates it joins
/// afterwards, see `engine::migrate_pool`).
///
/// A failure is logged here with its cause: the pool drops a connection whose set-up failed
/// and retries until the acquire timeout, then reports only that it timed out. A role that may
/// not write the epoch tables, or a read-only standby, fails here.
pub(crate) async fn join(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let joined = join_or_count(conn).await;
    if let Err(error) = &joined {
        tracing::error!(
            %error,
            "a new connection could not join the lease epoch; it is dropped, and the engine cannot serve until this is fixed"
        );
    }
    joined
}

async fn join_or_count(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    match adopt_floor(conn).await {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        // 42P01, undefined table: not migrated yet.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => return Ok(()),
        Err(e) => return Err(e),
    }
    let mut tx = conn.begin().await?;
    // Connections opening together after a crash count one epoch between them: the first
    // takes the lock and counts, the others then find its floor.
    sqlx::query("LOCK TABLE lease_epoch IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    if !adopt_floor(&mut tx).await? {
        let epoch: i64 = sqlx::query_scalar(COUNT_EPOCH_SQL).fetch_one(&mut *tx).await?;
        sqlx::query("INSERT INTO lease_epoch_now (floor) VALUES ($1)")
            .bind(floor_of(epoch))
            .execute(&mut *tx)
            .await?;
        adopt_floor(&mut tx).await?;
        tracing::info!(
            epoch,
            "counted a new lease epoch: the database started afresh or recovered from a crash"
        );
    }
    // Synchronous (the session's setting): the new floor is durable before any lease uses it.
    tx.commit().await
}

/// Copies the incarnation's floor into the session setting; false if there is none yet. Set
/// inside a transaction, the setting lasts only if that transaction commits.
async fn adopt_floor(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let adopted = sqlx::query(ADOPT_FLOOR_SQL)
        .bind(FLOOR_SETTING)
        .fetch_optional(conn)
        .await?;
    Ok(adopted.is_some())
}

/// The lowest token epoch `epoch` (1, 2, …) hands out: 0 for the first, so a new schema's
/// tokens count 1, 2, 3, … exactly as on the embedded engine.
fn floor_of(epoch: i64) -> i64 {
    epoch.saturating_sub(1).saturating_mul(1 << EPOCH_SHIFT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_epoch_starts_at_zero_and_each_next_one_above_all_tokens_of_the_last() {
        assert_eq!(floor_of(1), 0);
        assert_eq!(floor_of(2), 1 << 32);
        assert!(floor_of(3) > floor_of(2) + i64::from(u32::MAX));
    }
}
