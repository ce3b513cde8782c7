-- Outbound webhooks: registration, fan-out of ledger events into deliveries, delivery attempts.

-- name: create_webhook
-- Register an endpoint unless the tenant already has $5 active ones. $3 events (NULL = all kinds),
-- $4 the sealed signing secret. No row = the limit is reached.
INSERT INTO webhooks (tenant_id, url, events, secret_box)
SELECT $1, $2, $3::text[], $4
WHERE (SELECT count(*) FROM webhooks WHERE tenant_id = $1 AND disabled_at IS NULL) < $5
RETURNING id, url, events, created_at, disabled_at;

-- name: list_webhooks
-- A tenant's webhooks, newest first, without their secrets.
SELECT id, url, events, created_at, disabled_at FROM webhooks WHERE tenant_id = $1 ORDER BY id DESC;

-- name: webhook_by_id
-- One of a tenant's webhooks, without its secret.
SELECT id, url, events, created_at, disabled_at FROM webhooks WHERE tenant_id = $1 AND id = $2;

-- name: disable_webhook
-- Disable a webhook at $3 (kept when already disabled) and cancel its pending deliveries; history stays.
WITH disabled AS (
    UPDATE webhooks SET disabled_at = COALESCE(disabled_at, $3::timestamptz)
    WHERE tenant_id = $1 AND id = $2
    RETURNING id, url, events, created_at, disabled_at
), cancelled AS (
    UPDATE webhook_deliveries d SET status = 'cancelled', next_attempt_at = NULL, finished_at = $3::timestamptz
    FROM disabled
    WHERE d.tenant_id = $1 AND d.webhook_id = disabled.id AND d.status = 'pending'
)
SELECT id, url, events, created_at, disabled_at FROM disabled;

-- name: list_webhook_deliveries
-- One page of a webhook's deliveries, newest first, each with its attempts in order. $3 status
-- (optional), $4 the cursor: deliveries older than this id (NULL = first page), $5 page size.
SELECT d.id, d.event_id, d.checkpoint_seq, coalesce(e.kind, 'ledger.checkpoint') AS kind, d.status, d.created_at, d.next_attempt_at, d.finished_at,
       COALESCE(a.attempts, '[]'::jsonb) AS attempts
FROM webhook_deliveries d
LEFT JOIN events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id
LEFT JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_object(
               'attempt', x.attempt, 'attempted_at', x.attempted_at, 'status_code', x.status_code,
               'error', x.error, 'duration_ms', x.duration_ms) ORDER BY x.attempt) AS attempts
    FROM webhook_attempts x
    WHERE x.tenant_id = d.tenant_id AND x.delivery_id = d.id
) a ON true
WHERE d.tenant_id = $1 AND d.webhook_id = $2
  AND ($3::text IS NULL OR d.status = $3)
  AND ($4::bigint IS NULL OR d.id < $4)
ORDER BY d.id DESC
LIMIT $5;

-- name: create_webhook_deliveries
-- Fan a batch of tenant $1's ledger events ($2 ids) out: a pending delivery, due at $3, for every
-- (event, active webhook) pair where the webhook was registered by the event's recording time and
-- takes its kind. Returns only new deliveries, so a batch fanned out twice creates each once.
INSERT INTO webhook_deliveries (tenant_id, webhook_id, event_id, next_attempt_at)
SELECT w.tenant_id, w.id, e.id, $3
FROM unnest($2::bigint[]) AS ids(id)
JOIN events e ON e.tenant_id = $1 AND e.id = ids.id
JOIN webhooks w ON w.tenant_id = $1 AND w.disabled_at IS NULL AND w.created_at <= e.recorded_at
               AND (w.events IS NULL OR e.kind = ANY (w.events))
-- skip reading the events when the tenant has no active webhook (a one-time filter)
WHERE EXISTS (SELECT 1 FROM webhooks a WHERE a.tenant_id = $1 AND a.disabled_at IS NULL)
ORDER BY e.id, w.id
ON CONFLICT (tenant_id, webhook_id, event_id) DO NOTHING
RETURNING tenant_id, id;

-- name: claim_webhook_delivery
-- Start the next attempt of a due, pending delivery (of a ledger event or, with checkpoint_seq, a checkpoint) of an active webhook, fewer than $5 attempts in:
-- count it, push the next attempt out to the lease end $4 (so nobody else sends it meanwhile) and
-- write its attempt row at $3. No row = not claimable now.
WITH claimed AS (
    UPDATE webhook_deliveries d SET attempts = d.attempts + 1, next_attempt_at = $4
    FROM webhooks w
    WHERE d.tenant_id = $1 AND d.id = $2 AND d.status = 'pending' AND d.next_attempt_at <= $3
      AND d.attempts < $5 AND w.tenant_id = d.tenant_id AND w.id = d.webhook_id AND w.disabled_at IS NULL
    RETURNING d.tenant_id, d.id, d.event_id, d.checkpoint_seq, d.attempts AS attempt, w.url, w.secret_box
), started AS (
    INSERT INTO webhook_attempts (tenant_id, delivery_id, attempt, attempted_at)
    SELECT tenant_id, id, attempt, $3 FROM claimed
)
SELECT event_id, checkpoint_seq, attempt, url, secret_box FROM claimed;

-- name: webhook_delivery_state
-- Where a delivery stands (why it could not be claimed).
SELECT d.status, d.attempts, d.next_attempt_at, w.disabled_at
FROM webhook_deliveries d
JOIN webhooks w ON w.tenant_id = d.tenant_id AND w.id = d.webhook_id
WHERE d.tenant_id = $1 AND d.id = $2;

-- name: finish_webhook_attempt
-- Record attempt $3's outcome ($4 HTTP status, $5 error, $6 duration) and move the delivery on:
-- $7 new status, $8 next attempt (NULL unless pending), $9 now. Ignored when the delivery moved on
-- meanwhile (cancelled, or a later attempt claimed it after the lease ran out).
WITH outcome AS (
    UPDATE webhook_attempts SET status_code = $4, error = $5, duration_ms = $6
    WHERE tenant_id = $1 AND delivery_id = $2 AND attempt = $3
)
UPDATE webhook_deliveries
SET status = $7::text, next_attempt_at = $8::timestamptz,
    finished_at = CASE WHEN $7::text = 'pending' THEN NULL ELSE $9::timestamptz END
WHERE tenant_id = $1 AND id = $2 AND attempts = $3 AND status = 'pending'
RETURNING status;

-- name: end_webhook_delivery
-- Close a pending delivery without another attempt ($3 'failed' or 'cancelled', at $4).
UPDATE webhook_deliveries SET status = $3, next_attempt_at = NULL, finished_at = $4
WHERE tenant_id = $1 AND id = $2 AND status = 'pending'
RETURNING status;

-- name: due_webhook_deliveries
-- Pending deliveries whose next attempt was due by $1, longest overdue first (for the redelivery cron).
SELECT tenant_id, id FROM webhook_deliveries
WHERE status = 'pending' AND next_attempt_at <= $1
ORDER BY next_attempt_at
LIMIT $2;
