//! Connections the hot path keeps between its autocommitted statements. sqlx tests every
//! connection handed back to its pool with a round trip to the server; on a busy node that
//! was one more wake-up of a PostgreSQL backend for every statement, so the hot path keeps a
//! few connections aside and hands them back to the pool only when it has too many.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgDatabaseError, PgSeverity};
use sqlx::{PgConnection, PgPool, Postgres};

use crate::error::Db;

/// How long one connection is kept before it goes back to the pool, whose own checks (its
/// lifetime and idle limits, the test on return) then apply to it again.
const KEEP_FOR_MAX: Duration = Duration::from_secs(60);

/// Idle connections kept aside, at most `capacity` of them, each with the time it left the
/// pool.
pub(crate) struct WarmConnections {
    idle: Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
    capacity: usize,
}

impl WarmConnections {
    /// Keeps up to a third of a pool of `pool_size` beyond its first two (at most 4) idle
    /// connections aside: enough for the statements of one busy queue (an enqueue, a receive
    /// and an ack at once), while transactions and other queues still find the rest free (the
    /// wake-up listener and the bulk-call watcher have connections of their own). A pool of 4
    /// or fewer keeps none.
    pub(crate) fn for_pool_of(pool_size: u32) -> Self {
        let spare = usize::try_from(pool_size.saturating_sub(2) / 3).unwrap_or(0);
        Self {
            idle: Mutex::new(Vec::new()),
            capacity: spare.min(4),
        }
    }

    /// A connection for one statement: a kept one if there is any, else one from `pool`.
    pub(crate) async fn take<'a>(&'a self, pool: &'a PgPool) -> Db<Warm<'a>> {
        let (kept, expired) = {
            let mut idle = self.lock();
            // Checked under the lock `release_all` takes: nothing kept is used after shutdown.
            if pool.is_closed() {
                return Err(sqlx::Error::PoolClosed);
            }
            // Connections kept too long go back to the pool, also those below the top of the
            // stack that a quiet node would never reach again.
            let too_old = |(_, since): &(_, Instant)| since.elapsed() >= KEEP_FOR_MAX;
            let mut expired = Vec::new();
            // Rebuilt only when something expired: no allocation per statement otherwise.
            if idle.iter().any(too_old) {
                let (old, fresh) = std::mem::take(&mut *idle).into_iter().partition(too_old);
                (expired, *idle) = (old, fresh);
            }
            (idle.pop(), expired)
        };
        // Handed back outside the lock.
        drop(expired);
        let (conn, since) = match kept {
            Some(kept) => kept,
            None => (pool.acquire().await?, Instant::now()),
        };
        Ok(Warm {
            conn: Some(conn),
            since,
            home: self,
            pool,
        })
    }

    /// Hands every kept connection back to the pool, which tests each and closes the broken
    /// ones: after a failure that may mean the database went away, and when the engine shuts
    /// down (a kept connection would go on serving after the pool closed; call this after
    /// `close` has marked the pool closed, so that none is kept again).
    pub(crate) fn release_all(&self) {
        let kept = std::mem::take(&mut *self.lock());
        drop(kept);
    }

    /// Keeps `conn` unless enough are kept or the pool is closing. The check is made under
    /// the same lock as [`release_all`](Self::release_all)'s, so no connection is kept after it.
    fn keep(&self, conn: PoolConnection<Postgres>, since: Instant, pool: &PgPool) {
        let mut idle = self.lock();
        if idle.len() < self.capacity && !pool.is_closed() && since.elapsed() < KEEP_FOR_MAX {
            idle.push((conn, since));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PoolConnection<Postgres>, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection taken for one statement. [`settle`](Self::settle) keeps it for the next;
/// dropped unsettled (the statement was cancelled midway) it goes back to the pool, whose
/// test on return brings it to a clean state or closes it.
pub(crate) struct Warm<'a> {
    conn: Option<PoolConnection<Postgres>>,
    /// When the connection left the pool.
    since: Instant,
    home: &'a WarmConnections,
    pool: &'a PgPool,
}

impl Warm<'_> {
    /// Keeps the connection for the next statement if `outcome` says it is sound: the
    /// statement ran, or the server refused it and the session goes on. Any other failure
    /// (I/O, protocol, a session the server ended) may mean the database went away, so this
    /// one and every kept connection go back to the pool to be tested.
    pub(crate) fn settle<T>(mut self, outcome: &Db<T>) {
        let Some(conn) = self.conn.take() else { return };
        match outcome {
            Err(e) if connection_failed(e) => {
                drop(conn);
                self.home.release_all();
            }
            _ => self.home.keep(conn, self.since, self.pool),
        }
    }
}

/// Whether `e` means the session is over or unusable rather than one statement refused:
/// anything but a server error, or a server error that ends the session (severity FATAL or
/// PANIC: an administrator's shutdown or termination, an idle-session timeout) or reports a
/// connection exception (SQLSTATE class 08).
fn connection_failed(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return true;
    };
    let ends_session = db
        .try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic));
    ends_session || db.code().is_some_and(|code| code.starts_with("08"))
}

impl Deref for Warm<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_deref()
            .unwrap_or_else(|| unreachable!("taken only by settle, which consumes"))
    }
}

impl DerefMut for Warm<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("taken only by settle, which consumes"))
    }
}
