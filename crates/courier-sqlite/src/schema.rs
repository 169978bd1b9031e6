//! The schema, as versioned migrations applied in order at open.
//!
//! A migration is never edited once released; changes are new migrations appended here.

use rusqlite::Connection;

use crate::error::{storage, SqlResult};

/// Message statuses as stored in `messages.status`.
pub(crate) mod status {
    /// Ready or delayed (visible at `visible_at`).
    pub(crate) const READY: i64 = 0;
    /// Leased; `visible_at` is the lease deadline.
    pub(crate) const IN_FLIGHT: i64 = 1;
    /// Waiting behind an earlier message of its ordering group.
    pub(crate) const BLOCKED: i64 = 2;
    /// In the dead-letter queue.
    pub(crate) const DEAD: i64 = 3;
}

const MIGRATIONS: &[&str] = &[r"
CREATE TABLE queues (
    id          INTEGER PRIMARY KEY,
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    policy      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (namespace, name)
);

-- seq is the id's high 64 bits (MessageId::sequence), so the rowid is both the enqueue
-- order and the lookup key, and no separate index on id is needed; id keeps all 128 bits.
CREATE TABLE messages (
    seq             INTEGER PRIMARY KEY,
    id              BLOB NOT NULL,
    queue_id        INTEGER NOT NULL,
    status          INTEGER NOT NULL,
    visible_at      INTEGER NOT NULL,
    enqueued_at     INTEGER NOT NULL,
    expires_at      INTEGER,
    failures        INTEGER NOT NULL DEFAULT 0,
    deliveries      INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    lease_ms        INTEGER,
    lease_id        BLOB,
    fencing_token   INTEGER NOT NULL DEFAULT 0,
    ordering_group  TEXT,
    payload         BLOB NOT NULL,
    content_type    TEXT,
    attributes      TEXT,
    correlation_id  TEXT,
    last_error      TEXT,
    dead_reason     INTEGER,
    state           TEXT,
    state_version   INTEGER NOT NULL DEFAULT 0
);

-- Receive, lease reclaim and next-due lookups are range scans of this index.
CREATE INDEX messages_by_visibility ON messages (queue_id, status, visible_at, seq);
-- Group head checks and promotion; only grouped messages pay for it.
CREATE INDEX messages_by_group ON messages (queue_id, ordering_group, status, seq)
    WHERE ordering_group IS NOT NULL;
-- TTL sweeps; only messages with a TTL pay for it.
CREATE INDEX messages_by_expiry ON messages (queue_id, expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE idempotency (
    queue_id    INTEGER NOT NULL,
    key         TEXT NOT NULL,
    message_id  BLOB NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (queue_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);
"];

/// Applies every migration newer than the database's version, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> SqlResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS courier_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(storage)?;
    let current: i64 = conn
        .query_row("SELECT COALESCE(MAX(version), 0) FROM courier_migrations", [], |r| {
            r.get(0)
        })
        .map_err(storage)?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        let tx = conn.transaction().map_err(storage)?;
        tx.execute_batch(sql).map_err(storage)?;
        tx.execute(
            "INSERT INTO courier_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
            [version],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        tracing::info!(version, "applied sqlite migration");
    }
    Ok(())
}
