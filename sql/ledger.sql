-- The evidence ledger: sealing unsealed events into checkpoints, reading checkpoints and proofs,
-- and what verification reads (docs/ledger.md).

-- name: ledger_unsealed_tenants
-- The tenants that may have events not yet sealed: events above their highest sealed one, or ids
-- below it not settled yet (a late commit may be there).
SELECT t.id AS tenant_id
FROM tenants t
LEFT JOIN ledger_marks m ON m.tenant_id = t.id
WHERE coalesce(m.settled, 0) < coalesce(m.sealed_high, 0)
   OR EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = t.id AND e.id > coalesce(m.sealed_high, 0))
ORDER BY t.id;

-- name: ledger_seal_lock
-- Take the tenant's sealing lock for this transaction unless another sealer holds it; the
-- database clock (the checkpoint's time).
SELECT pg_try_advisory_xact_lock(1279607879, $1) AS locked, clock_timestamp() AS now;

-- name: ledger_last_checkpoint
-- A tenant's newest checkpoint.
SELECT tenant_id, seq, tree_size, first_event_id, last_event_id, root, previous, created_at, mac
FROM ledger_checkpoints WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1;

-- name: ledger_seal_state
-- Under the sealing lock: the tenant's newest checkpoint (seq NULL when none), its marks, the
-- events id sequence's value now, and whether the mark pending since `pending_at` can settle: no
-- transaction of this database that started at or before it is still running (a session whose
-- state we may not see counts as running).
SELECT t.tenant_id, c.seq, c.tree_size, c.first_event_id, c.last_event_id, c.root, c.previous, c.created_at, c.mac,
       coalesce(m.sealed_high, 0) AS sealed_high, coalesce(m.settled, 0) AS settled, m.pending,
       coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass), 0) AS last_id,
       m.pending_at IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM pg_stat_activity a
           WHERE a.datname = current_database() AND a.backend_type = 'client backend'
             AND a.pid <> pg_backend_pid()
             AND (a.xact_start <= m.pending_at OR a.state IS NULL OR a.state = 'disabled')
       ) AS quiet
FROM (SELECT $1::integer AS tenant_id) t
LEFT JOIN LATERAL (
    SELECT seq, tree_size, first_event_id, last_event_id, root, previous, created_at, mac
    FROM ledger_checkpoints WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1
) c ON true
LEFT JOIN ledger_marks m ON m.tenant_id = $1;

-- name: ledger_unsealed_events
-- Up to $4 of a tenant's unsealed events in id order, with every field the canonical line uses:
-- those above its highest sealed id $3, and late commits between its settled mark $2 and $3.
-- The late ones are a set difference of two range scans, then looked up by id: no plan can turn
-- it into a scan of the whole ledger or a join that probes the range once per row.
WITH late AS (
    SELECT id FROM events WHERE tenant_id = $1 AND id > $2 AND id <= $3
    EXCEPT
    SELECT event_id FROM event_seals WHERE tenant_id = $1 AND event_id > $2 AND event_id <= $3
)
SELECT tenant_id, id, channel, address_hash, kind, topic_id, campaign_id, source, actor, occurred_at,
       recorded_at, data::text AS data_text, personal::text AS personal_text, personal_hash
FROM (
    (SELECT * FROM events WHERE tenant_id = $1 AND id > $3 ORDER BY id LIMIT $4)
    UNION ALL
    (SELECT * FROM events WHERE tenant_id = $1 AND id = ANY (ARRAY(SELECT id FROM late)))
) unsealed
ORDER BY id
LIMIT $4;

