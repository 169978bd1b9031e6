-- Courier on PostgreSQL, schema version 1. Applied by `schema.rs` inside the schema named by
-- `PostgresOptions::schema` (it is the connection's search_path), in one transaction.
--
-- Times are epoch milliseconds from the engine's injected clock, never the database's now(),
-- so every node and every test clock agrees on what "due" means.
-- messages.status: 0 ready or delayed (by visible_at), 1 in flight (visible_at is the lease
-- deadline), 2 blocked behind an earlier message of its ordering group, 3 dead-lettered.
-- messages.dead_reason: 1 max attempts, 2 expired.

CREATE TABLE queues (
    id          bigserial PRIMARY KEY,
    namespace   text NOT NULL,
    name        text NOT NULL,
    policy      jsonb NOT NULL,
    created_at  bigint NOT NULL,
    UNIQUE (namespace, name)
);

-- The primary key (queue_id, id) serves every lookup by receipt or id (they always name the
-- queue) and the id-ordered listings. seq is the enqueue order across nodes: ids from two
-- nodes are only as ordered as their clocks, seq is assigned by the database.
-- attributes and state are JSON text, not jsonb: stored byte for byte as on SQLite (jsonb
-- refuses "\u0000" in strings and rewrites numbers).
CREATE TABLE messages (
    queue_id        bigint NOT NULL,
    id              uuid NOT NULL,
    seq             bigserial NOT NULL,
    status          smallint NOT NULL,
    visible_at      bigint NOT NULL,
    enqueued_at     bigint NOT NULL,
    expires_at      bigint,
    failures        integer NOT NULL DEFAULT 0,
    deliveries      integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL,
    lease_ms        bigint,
    lease_id        uuid,
    fencing_token   bigint NOT NULL DEFAULT 0,
    ordering_group  text,
    payload         bytea NOT NULL,
    content_type    text,
    attributes      text,
    correlation_id  text,
    last_error      text,
    dead_reason     smallint,
    state           text,
    state_version   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue_id, id)
) WITH (
    -- Every lease and settlement rewrites a row and its index entries; vacuum early so the
    -- receive index scan does not wade through dead entries.
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.05
);

-- Receive, lease reclaim and next-due lookups are range scans of this index.
CREATE INDEX messages_by_visibility ON messages (queue_id, status, visible_at, seq);
-- Group head checks and promotion; only grouped messages pay for it.
CREATE INDEX messages_by_group ON messages (queue_id, ordering_group, status, seq)
    WHERE ordering_group IS NOT NULL;
-- TTL sweeps; only messages that have a TTL and can expire now pay for it.
CREATE INDEX messages_by_expiry ON messages (queue_id, expires_at)
    WHERE expires_at IS NOT NULL AND status IN (0, 2);

CREATE TABLE idempotency (
    queue_id    bigint NOT NULL,
    key         text NOT NULL,
    message_id  uuid NOT NULL,
    expires_at  bigint NOT NULL,
    PRIMARY KEY (queue_id, key)
);
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);
