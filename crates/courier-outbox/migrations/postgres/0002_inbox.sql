-- Courier inbox on PostgreSQL, schema version 2: which messages each consumer group has handled.
-- Applied by `src/postgres/schema.rs` like version 1. Never edited once released.
--
-- A row is written in the consumer's own transaction together with the handler's effects, so
-- a redelivered message finds its row and is skipped. processed_at is epoch milliseconds from
-- the inbox's clock. metadata is JSON text, validated by the library, stored byte for byte
-- (jsonb would refuse "\u0000" in strings and rewrite numbers, unlike SQLite).

CREATE TABLE inbox (
    group_name   text NOT NULL CHECK (group_name <> ''),
    message_id   text NOT NULL CHECK (message_id <> ''),
    processed_at bigint NOT NULL,
    metadata     text,
    PRIMARY KEY (group_name, message_id)
);

-- The cleanup deletes rows processed before a cut-off.
CREATE INDEX inbox_by_processed_at ON inbox (processed_at);