-- name: ledger_seal
-- Store checkpoint $2 of tenant $1 ($3 tree size, $4/$5 first/last event id, $6 root, $7 previous
-- checkpoint's hash, $8 created at, $9 MAC), move the tenant's marks ($5 the highest id sealed,
-- $10 settled, $11 a new pending mark read before this statement, or NULL to keep it), and queue a
-- `ledger.checkpoint` delivery for every active webhook that takes it. Returns the new deliveries.
-- (The checkpoint's event_seals rows are COPYed in the same transaction: sealer.py.)
WITH checkpoint AS (
    INSERT INTO ledger_checkpoints (tenant_id, seq, tree_size, first_event_id, last_event_id, root, previous,
                                    created_at, mac)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    RETURNING seq
), marks AS (
    INSERT INTO ledger_marks AS m (tenant_id, sealed_high, settled, pending, pending_at)
    VALUES ($1, $5, $10, $11, CASE WHEN $11::bigint IS NOT NULL THEN clock_timestamp() END)
    ON CONFLICT (tenant_id) DO UPDATE
    SET sealed_high = greatest(m.sealed_high, excluded.sealed_high), settled = greatest(m.settled, excluded.settled),
        pending = coalesce(excluded.pending, m.pending), pending_at = coalesce(excluded.pending_at, m.pending_at)
), deliveries AS (
    INSERT INTO webhook_deliveries (tenant_id, webhook_id, checkpoint_seq, next_attempt_at)
    SELECT w.tenant_id, w.id, (SELECT seq FROM checkpoint), $8
    FROM webhooks w
    WHERE w.tenant_id = $1 AND w.disabled_at IS NULL AND (w.events IS NULL OR 'ledger.checkpoint' = ANY (w.events))
    ORDER BY w.id
    RETURNING id
)
SELECT coalesce(array_agg(id ORDER BY id), '{}') AS deliveries FROM deliveries;

-- name: ledger_settle
-- Move a tenant's marks on when nothing was sealed ($2 settled, $3 the new pending mark as in
-- ledger_seal), so that an idle tenant's late-commit range empties.
UPDATE ledger_marks SET settled = greatest(settled, $2), pending = $3, pending_at = clock_timestamp()
WHERE tenant_id = $1;

-- name: ledger_checkpoints_after
-- A page of a tenant's checkpoints with seq > $2, oldest first, at most $3.
SELECT tenant_id, seq, tree_size, first_event_id, last_event_id, root, previous, created_at, mac
FROM ledger_checkpoints WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3;

-- name: ledger_checkpoint
-- One checkpoint of a tenant.
SELECT tenant_id, seq, tree_size, first_event_id, last_event_id, root, previous, created_at, mac
FROM ledger_checkpoints WHERE tenant_id = $1 AND seq = $2;

-- name: ledger_events_by_id
-- Some of a tenant's events with the canonical line's fields and where they were sealed (NULL: not yet).
SELECT e.tenant_id, e.id, e.channel, e.address_hash, e.kind, e.topic_id, e.campaign_id, e.source, e.actor,
       e.occurred_at, e.recorded_at, e.data::text AS data_text, s.personal_hash, s.checkpoint_seq, s.leaf_index
FROM events e
LEFT JOIN event_seals s ON s.tenant_id = e.tenant_id AND s.event_id = e.id
WHERE e.tenant_id = $1 AND e.id = ANY ($2::bigint[]);

-- name: ledger_leaves
-- The leaf hashes of one checkpoint in leaf order (to build audit paths; verification recomputes them).
SELECT leaf_hash FROM event_seals
WHERE tenant_id = $1 AND checkpoint_seq = $2
ORDER BY leaf_index;

-- name: ledger_sealed_events
-- A page of a tenant's seals in (checkpoint, leaf) order after ($2, $3), at most $4, each with its
-- event's fields that verification recomputes (`found` false: the sealed event is gone).
SELECT s.tenant_id, s.event_id AS id, e.id IS NOT NULL AS found, e.channel, e.address_hash, e.kind, e.topic_id,
       e.campaign_id, e.source, e.actor, e.occurred_at, e.recorded_at, e.data::text AS data_text,
       e.personal::text AS personal_text, s.personal_hash, s.checkpoint_seq, s.leaf_index, s.leaf_hash, s.leaf_mac
FROM event_seals s
LEFT JOIN events e ON e.tenant_id = s.tenant_id AND e.id = s.event_id
WHERE s.tenant_id = $1 AND (s.checkpoint_seq, s.leaf_index) > ($2, $3)
ORDER BY s.checkpoint_seq, s.leaf_index
LIMIT $4;

-- name: ledger_unsealed_summary
-- How many of a tenant's events are not sealed yet, when the oldest of them was recorded, and the
-- lowest unsealed id at or below the settled mark (the sealer never looks there again: a forgery).
SELECT count(*) AS unsealed, min(e.recorded_at) AS oldest,
       min(e.id) FILTER (WHERE e.id <= coalesce((SELECT settled FROM ledger_marks WHERE tenant_id = $1), 0))
           AS below_settled
FROM events e
WHERE e.tenant_id = $1
  AND NOT EXISTS (SELECT 1 FROM event_seals s WHERE s.tenant_id = e.tenant_id AND s.event_id = e.id);

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
