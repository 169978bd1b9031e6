//! Housekeeping the engine does for its own table instead of waiting for autovacuum.
//!
//! Fresh statistics while a queue table grows: after this node has inserted 1 000, 10 000,
//! 100 000 and 1 000 000 messages, it runs `ANALYZE messages` in the background.
//!
//! The engine's statements run on cached generic plans (planning them afresh on every call cost
//! more CPU than running them). A generic plan is made once per connection, with the
//! statistics of that moment, and is only replaced when the table's statistics change. A new
//! table is nearly empty when its plans are made, and autovacuum analyzes it only a minute or
//! more later; until then a plan may, say, walk a whole queue where a primary-key probe is
//! right. Analyzing at these steps replaces such plans on every node within a few thousand
//! messages; afterwards autovacuum keeps the statistics current.
//!
//! Dead index entries removed while a queue churns: see [`ChurnVacuum`].
//!
//! Both run on a connection of the serving pool and are watched as bulk calls are
//! ([`Core::watched`]): they may take long on a big table, but one on a connection that went
//! silent is given up instead of holding its connection until TCP does; one still running when
//! the engine shuts down is cancelled on the server. A node whose pool has
//! a single connection runs neither (it would hold every call back) and leaves both to
//! autovacuum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Executor, PgConnection, Postgres};

use crate::error::Db;
use crate::tx::{backend_of, Core};

/// The first step; each next one is ten times larger.
const FIRST_STEP: u64 = 1_000;
/// After this many inserts the node leaves statistics to autovacuum.
const LAST_STEP: u64 = 1_000_000;

/// Counts this node's inserts and analyzes at each step.
#[derive(Debug)]
pub(crate) struct GrowthAnalyzer {
    inserted: AtomicU64,
}

impl Default for GrowthAnalyzer {
    fn default() -> Self {
        Self {
            inserted: AtomicU64::new(0),
        }
    }
}

impl GrowthAnalyzer {
    /// Records `n` inserted messages; starts an `ANALYZE` when a step was crossed.
    pub(crate) fn inserted(&self, n: usize, core: &Arc<Core>) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let before = self.inserted.fetch_add(n, Ordering::Relaxed);
        if crossed_step(before, before.saturating_add(n)) {
            let core = core.clone();
            tokio::spawn(async move {
                // Statistics are an optimization: a failure is logged, not returned.
                match analyze(&core).await {
                    Ok(()) | Err(sqlx::Error::PoolClosed) => {}
                    // The engine shut down meanwhile and the watcher gave the run up.
                    Err(_) if core.pool.is_closed() => {}
                    Err(error) => tracing::warn!(%error, "cannot analyze the messages table"),
                }
            });
        }
    }
}

/// A whole-table `ANALYZE`. A column list would be cheaper (the payload's statistics steer no
/// plan) but does not reset the table's count of changes since its last analyze, so
/// autovacuum would run a full one soon after anyway.
const ANALYZE_SQL: &str = "ANALYZE messages";

async fn analyze(core: &Core) -> Db<()> {
    let Some(mut conn) = maintenance_connection(core).await? else {
        return Ok(());
    };
    watched(core, &mut conn, ANALYZE_SQL).await
}

/// A connection of the serving pool for maintenance, or `None` when the pool has only one
/// (told once in the log).
async fn maintenance_connection(core: &Core) -> Db<Option<PoolConnection<Postgres>>> {
    if core.pool.options().get_max_connections() < MAINTENANCE_POOL_MIN {
        static TOLD: std::sync::Once = std::sync::Once::new();
        TOLD.call_once(|| {
            tracing::info!(
                "the pool serves calls on one connection only; vacuum and ANALYZE of the messages table are left to autovacuum"
            );
        });
        return Ok(None);
    }
    core.pool.acquire().await.map(Some)
}

/// Fewest connections the serving pool needs before the node runs its own maintenance on one.
const MAINTENANCE_POOL_MIN: u32 = 2;

/// Runs `sql` over the simple protocol (VACUUM cannot be a prepared statement's), watched
/// like a bulk call: given up, and its backend ended, once the database is seen not working
/// on it; cancelled when the engine shuts down.
async fn watched(core: &Core, conn: &mut PgConnection, sql: &'static str) -> Db<()> {
    let backend = core.within(backend_of(&mut *conn)).await?;
    core.as_maintenance(backend, sql, core.watched(backend, simple(conn, sql)))
        .await
}

/// Rows leased or acked on this node between two vacuums it runs.
const CHURN_PER_VACUUM: u64 = 1_000;
/// Least time from the start of one vacuum this node runs to the start of the next.
const VACUUM_GAP_MIN: Duration = Duration::from_secs(1);
/// The gap is also at least this many times as long as the last vacuum took, so vacuuming a
/// large table (a deep backlog) takes at most about a tenth of one connection's time.
const VACUUM_GAP_PER_RUN_TIME: u32 = 10;

