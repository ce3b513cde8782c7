-- Sealing becomes insert-only (docs/ledger.md). Until now the sealer UPDATEd every event it sealed
-- (checkpoint_seq, leaf_index, leaf_hash, leaf_mac, personal_hash): a new row version and an entry
-- in every index of `events` per event, which cost writers about a quarter of their throughput.
-- Seals now go into `event_seals`, one row per sealed event, written once and never updated;
-- `events` is again only ever inserted into (erasure aside).
--
-- The sealer finds unsealed events through `ledger_marks`, per tenant: every event with an id above
-- `sealed_high` is unsealed, and below it only events with an id above `settled` can lack a seal
-- (a transaction that took its id early and committed after a seal: a late commit). `settled`
-- moves up once every transaction that could still hold a lower id has ended, so the sealer reads
-- about a second of ids, never the whole ledger.

-- Hold `events` from here on: every writer that took an id has committed its event (a writer takes
-- its lock on `events` before it takes an id), so the marks below are exact.
LOCK TABLE events IN ACCESS EXCLUSIVE MODE;

CREATE TABLE event_seals (
    tenant_id       integer NOT NULL,
    event_id        bigint NOT NULL,
    checkpoint_seq  bigint NOT NULL,
    leaf_index      bigint NOT NULL CHECK (leaf_index >= 0),
    -- sha256(0x00 || canonical line), kept so inclusion proofs need no re-hashing; never trusted
    leaf_hash       bytea NOT NULL,
    -- HMAC(key, tenant, checkpoint, leaf index, leaf hash): names a rewritten event (with the key)
    leaf_mac        bytea NOT NULL,
    -- sha256 of the event's `personal` as jsonb text when it was sealed: inside the canonical line,
    -- kept when erasure nulls `personal`
    personal_hash   bytea NOT NULL,
    PRIMARY KEY (tenant_id, event_id),
    -- one leaf per position of a checkpoint; a checkpoint's leaves in order (proofs, verify)
    CONSTRAINT event_seals_leaf UNIQUE (tenant_id, checkpoint_seq, leaf_index)
);
-- No foreign key to events: deleting a sealed event must stay possible for the verifier to catch
-- it, and a key check would lock every sealed event row.

CREATE TABLE ledger_marks (
    tenant_id    integer PRIMARY KEY,
    -- the highest event id sealed: every event above it is unsealed
    sealed_high  bigint NOT NULL,
    -- every event with an id up to here is sealed, or will never exist
    settled      bigint NOT NULL,
    -- the events id sequence's value read at pending_at: becomes `settled` at the first seal that
    -- finds no transaction of this database started at or before pending_at still running
    pending      bigint,
    pending_at   timestamptz
);

INSERT INTO event_seals (tenant_id, event_id, checkpoint_seq, leaf_index, leaf_hash, leaf_mac, personal_hash)
SELECT tenant_id, id, checkpoint_seq, leaf_index, leaf_hash, leaf_mac, personal_hash
FROM events WHERE checkpoint_seq IS NOT NULL;

-- Below a tenant's lowest unsealed event every event is sealed (no late commit can follow: see LOCK).
INSERT INTO ledger_marks (tenant_id, sealed_high, settled)
SELECT tenant_id, max(id) FILTER (WHERE checkpoint_seq IS NOT NULL),
       least(max(id) FILTER (WHERE checkpoint_seq IS NOT NULL), min(id) FILTER (WHERE checkpoint_seq IS NULL) - 1)
FROM events
GROUP BY tenant_id
HAVING count(*) FILTER (WHERE checkpoint_seq IS NOT NULL) > 0;

ALTER TABLE events
    DROP CONSTRAINT events_sealed_whole,
    DROP COLUMN checkpoint_seq,
    DROP COLUMN leaf_index,
    DROP COLUMN leaf_hash,
    DROP COLUMN leaf_mac;
-- (the partial indexes events_unsealed and events_leaves go with their columns)
--
-- events.personal_hash stays for the legacy chains of migration 0004, which hash it; events sealed
-- under 0008 keep the copy the sealer wrote there. The line of a sealed event uses its seal's.
