-- The ledger sealed in batches (docs/ledger.md). Appending an event becomes a plain insert; a sealer
-- (worker cron, `suppress ledger seal`) closes a tenant's unsealed events into its next checkpoint:
-- a Merkle tree (RFC 9162 §2.1) over the events' canonical lines, chained to the previous checkpoint
-- and authenticated with an HMAC key derived from SUPPRESS_SECRET, which the database never holds.
--
-- Existing events keep their lane/seq/prev_hash/hash: the old chains stay verifiable by the old
-- rules, and nothing else moves them now. They are left unsealed here (a migration has no secret
-- to authenticate a checkpoint with) and the first sealer run closes them, oldest first, into the
-- tenant's first checkpoints. Run `suppress ledger seal` right after migrating to close that gap.

DROP TRIGGER events_ledger_append ON events;
DROP FUNCTION ledger_append();

ALTER TABLE events
    ALTER COLUMN lane DROP NOT NULL,
    ALTER COLUMN seq DROP NOT NULL,
    ALTER COLUMN prev_hash DROP NOT NULL,
    ALTER COLUMN hash DROP NOT NULL,
    -- computed by the sealer (sha256 of `personal` as jsonb text), not on the insert path
    ALTER COLUMN personal_hash DROP NOT NULL,
    ADD COLUMN checkpoint_seq  bigint,
    ADD COLUMN leaf_index      bigint,
    -- sha256(0x00 || canonical line), kept so inclusion proofs need no re-hashing; never trusted
    ADD COLUMN leaf_hash       bytea,
    -- HMAC(key, tenant, checkpoint, leaf index, leaf hash): names a rewritten event (with the key)
    ADD COLUMN leaf_mac        bytea,
    ADD CONSTRAINT events_sealed_whole CHECK (
        (checkpoint_seq IS NULL) = (leaf_index IS NULL)
        AND (checkpoint_seq IS NULL) = (leaf_hash IS NULL)
        AND (checkpoint_seq IS NULL) = (leaf_mac IS NULL)
        AND (checkpoint_seq IS NULL OR personal_hash IS NOT NULL));

-- What the sealer looks for: a tenant's unsealed events (stays small: sealed rows leave it).
CREATE INDEX events_unsealed ON events (tenant_id, id) WHERE checkpoint_seq IS NULL;
-- One leaf per position of a checkpoint; reading a checkpoint's leaves in order (proofs, verify).
CREATE UNIQUE INDEX events_leaves ON events (tenant_id, checkpoint_seq, leaf_index)
    WHERE checkpoint_seq IS NOT NULL;

CREATE TABLE ledger_checkpoints (
    tenant_id       integer NOT NULL,
    seq             bigint NOT NULL CHECK (seq > 0),
    tree_size       bigint NOT NULL CHECK (tree_size > 0),
    first_event_id  bigint NOT NULL,
    last_event_id   bigint NOT NULL,
    root            bytea NOT NULL,
    -- sha256 of the previous checkpoint's signed body (32 zero bytes for the first)
    previous        bytea NOT NULL,
    created_at      timestamptz NOT NULL,
    -- HMAC-SHA256 of this checkpoint's signed body (docs/ledger.md)
    mac             bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

-- Personal keys still written inside `data` are moved to `personal` by this safety net; rows
-- without them (writers that fill `personal` themselves) never call it, thanks to WHEN.
CREATE FUNCTION ledger_split_personal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    personal_keys text[] := ledger_personal_keys();
BEGIN
    NEW.personal := coalesce(NEW.personal, '{}'::jsonb)
        || (SELECT jsonb_object_agg(key, value) FROM jsonb_each(NEW.data) WHERE key = ANY(personal_keys));
    NEW.data := NEW.data - personal_keys;
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_split_personal BEFORE INSERT ON events
    FOR EACH ROW WHEN (NEW.data ?| ledger_personal_keys()) EXECUTE FUNCTION ledger_split_personal();

-- Checkpoints are delivered to webhooks too: a delivery is of a ledger event or of a checkpoint.
ALTER TABLE webhook_deliveries
    ALTER COLUMN event_id DROP NOT NULL,
    ADD COLUMN checkpoint_seq bigint,
    ADD CONSTRAINT webhook_deliveries_one_subject CHECK ((event_id IS NULL) <> (checkpoint_seq IS NULL)),
    ADD CONSTRAINT webhook_deliveries_checkpoint_once UNIQUE (tenant_id, webhook_id, checkpoint_seq);