/// Runs `VACUUM messages` in the background after every [`CHURN_PER_VACUUM`] rows this node
/// leased or acked, one at a time, spaced by [`VACUUM_GAP_MIN`] or ten times the last run's
/// duration, whichever is longer, and not within [`VACUUM_GAP_MIN`] of a vacuum another node
/// (or autovacuum) ran.
///
/// Every lease leaves the row's old entry in `messages_by_visibility` at the head of the ready
/// range, where the next receive starts its scan, and every ack leaves one in the in-flight
/// range. Index scans mark such entries dead as they pass them, but only when the leaf page
/// has not changed meanwhile, and on a short, busy queue the head page changes with every
/// enqueue. Measured with `courier bench` (two nodes at 1 000 msg/s): in some runs the marks
/// failed, the index grew from 2 pages to over 100 in 8 s, each receive walked more dead
/// entries, consumers fell behind and the p99 reached seconds. Autovacuum looks at a
/// database once a minute by default, too seldom for a queue's table.
///
/// A role that may not vacuum the table is told once in the log and the node stops trying;
/// after any other failure it waits [`VACUUM_GAP_AFTER_FAILURE`] before the next try.
#[derive(Debug, Default)]
pub(crate) struct ChurnVacuum {
    churn: AtomicU64,
    turn: Arc<Mutex<Turn>>,
}

/// Whether a vacuum of this node's runs, or when the next may start.
#[derive(Debug, Default)]
enum Turn {
    Running,
    /// None has run yet: the first may start at once.
    #[default]
    Idle,
    /// The last one ended; the next may start at this time.
    IdleUntil(Instant),
    /// This role may not vacuum the table.
    NotAllowed,
}

/// Whether this session's role may vacuum `messages` (before PostgreSQL 17: as a superuser,
/// the table's owner or the database's owner; from 17: with the MAINTAIN privilege), and how
/// long ago (ms) anyone last vacuumed it, by hand or autovacuum (NULL if never since the
/// statistics were reset).
const VACUUM_CHECK_SQL: &str = "SELECT CASE WHEN current_setting('server_version_num')::int >= 170000 \
         THEN has_table_privilege(c.oid, 'MAINTAIN') \
         ELSE pg_has_role(c.relowner, 'USAGE') OR pg_has_role(d.datdba, 'USAGE') END, \
       (EXTRACT(EPOCH FROM clock_timestamp() - GREATEST(s.last_vacuum, s.last_autovacuum)) * 1000)::float8 \
     FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
       JOIN pg_database d ON d.datname = current_database() \
     WHERE c.oid = 'messages'::regclass";

/// INDEX_CLEANUP ON: the dead index entries are the point, and by default a vacuum skips the
/// indexes when few heap pages hold dead rows (as on a table with a deep backlog).
/// TRUNCATE OFF: giving a drained queue's empty tail pages back to the file system takes an
/// exclusive lock that would stall every receive, and the next enqueues grow the file again.
/// SKIP_LOCKED: another vacuum of the same table is as good. Sent over the simple protocol.
const VACUUM_SQL: &str = "VACUUM (INDEX_CLEANUP ON, TRUNCATE OFF, SKIP_LOCKED) messages";

/// The vacuum's session hears no warnings: the one a skipped (SKIP_LOCKED) vacuum sends would
/// otherwise be logged by sqlx every time another vacuum holds the table.
const QUIET_SQL: &str = "SET client_min_messages TO error";
/// Back to the engine's session setting (see `engine.rs`).
const UNQUIET_SQL: &str = "SET client_min_messages TO warning";

/// Least time before a node tries again after a vacuum failed.
const VACUUM_GAP_AFTER_FAILURE: Duration = Duration::from_secs(30);

impl ChurnVacuum {
    /// Records `n` rows leased or acked; starts a vacuum when enough have been.
    pub(crate) fn churned(&self, n: usize, core: &Arc<Core>) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let churn = self.churn.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if churn < CHURN_PER_VACUUM || !self.take_turn() {
            return;
        }
        self.churn.store(0, Ordering::Relaxed);
        let ended = TurnEnds {
            turn: self.turn.clone(),
            next: Turn::IdleUntil(Instant::now() + VACUUM_GAP_MIN),
        };
        let core = core.clone();
        tokio::spawn(async move {
            // Moved whole into the task, so the turn ends when the task does.
            let mut ended = ended;
            let started = Instant::now();
            let outcome = vacuum_unless_recent(&core).await;
            let gap = VACUUM_GAP_MIN.max(started.elapsed() * VACUUM_GAP_PER_RUN_TIME);
            ended.next = Turn::IdleUntil(started + gap);
            match outcome {
                Ok(()) => {}
                Err(Refusal::NotAllowed) => {
                    tracing::warn!(
                        "this role may not vacuum the messages table (it needs to own it); leaving it to autovacuum"
                    );
                    ended.next = Turn::NotAllowed;
                }
                // The engine shut down meanwhile.
                Err(Refusal::Failed(sqlx::Error::PoolClosed)) => {}
                // Or it did while the vacuum ran, and the watcher gave the vacuum up.
                Err(Refusal::Failed(_)) if core.pool.is_closed() => {}
                // Cleanup is an optimization: a failure is logged, not returned.
                Err(Refusal::Failed(error)) => {
                    tracing::warn!(%error, "cannot vacuum the messages table");
                    ended.next = Turn::IdleUntil(started + gap.max(VACUUM_GAP_AFTER_FAILURE));
                }
            }
        });
    }

    /// Whether this call may start a vacuum now; if so, marks one as running.
    fn take_turn(&self) -> bool {
        let mut turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let due = match *turn {
            Turn::Running | Turn::NotAllowed => false,
            Turn::Idle => true,
            Turn::IdleUntil(at) => Instant::now() >= at,
        };
        if due {
            *turn = Turn::Running;
        }
        due
    }
}

