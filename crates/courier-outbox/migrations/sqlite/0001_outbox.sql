-- Courier outbox on SQLite, schema version 1. Applied by `src/sqlite/schema.rs` in one
-- transaction. Never edited once released. The same columns and meanings as on PostgreSQL
-- (see migrations/postgres/0001_outbox.sql and SQL_CONTRACT.md), in SQLite's types:
-- id is a 16-byte blob (a UUID's bytes), headers JSON text holding an object.
--
-- AUTOINCREMENT so seq never reuses the number of a deleted row: seq is the write order.

CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              BLOB NOT NULL UNIQUE DEFAULT (randomblob(16)) CHECK (length(id) = 16),
    destination     TEXT NOT NULL CHECK (destination <> ''),
    key             TEXT CHECK (key <> ''),
    payload         BLOB NOT NULL,
    headers         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(headers) AND json_type(headers) = 'object'),
    content_type    TEXT,
    created_at      INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'published', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    claimed_by      TEXT,
    claimed_until   INTEGER,
    last_error      TEXT,
    last_attempt_at INTEGER,
    published_at    INTEGER
);

-- The claim takes due unkeyed rows in (next_attempt_at, seq) order...
CREATE INDEX outbox_due_unkeyed ON outbox (next_attempt_at, seq) WHERE status = 'pending' AND key IS NULL;
-- ...and looks for key heads among the first due keyed rows.
CREATE INDEX outbox_due_keyed ON outbox (next_attempt_at, seq) WHERE status = 'pending' AND key IS NOT NULL;
-- Per-key ordering: earlier unpublished rows of a key, a key's next rows, the walk over keys.
CREATE INDEX outbox_by_key ON outbox (key, seq) WHERE key IS NOT NULL AND status <> 'published';
-- Retention: the cleanup deletes the oldest published rows first.
CREATE INDEX outbox_published ON outbox (published_at) WHERE status = 'published';
-- Operators page through failed rows; normally empty.
CREATE INDEX outbox_failed ON outbox (seq) WHERE status = 'failed';
