-- Courier on PostgreSQL, schema version 2: lease epochs.
--
-- A receive commits its leases without waiting for the WAL flush (receive.rs), so a crash of
-- the database may take back the last leases it granted: those messages are ready again at
-- once, with no failure counted. Fencing tokens must still only grow, so every incarnation of
-- the database that may have lost commits leases from a floor above every token the one
-- before could have handed out (epoch.rs). Nodes of a build without this must be stopped
-- before a node with it serves: they would lease from no floor.
--
-- lease_epoch counts incarnations durably. lease_epoch_now is UNLOGGED: PostgreSQL empties it
-- at every crash recovery and on a promoted standby, exactly the events that can lose a
-- commit that did not wait for the flush; a clean shutdown flushes everything and keeps it.
-- Its one row, once present, is this incarnation's floor. Each table holds at most one row
-- (the `one` key can only be true).
CREATE TABLE lease_epoch (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch   bigint NOT NULL
);
INSERT INTO lease_epoch (epoch) VALUES (0);

CREATE UNLOGGED TABLE lease_epoch_now (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    floor   bigint NOT NULL
);
