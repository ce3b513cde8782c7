-- name: create_tenant
-- Create a tenant (one controller) with default policy settings; returns its id.
INSERT INTO tenants (name) VALUES ($1) RETURNING id;

-- name: tenant_by_name
-- A tenant's id by its name.
SELECT id FROM tenants WHERE name = $1;

-- name: create_api_key
-- Store a new API key (hash only) for a tenant with its scopes; returns the key's id.
INSERT INTO api_keys (tenant_id, key_hash, prefix, scopes, label)
VALUES ($1, $2, $3, $4::text[], $5)
RETURNING id;

-- name: authenticate_api_key
-- The key's scopes and its tenant's policy settings, for a key hash that is not revoked.
SELECT k.id AS key_id, k.scopes, t.id AS tenant_id, t.name AS tenant_name, t.default_region,
       t.relationship_window_days, t.soft_opt_in_without_topic, t.transactional_blocked_by,
       t.soft_bounce_suppress_days, t.require_notice_version, t.consent_validity_days
FROM api_keys k
JOIN tenants t ON t.id = k.tenant_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL;

-- name: tenant_settings
-- A tenant's name and policy settings.
SELECT name, default_region, relationship_window_days, soft_opt_in_without_topic, transactional_blocked_by,
       soft_bounce_threshold, soft_bounce_window_days, soft_bounce_suppress_days, complaint_alert_rate,
       complaint_stop_rate, unsubscribe_alert_rate, require_notice_version, consent_validity_days,
       display_name, consent_notice
FROM tenants WHERE id = $1;

-- name: update_tenant_settings
-- Replace a tenant's policy settings (the caller merged the change into the current ones).
UPDATE tenants
SET default_region = $2, relationship_window_days = $3, soft_opt_in_without_topic = $4,
    transactional_blocked_by = $5, soft_bounce_threshold = $6, soft_bounce_window_days = $7,
    soft_bounce_suppress_days = $8, complaint_alert_rate = $9, complaint_stop_rate = $10,
    require_notice_version = $11, consent_validity_days = $12, unsubscribe_alert_rate = $13,
    display_name = $14, consent_notice = $15
WHERE id = $1;
