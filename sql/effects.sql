-- name: ledger_event
-- One ledger event with its topic and campaign names and the recipient's current address.
SELECT e.tenant_id, e.id, e.channel, e.address_hash, e.kind, t.name AS topic, c.name AS campaign,
       e.source, e.actor, e.occurred_at, e.recorded_at, e.data, r.address
FROM events e
LEFT JOIN topics t ON t.tenant_id = e.tenant_id AND t.id = e.topic_id
LEFT JOIN campaigns c ON c.tenant_id = e.tenant_id AND c.id = e.campaign_id
LEFT JOIN recipients r ON r.tenant_id = e.tenant_id AND r.channel = e.channel AND r.address_hash = e.address_hash
WHERE e.tenant_id = $1 AND e.id = $2;

-- name: claim_effects
-- Claim up to $2 of tenant $1's pending events, oldest first, skipping any another transaction holds:
-- their pending rows are deleted, so the effects applied in this same transaction are done at commit
-- and a rollback (a failed effect, a killed worker) leaves them pending. The claimed ids, in order.
WITH claimed AS (
    DELETE FROM pending_effects p
    USING (
        SELECT tenant_id, event_id FROM pending_effects
        WHERE tenant_id = $1
        ORDER BY event_id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) c
    WHERE p.tenant_id = c.tenant_id AND p.event_id = c.event_id
    RETURNING p.event_id
)
SELECT coalesce(array_agg(event_id ORDER BY event_id), '{}') AS event_ids FROM claimed;

-- name: tenants_with_stale_effects
-- Tenants whose oldest pending event (lowest id) has waited since before $1: the sweeper enqueues
-- their drain job. One index probe per tenant, however many events are pending.
SELECT t.id AS tenant_id
FROM tenants t
CROSS JOIN LATERAL (
    SELECT p.created_at FROM pending_effects p WHERE p.tenant_id = t.id ORDER BY p.event_id LIMIT 1
) oldest
WHERE oldest.created_at < $1
ORDER BY t.id;
