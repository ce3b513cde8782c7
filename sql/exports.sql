-- name: export_suppressions
-- Every suppression of a tenant in force at $4 that still has an address (erased ones have none),
-- oldest first, for a server-side cursor. $2 channel, $3 reason (both optional).
SELECT s.channel, r.address, s.reason, t.name AS topic, s.created_at AS since, s.expires_at,
       c.name AS campaign, s.note
FROM suppressions s
JOIN recipients r ON r.tenant_id = s.tenant_id AND r.channel = s.channel AND r.address_hash = s.address_hash
LEFT JOIN topics t ON t.tenant_id = s.tenant_id AND t.id = s.topic_id
LEFT JOIN campaigns c ON c.tenant_id = s.tenant_id AND c.id = s.campaign_id
WHERE s.tenant_id = $1
  AND ($2::text IS NULL OR s.channel = $2)
  AND ($3::text IS NULL OR s.reason = $3)
  AND (s.expires_at IS NULL OR s.expires_at > $4)
  AND r.address IS NOT NULL
ORDER BY s.created_at, s.channel, s.address_hash, s.topic_id, s.reason;
