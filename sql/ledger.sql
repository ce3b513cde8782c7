-- name: ledger_head
-- The heads of a tenant's chains (one row per lane that has events): last sequence number and hash.
SELECT lane, last_seq, last_hash FROM ledger_heads WHERE tenant_id = $1 ORDER BY lane;

-- name: ledger_lanes_in_use
-- The lanes a tenant's events are in (a lane without a head is a sign of tampering too).
SELECT DISTINCT lane FROM events WHERE tenant_id = $1;

-- name: ledger_events_for_verify
-- A page of one chain (tenant, lane) in sequence order after $3, with every field the canonical
-- line uses (JSON as PostgreSQL's canonical jsonb text).
SELECT lane, seq, tenant_id, id, channel, address_hash, kind, topic_id, campaign_id, source, actor,
       occurred_at, recorded_at, data::text AS data_text, personal::text AS personal_text,
       personal_hash, prev_hash, hash
FROM events
WHERE tenant_id = $1 AND lane = $2 AND seq > $3
ORDER BY seq
LIMIT $4;
