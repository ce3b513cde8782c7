-- Provider integrations: configurations, acknowledged provider events, nonces, soft bounces.

-- name: create_provider
-- Store a provider configuration unless the tenant already has $7 active ones. $4 settings (no
-- secrets), $5 the sealed credentials, $6 their names. No row = the limit is reached.
INSERT INTO providers (tenant_id, kind, label, settings, secret_box, credential_names)
SELECT $1, $2, $3, $4::jsonb, $5, $6::text[]
WHERE (SELECT count(*) FROM providers WHERE tenant_id = $1 AND deleted_at IS NULL) < $7
RETURNING id, kind, label, settings, credential_names, created_at, deleted_at;

-- name: list_providers
-- A tenant's provider configurations, newest first, deleted ones included, without credentials.
SELECT id, kind, label, settings, credential_names, created_at, deleted_at
FROM providers WHERE tenant_id = $1 ORDER BY id DESC;

-- name: provider_by_id
-- One of a tenant's provider configurations, without credentials.
SELECT id, kind, label, settings, credential_names, created_at, deleted_at
FROM providers WHERE tenant_id = $1 AND id = $2;

-- name: delete_provider
-- Delete a configuration at $3 (kept when already deleted): its credentials are destroyed, its
-- inbound URL answers 404 from now on; events already acknowledged are still applied.
UPDATE providers SET deleted_at = coalesce(deleted_at, $3::timestamptz), secret_box = NULL
WHERE tenant_id = $1 AND id = $2
RETURNING id, kind, label, settings, credential_names, created_at, deleted_at;

-- name: provider_for_inbound
-- The active configuration an inbound request names (id and kind), with its sealed credentials.
SELECT tenant_id, id, kind, settings, secret_box
FROM providers WHERE id = $1 AND kind = $2 AND deleted_at IS NULL;

-- name: store_provider_events
-- Acknowledge verified provider events atomically: remember the nonce $6 (until $7; NULL = the
-- provider has none) and store each event ($3 keys, $4 a JSON array of payloads, in the same order)
-- unless its key was stored before. A nonce seen before stores nothing (`fresh` false).
-- Returns the ids of the events stored now; redelivered ones are left out.
WITH nonce AS (
    INSERT INTO provider_nonces (tenant_id, provider_id, nonce, expires_at)
    SELECT $1, $2, $6::text, $7::timestamptz WHERE $6::text IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING 1
), fresh AS (
    SELECT ($6::text IS NULL OR EXISTS (SELECT 1 FROM nonce)) AS ok
), stored AS (
    INSERT INTO provider_events (tenant_id, provider_id, event_key, payload, received_at)
    SELECT $1, $2, k.key, p.payload, $5
    FROM unnest($3::text[]) WITH ORDINALITY AS k (key, n)
    JOIN jsonb_array_elements($4::jsonb) WITH ORDINALITY AS p (payload, n) USING (n), fresh
    WHERE fresh.ok
    ON CONFLICT (tenant_id, provider_id, event_key) DO NOTHING
    RETURNING id
)
SELECT fresh.ok AS fresh, coalesce((SELECT array_agg(id ORDER BY id) FROM stored), '{}') AS ids
FROM fresh;

-- name: claim_provider_event
-- Claim a pending event until $4 (unless another worker holds it past $3), counting the attempt;
-- with its provider's kind and settings and the tenant's settings. No row = nothing to do now.
UPDATE provider_events e SET claimed_until = $4, attempts = e.attempts + 1
FROM providers p, tenants t
WHERE e.tenant_id = $1 AND e.id = $2 AND e.status = 'pending'
  AND (e.claimed_until IS NULL OR e.claimed_until <= $3)
  AND p.tenant_id = e.tenant_id AND p.id = e.provider_id AND t.id = e.tenant_id
RETURNING e.id, e.provider_id, e.event_key, e.payload, e.received_at, e.attempts, p.kind,
          p.settings, t.name AS tenant_name, t.default_region, t.relationship_window_days,
          t.soft_opt_in_without_topic, t.transactional_blocked_by, t.soft_bounce_suppress_days,
          t.require_notice_version, t.consent_validity_days;

