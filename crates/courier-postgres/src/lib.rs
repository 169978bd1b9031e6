//! Courier's queue engine on PostgreSQL, for several `courier serve` nodes sharing one database.
//!
//! Every operation is one transaction, committed (with `synchronous_commit = on`) before it
//! returns, except that a receive's leases, and acks of messages outside ordering groups unless
//! `PostgresOptions::durable_acks` is set, do not wait for the disk (see `epoch.rs` and
//! `lease.rs`).
//! Receivers take disjoint messages with `FOR UPDATE SKIP LOCKED`; leases, fencing tokens and
//! acks are single conditional statements under row locks, so two nodes can never both hold a
//! valid lease on one message. Ordering groups are serialized across nodes with
//! advisory locks. A receiver long-polling on one node is woken by commits on any node through
//! `LISTEN/NOTIFY`. The tables live in their own schema (default `courier`), created and
//! upgraded by the versioned migrations in `migrations/`.
//!
//! See `docs/specs/queue-semantics.md` for the contract and `ARCHITECTURE.md` for how the
//! pieces fit.

#![warn(clippy::unwrap_used)]

mod admin;
mod analyze;
mod cache;
mod combine;
mod engine;
mod enqueue;
mod epoch;
mod error;
mod groups;
mod hot;
mod lease;
mod options;
mod queues;
mod receive;
mod row;
mod schema;
mod sweep;
mod tx;
mod wake;
mod warm;

pub use engine::{migrate, PostgresEngine};
pub use options::{PostgresOptions, CONNECTIONS_MIN, SCHEMA_DEFAULT, SCHEMA_PARAM};

/// The hot-path statements, exposed so the plan tests can `EXPLAIN` exactly what the engine
/// runs. Not a stable API.
#[doc(hidden)]
pub mod plans {
    /// The receive statement: `$1` queue id, `$2` now (ms), `$3` max messages, `$4` receive
    /// lease (ms, nullable), `$5` policy lease (ms), `$6` lease ids (`uuid[]`, at least `$3`).
    pub fn receive() -> String {
        crate::receive::receive_sql().to_owned()
    }

    /// Statements taking `$1` queue id, `$2` now (ms) and `$3` a row limit, by name.
    pub fn maintenance() -> Vec<(&'static str, String)> {
        use crate::receive::{reclaim_sql, EXPIRED_CTE, EXPIRE_DEAD_LETTER_SQL, EXPIRE_DROP_SQL};
        vec![
            ("reclaim", reclaim_sql().to_owned()),
            ("expire (dead-letter)", format!("{EXPIRED_CTE}{EXPIRE_DEAD_LETTER_SQL}")),
            ("expire (drop)", format!("{EXPIRED_CTE}{EXPIRE_DROP_SQL}")),
        ]
    }

    /// The next-due statement: `$1` queue id, `$2` now (ms).
    pub fn next_due() -> &'static str {
        crate::receive::NEXT_DUE_SQL
    }

    /// The next-sweep statement: `$1` queue id, `$2` now (ms).
    pub fn next_sweep() -> &'static str {
        crate::receive::NEXT_SWEEP_SQL
    }

    /// The ack statement: `$1` queue id, `$2` message id, `$3` lease id, `$4` now (ms).
    pub fn ack() -> &'static str {
        crate::lease::ACK_SQL
    }

    /// The batch ack statement: `$1` queue id, `$2` message ids, `$3` lease ids (`uuid[]`),
    /// `$4` now (ms).
    pub fn ack_many() -> &'static str {
        crate::lease::ACK_MANY_SQL
    }

    /// The batch ack of ungrouped messages, autocommitted without waiting for the WAL flush;
    /// arguments as [`ack_many`].
    pub fn ack_ungrouped() -> &'static str {
        crate::lease::ACK_UNGROUPED_SQL
    }

    /// [`ack_ungrouped`] as run with `durable_acks`: committed with the flush.
    pub fn ack_ungrouped_durable() -> &'static str {
        crate::lease::ACK_UNGROUPED_DURABLE_SQL
    }

    /// Giving back leases taken for a receiver that left: `$1` queue id, `$2` message ids,
    /// `$3` lease ids (`uuid[]`), `$4` former `visible_at`s (`bigint[]`), `$5` now (ms).
    pub fn release() -> &'static str {
        crate::receive::RELEASE_SQL
    }

    /// The statements a new connection runs to join the lease epoch: adopting the floor
    /// (`$1` the setting's name) and counting a new epoch (no parameters).
    pub fn epoch() -> [(&'static str, &'static str); 2] {
        [
            ("adopt the floor", crate::epoch::ADOPT_FLOOR_SQL),
            ("count an epoch", crate::epoch::COUNT_EPOCH_SQL),
        ]
    }

    /// Group statements taking `$1` queue id and `$2`: the live-group check (`text[]`) of an
    /// enqueue, and the promotion of a group's next message (`text`).
    pub fn groups() -> [(&'static str, &'static str); 2] {
        [
            ("groups with live messages", crate::groups::GROUPS_LIVE_SQL),
            ("promote", crate::groups::PROMOTE_SQL),
        ]
    }
}
