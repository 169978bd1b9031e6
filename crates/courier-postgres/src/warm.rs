//! Connections the hot path keeps between its autocommitted statements. sqlx tests every
//! connection handed back to its pool with a round trip to the server; on a busy node that
//! was one more wake-up of a PostgreSQL backend for every statement, so the hot path keeps a
//! few connections aside and hands them back to the pool only when it has too many.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, PoisonError};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::error::Db;

/// Idle connections kept aside, at most `capacity` of them.
pub(crate) struct WarmConnections {
    idle: Mutex<Vec<PoolConnection<Postgres>>>,
    capacity: usize,
}

impl WarmConnections {
    /// Keeps up to a quarter of a pool of `pool_size` (1 to 4) idle connections aside: enough
    /// for the statements of one busy queue (an enqueue, a receive and an ack at once), while
    /// transactions and other queues still find most of the pool free.
    pub(crate) fn for_pool_of(pool_size: u32) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            capacity: usize::try_from(pool_size / 4).unwrap_or(1).clamp(1, 4),
        }
    }

    /// A connection for one statement: a kept one if there is any, else one from `pool`.
    pub(crate) async fn take<'a>(&'a self, pool: &'a PgPool) -> Db<Warm<'a>> {
        let kept = self.lock().pop();
        let conn = match kept {
            Some(conn) => conn,
            None => pool.acquire().await?,
        };
        Ok(Warm {
            conn: Some(conn),
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
    fn keep(&self, conn: PoolConnection<Postgres>, pool: &PgPool) {
        let mut idle = self.lock();
        if idle.len() < self.capacity && !pool.is_closed() {
            idle.push(conn);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PoolConnection<Postgres>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection taken for one statement. [`settle`](Self::settle) keeps it for the next;
/// dropped unsettled (the statement was cancelled midway) it goes back to the pool, whose
/// test on return brings it to a clean state or closes it.
pub(crate) struct Warm<'a> {
    conn: Option<PoolConnection<Postgres>>,
    home: &'a WarmConnections,
    pool: &'a PgPool,
}

impl Warm<'_> {
    /// Keeps the connection for the next statement if `outcome` says it is sound: the
    /// statement ran, or the server refused it and said why (the connection is ready for the
    /// next). Any other failure (I/O, protocol) may mean the database went away, so this one
    /// and every kept connection go back to the pool to be tested.
    pub(crate) fn settle<T>(mut self, outcome: &Db<T>) {
        let Some(conn) = self.conn.take() else { return };
        match outcome {
            Ok(_) | Err(sqlx::Error::Database(_)) => self.home.keep(conn, self.pool),
            Err(_) => {
                drop(conn);
                self.home.release_all();
            }
        }
    }
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
