-- name: ledger_event
-- One ledger event with its topic and campaign names and the recipient's current address.
SELECT e.tenant_id, e.id, e.channel, e.address_hash, e.kind, t.name AS topic, c.name AS campaign,
       e.source, e.actor, e.occurred_at, e.recorded_at, e.data, r.address
FROM events e
LEFT JOIN topics t ON t.id = e.topic_id
LEFT JOIN campaigns c ON c.id = e.campaign_id
LEFT JOIN recipients r ON r.tenant_id = e.tenant_id AND r.channel = e.channel AND r.address_hash = e.address_hash
WHERE e.tenant_id = $1 AND e.id = $2;

-- name: finish_effects
-- The event's effects are done: forget it (a no-op when already done).
DELETE FROM pending_effects WHERE tenant_id = $1 AND event_id = $2;

-- name: stale_pending_effects
-- Events whose effects are still pending after $1 (the sweeper re-enqueues them), oldest first.
SELECT tenant_id, event_id FROM pending_effects WHERE created_at < $1 ORDER BY created_at LIMIT $2;