-- name: finish_provider_event
-- Record how a claimed event ended: $3 status (processed or failed) at $4, $5 outcome, $6 error.
-- A processed event's payload (personal data) is dropped: its evidence is in the ledger now, and
-- its key stays for de-duplication. A failed one keeps it for a person to look at.
UPDATE provider_events
SET status = $3, processed_at = $4, outcome = $5::jsonb, error = $6, claimed_until = NULL,
    payload = CASE WHEN $3 = 'processed' THEN '{}'::jsonb ELSE payload END
WHERE tenant_id = $1 AND id = $2 AND status = 'pending';

-- name: release_provider_event
-- Give a claimed event back after a failed attempt ($3 the error), so it can be tried again.
UPDATE provider_events SET claimed_until = NULL, error = $3
WHERE tenant_id = $1 AND id = $2 AND status = 'pending';

-- name: stale_provider_events
-- Pending events received before $1 and not claimed at $2 (the sweeper re-enqueues them), oldest
-- first, at most $3.
SELECT tenant_id, id FROM provider_events
WHERE status = 'pending' AND received_at < $1 AND (claimed_until IS NULL OR claimed_until <= $2)
ORDER BY received_at
LIMIT $3;

-- name: record_soft_bounce
-- Count one soft bounce of a recipient ($4 the bounced message, so repeated reports count once; $5
-- when; $6 the provider event) and return how many of its soft bounces lie within the tenant's
-- window ending at its latest one, that latest time, and the tenant's soft-bounce rule.
WITH rule AS (
    SELECT soft_bounce_threshold, soft_bounce_window_days, soft_bounce_suppress_days
    FROM tenants WHERE id = $1
), added AS (
    INSERT INTO bounce_observations (tenant_id, channel, address_hash, observation_key, observed_at,
                                     provider_event_id)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT DO NOTHING
    RETURNING observed_at
), seen AS (
    SELECT observed_at FROM bounce_observations WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3
    UNION ALL
    SELECT observed_at FROM added
), latest AS (
    SELECT max(observed_at) AS at FROM seen
)
SELECT EXISTS (SELECT 1 FROM added) AS added,
       (SELECT count(*) FROM seen
        WHERE seen.observed_at > latest.at - make_interval(days => rule.soft_bounce_window_days)) AS in_window,
       latest.at AS latest, rule.soft_bounce_threshold AS threshold,
       rule.soft_bounce_window_days AS window_days, rule.soft_bounce_suppress_days AS suppress_days
FROM latest, rule;

-- name: prune_provider_records
-- Tidy up, at most $3 rows of each kind: nonces expired by $1, events finished before $2 (except
-- Twilio's: it signs no timestamp, so only the kept event id stops a captured request replayed
-- later), and soft bounces too old to count for any future bounce under their tenant's window.
WITH nonces AS (
    DELETE FROM provider_nonces
    WHERE (tenant_id, provider_id, nonce) IN (
        SELECT tenant_id, provider_id, nonce FROM provider_nonces WHERE expires_at <= $1 LIMIT $3)
    RETURNING 1
), events AS (
    DELETE FROM provider_events
    WHERE (tenant_id, id) IN (
        SELECT e.tenant_id, e.id FROM provider_events e
        JOIN providers p ON p.tenant_id = e.tenant_id AND p.id = e.provider_id
        WHERE e.status <> 'pending' AND e.processed_at < $2 AND p.kind <> 'twilio'
        LIMIT $3)
    RETURNING 1
), bounces AS (
    DELETE FROM bounce_observations
    WHERE (tenant_id, channel, address_hash, observation_key) IN (
        SELECT b.tenant_id, b.channel, b.address_hash, b.observation_key
        FROM bounce_observations b JOIN tenants t ON t.id = b.tenant_id
        WHERE b.observed_at < $1 - make_interval(days => t.soft_bounce_window_days + 1)
        LIMIT $3)
    RETURNING 1
)
SELECT (SELECT count(*) FROM nonces) AS nonces, (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM bounces) AS bounces;

-- name: list_provider_events
-- One page of a configuration's events, newest first, without payloads. $3 status (optional),
-- $4 the cursor: events older than this id (NULL = first page), $5 page size.
SELECT id, event_key, received_at, status, attempts, processed_at, outcome, error
FROM provider_events
WHERE tenant_id = $1 AND provider_id = $2
  AND ($3::text IS NULL OR status = $3)
  AND ($4::bigint IS NULL OR id < $4)
ORDER BY id DESC
LIMIT $5;
