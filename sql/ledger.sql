-- The evidence ledger: sealing unsealed events into checkpoints, reading checkpoints and proofs,
-- and what verification reads (docs/ledger.md).

-- name: ledger_unsealed_tenants
-- The tenants that have events not yet sealed.
SELECT DISTINCT tenant_id FROM events WHERE checkpoint_seq IS NULL ORDER BY tenant_id;

-- name: ledger_seal_lock
-- Take the tenant's sealing lock for this transaction unless another sealer holds it; the
-- database clock (the checkpoint's time).
SELECT pg_try_advisory_xact_lock(1279607879, $1) AS locked, clock_timestamp() AS now;

-- name: ledger_last_checkpoint
-- A tenant's newest checkpoint.
SELECT tenant_id, seq, tree_size, first_event_id, last_event_id, root, previous, created_at, mac
FROM ledger_checkpoints WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1;

-- name: ledger_unsealed_events
-- Up to $2 of a tenant's unsealed events in id order, with every field the canonical line uses.
SELECT tenant_id, id, channel, address_hash, kind, topic_id, campaign_id, source, actor, occurred_at,
       recorded_at, data::text AS data_text, personal::text AS personal_text, personal_hash
FROM events
WHERE tenant_id = $1 AND checkpoint_seq IS NULL
ORDER BY id
LIMIT $2;

-- name: ledger_seal
-- Store checkpoint $2 of tenant $1 ($3 tree size, $4/$5 first/last event id, $6 root, $7 previous
-- checkpoint's hash, $8 created at, $9 MAC), mark its events sealed (parallel arrays: $10 id,
-- $11 leaf index, $12 personal hash, $13 leaf hash, $14 leaf MAC), and queue a `ledger.checkpoint`
-- delivery for every active webhook that takes it. Returns how many events were sealed and the
-- new deliveries.
WITH checkpoint AS (
    INSERT INTO ledger_checkpoints (tenant_id, seq, tree_size, first_event_id, last_event_id, root, previous,
                                    created_at, mac)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    RETURNING seq
), sealed AS (
    UPDATE events e
    SET checkpoint_seq = (SELECT seq FROM checkpoint), leaf_index = s.leaf_index,
        personal_hash = s.personal_hash, leaf_hash = s.leaf_hash, leaf_mac = s.leaf_mac
    FROM unnest($10::bigint[], $11::bigint[], $12::bytea[], $13::bytea[], $14::bytea[])
         AS s (id, leaf_index, personal_hash, leaf_hash, leaf_mac)
    WHERE e.tenant_id = $1 AND e.id = s.id AND e.checkpoint_seq IS NULL
    RETURNING 1
), deliveries AS (
    INSERT INTO webhook_deliveries (tenant_id, webhook_id, checkpoint_seq, next_attempt_at)
    SELECT w.tenant_id, w.id, (SELECT seq FROM checkpoint), $8
    FROM webhooks w
    WHERE w.tenant_id = $1 AND w.disabled_at IS NULL AND (w.events IS NULL OR 'ledger.checkpoint' = ANY (w.events))
    ORDER BY w.id
    RETURNING id
)
SELECT (SELECT count(*) FROM sealed) AS sealed,
       (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM deliveries) AS deliveries;

-- name: ledger_checkpoints_after
-- A page of a tenant's checkpoints with seq > $2, oldest first, at most $3.
SELECT tenant_id, seq, tree_size, first_event_id, last_event_id, root, previous, created_at, mac
FROM ledger_checkpoints WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3;

-- name: ledger_checkpoint
-- One checkpoint of a tenant.
SELECT tenant_id, seq, tree_size, first_event_id, last_event_id, root, previous, created_at, mac
FROM ledger_checkpoints WHERE tenant_id = $1 AND seq = $2;

-- name: ledger_events_by_id
-- Some of a tenant's events with the canonical line's fields and where they were sealed.
SELECT tenant_id, id, channel, address_hash, kind, topic_id, campaign_id, source, actor, occurred_at,
       recorded_at, data::text AS data_text, personal_hash, checkpoint_seq, leaf_index
FROM events WHERE tenant_id = $1 AND id = ANY ($2::bigint[]);

-- name: ledger_leaves
-- The leaf hashes of one checkpoint in leaf order (to build audit paths; verification recomputes them).
SELECT leaf_hash FROM events
WHERE tenant_id = $1 AND checkpoint_seq = $2
ORDER BY leaf_index;

-- name: ledger_sealed_events
-- A page of a tenant's sealed events in (checkpoint, leaf) order after ($2, $3), at most $4, with
-- every field verification recomputes.
SELECT tenant_id, id, channel, address_hash, kind, topic_id, campaign_id, source, actor, occurred_at,
       recorded_at, data::text AS data_text, personal::text AS personal_text, personal_hash,
       checkpoint_seq, leaf_index, leaf_hash, leaf_mac
FROM events
WHERE tenant_id = $1 AND checkpoint_seq IS NOT NULL AND (checkpoint_seq, leaf_index) > ($2, $3)
ORDER BY checkpoint_seq, leaf_index
LIMIT $4;

-- name: ledger_unsealed_summary
-- How many of a tenant's events are not sealed yet, and when the oldest of them was recorded.
SELECT count(*) AS unsealed, min(recorded_at) AS oldest FROM events
WHERE tenant_id = $1 AND checkpoint_seq IS NULL;

-- name: ledger_head
-- The heads of a tenant's legacy chains (migration 0004; no longer growing): last sequence number and hash.
SELECT lane, last_seq, last_hash FROM ledger_heads WHERE tenant_id = $1 ORDER BY lane;

-- name: ledger_lanes_in_use
-- The legacy chains a tenant's events are in (a lane without a head is a sign of tampering too).
SELECT DISTINCT lane FROM events WHERE tenant_id = $1 AND lane IS NOT NULL;

-- name: ledger_events_for_verify
-- A page of one legacy chain (tenant, lane) in sequence order after $3, with every field its
-- canonical line uses (JSON as PostgreSQL's canonical jsonb text).
SELECT lane, seq, tenant_id, id, channel, address_hash, kind, topic_id, campaign_id, source, actor,
       occurred_at, recorded_at, data::text AS data_text, personal::text AS personal_text,
       personal_hash, prev_hash, hash
FROM events
WHERE tenant_id = $1 AND lane = $2 AND seq > $3
ORDER BY seq
LIMIT $4;
