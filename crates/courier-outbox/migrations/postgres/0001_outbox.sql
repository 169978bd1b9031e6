-- Courier outbox on PostgreSQL, schema version 1: the outbox table, its indexes and its wake-up
-- trigger. Applied by `src/postgres/schema.rs` with the configured schema (default `courier`) as
-- the transaction's search_path, in one transaction. Never edited once released.
--
-- The table is a public contract (SQL_CONTRACT.md): applications in any language INSERT rows
-- with plain SQL, so every column but destination and payload has a default.
--
-- Times are epoch milliseconds. Rows written by the Rust writer carry its clock's time; plain
-- inserts take the database's. The relay compares next_attempt_at with its own clock.
--
-- status: 'pending' (waiting, or claimed while claimed_until is in the future), 'published'
-- (the destination confirmed it), 'failed' (max attempts reached; last_error says why).
-- While a relay holds a claim, next_attempt_at equals claimed_until: a lapsed claim puts the
-- row back into the claim index's due range by itself, so no row is ever stuck in flight.

CREATE TABLE outbox (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    destination     text NOT NULL CHECK (destination <> ''),
    key             text CHECK (key <> ''),
    payload         bytea NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(headers) = 'object'),
    content_type    text,
    created_at      bigint NOT NULL DEFAULT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'published', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at bigint NOT NULL DEFAULT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint,
    claimed_by      text,
    claimed_until   bigint,
    last_error      text,
    last_attempt_at bigint,
    published_at    bigint,
    CONSTRAINT outbox_id_unique UNIQUE (id)
) WITH (
    -- Every row is inserted, claimed, settled and deleted within moments; vacuum early so the
    -- claim's index scan does not wade through dead entries.
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.05
);

-- The claim takes due unkeyed rows in (next_attempt_at, seq) order...
CREATE INDEX outbox_due_unkeyed ON outbox (next_attempt_at, seq) WHERE status = 'pending' AND key IS NULL;
-- ...and looks for key heads among the first due keyed rows.
CREATE INDEX outbox_due_keyed ON outbox (next_attempt_at, seq) WHERE status = 'pending' AND key IS NOT NULL;
-- Per-key ordering: "is there an earlier unpublished row of this key?", "the next rows of this
-- key" and the walk from key to key. Published and unkeyed rows stay out of it.
CREATE INDEX outbox_by_key ON outbox (key, seq) WHERE key IS NOT NULL AND status <> 'published';
-- Retention: the cleanup deletes the oldest published rows first.
CREATE INDEX outbox_published ON outbox (published_at) WHERE status = 'published';
-- Operators page through failed rows; normally empty.
CREATE INDEX outbox_failed ON outbox (seq) WHERE status = 'failed';

-- Wakes relays (LISTEN courier_outbox_<schema>) when a transaction that inserted rows commits.
-- A NOTIFY inside a transaction takes a database-wide lock at commit, held through the WAL
-- flush, which halved commit throughput with 8 concurrent writers when measured. So a writer
-- that notifies after its commit instead (Courier's Rust writer does by default) sets
-- `courier.outbox_wake = 'after_commit'` for its transaction and the trigger stays quiet.
CREATE FUNCTION outbox_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('courier.outbox_wake', true) IS DISTINCT FROM 'after_commit' THEN
        PERFORM pg_notify(left('courier_outbox_' || TG_TABLE_SCHEMA, 63), '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_wake AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_wake();
