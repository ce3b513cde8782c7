-- name: resolve_campaign
-- A campaign's id by name, created on first use.
WITH new_campaign AS (
    INSERT INTO campaigns (tenant_id, name) VALUES ($1, $2)
    ON CONFLICT (tenant_id, name) DO NOTHING
    RETURNING id
)
SELECT coalesce((SELECT id FROM new_campaign),
                (SELECT id FROM campaigns WHERE tenant_id = $1 AND name = $2)) AS id;

-- name: suppressions_at_scope
-- The suppressions of one recipient at one scope (topic id, 0 = all topics).
SELECT reason, created_at, expires_at FROM suppressions
WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id = $4
ORDER BY reason;

-- name: list_suppressions
-- One page of a tenant's suppressions in (created_at, channel, hash, topic, reason) order after the
-- cursor. $2 channel, $3 reason, $4 since (all optional); $5..$9 the cursor (NULL = first page);
-- $10 page size; $11 now (for the active flag).
SELECT s.created_at, s.channel, s.address_hash, s.topic_id, s.reason, s.expires_at, s.note,
       r.address, t.name AS topic, c.name AS campaign,
       (s.expires_at IS NULL OR s.expires_at > $11) AS active
FROM suppressions s
LEFT JOIN recipients r ON r.tenant_id = s.tenant_id AND r.channel = s.channel AND r.address_hash = s.address_hash
LEFT JOIN topics t ON t.tenant_id = s.tenant_id AND t.id = s.topic_id
LEFT JOIN campaigns c ON c.tenant_id = s.tenant_id AND c.id = s.campaign_id
WHERE s.tenant_id = $1
  AND ($2::text IS NULL OR s.channel = $2)
  AND ($3::text IS NULL OR s.reason = $3)
  AND ($4::timestamptz IS NULL OR s.created_at >= $4)
  AND ($5::timestamptz IS NULL
       OR (s.created_at, s.channel, s.address_hash, s.topic_id, s.reason) > ($5, $6::text, $7::bytea, $8::integer, $9::text))
ORDER BY s.created_at, s.channel, s.address_hash, s.topic_id, s.reason
LIMIT $10;

-- name: expired_suppressions
-- Suppressions whose expiry has passed, oldest first, a batch at a time (for the expiry job).
SELECT tenant_id, channel, address_hash, topic_id, reason, expires_at FROM suppressions
WHERE expires_at IS NOT NULL AND expires_at <= $1
ORDER BY expires_at
LIMIT $2;

-- name: clear_erasure
-- An admin lifted the `erased` suppression: the recipient is no longer marked erased.
UPDATE recipients SET erased_at = NULL, updated_at = now()
WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3;
