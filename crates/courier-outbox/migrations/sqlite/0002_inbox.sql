-- Courier inbox on SQLite, schema version 2: which messages each consumer group has handled.
-- Same columns and meanings as migrations/postgres/0002_inbox.sql.

CREATE TABLE inbox (
    group_name   TEXT NOT NULL CHECK (group_name <> ''),
    message_id   TEXT NOT NULL CHECK (message_id <> ''),
    processed_at INTEGER NOT NULL,
    metadata     TEXT,
    PRIMARY KEY (group_name, message_id)
) WITHOUT ROWID;

-- The cleanup deletes rows processed before a cut-off.
CREATE INDEX inbox_by_processed_at ON inbox (processed_at);