/// Why no vacuum ran.
enum Refusal {
    NotAllowed,
    Failed(sqlx::Error),
}

/// Vacuums the table unless someone did within [`VACUUM_GAP_MIN`].
async fn vacuum_unless_recent(core: &Core) -> Result<(), Refusal> {
    let Some(mut conn) = maintenance_connection(core).await.map_err(Refusal::Failed)? else {
        return Ok(());
    };
    let (allowed, since_ms): (bool, Option<f64>) = core
        .within(sqlx::query_as(VACUUM_CHECK_SQL).fetch_one(&mut *conn))
        .await
        .map_err(Refusal::Failed)?;
    if !allowed {
        return Err(Refusal::NotAllowed);
    }
    if since_ms.is_some_and(|ms| ms < VACUUM_GAP_MIN.as_secs_f64() * 1_000.0) {
        return Ok(());
    }
    if let Err(error) = core.within(simple(&mut conn, QUIET_SQL)).await {
        // The setting may have taken effect before the answer was lost.
        conn.close_on_drop();
        return Err(Refusal::Failed(error));
    }
    let vacuumed = watched(core, &mut conn, VACUUM_SQL).await;
    if core.within(simple(&mut conn, UNQUIET_SQL)).await.is_err() {
        // Not handed back with a setting other sessions of the pool do not have.
        conn.close_on_drop();
    }
    vacuumed.map_err(Refusal::Failed)
}

/// Runs `sql` over the simple protocol (VACUUM cannot be a prepared statement's).
async fn simple(conn: &mut PgConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(sql)).await.map(drop)
}

/// Ends a vacuum's turn when the task running it ends, also when the task is dropped
/// unfinished (a runtime shutting down), so the node never waits on a turn that cannot end.
struct TurnEnds {
    turn: Arc<Mutex<Turn>>,
    next: Turn,
}

impl Drop for TurnEnds {
    fn drop(&mut self) {
        let next = std::mem::take(&mut self.next);
        *self.turn.lock().unwrap_or_else(PoisonError::into_inner) = next;
    }
}

/// Whether going from `before` to `after` inserts passes one of the steps.
fn crossed_step(before: u64, after: u64) -> bool {
    let mut step = FIRST_STEP;
    while step <= LAST_STEP {
        if before < step && after >= step {
            return true;
        }
        step *= 10;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_vacuum_runs_at_a_time_and_the_next_waits_for_its_turn() {
        let vacuum = ChurnVacuum::default();
        assert!(vacuum.take_turn(), "the first may start at once");
        assert!(!vacuum.take_turn(), "not while one runs");
        *vacuum.turn.lock().expect("lock") = Turn::IdleUntil(Instant::now() + Duration::from_secs(60));
        assert!(!vacuum.take_turn(), "not before the gap has passed");
        *vacuum.turn.lock().expect("lock") = Turn::IdleUntil(Instant::now());
        assert!(vacuum.take_turn(), "once it has");
        assert!(!vacuum.take_turn());
        *vacuum.turn.lock().expect("lock") = Turn::NotAllowed;
        assert!(!vacuum.take_turn(), "never for a role that may not vacuum");
    }

    #[tokio::test]
    async fn a_vacuum_task_dropped_unfinished_ends_its_turn() {
        let vacuum = ChurnVacuum::default();
        assert!(vacuum.take_turn());
        let ended = TurnEnds {
            turn: vacuum.turn.clone(),
            next: Turn::IdleUntil(Instant::now()),
        };
        let task = tokio::spawn(async move {
            let _ended = ended;
            std::future::pending::<()>().await;
        });
        task.abort();
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
        assert!(vacuum.take_turn(), "the aborted task's turn ended");
    }

    #[test]
    fn steps_are_powers_of_ten_from_a_thousand_to_a_million() {
        assert!(!crossed_step(0, 999));
        assert!(crossed_step(999, 1_000));
        assert!(crossed_step(500, 1_500));
        assert!(!crossed_step(1_000, 9_999));
        assert!(crossed_step(9_000, 10_100));
        assert!(crossed_step(999_999, 1_000_000));
        assert!(!crossed_step(1_000_000, 50_000_000));
    }
}
