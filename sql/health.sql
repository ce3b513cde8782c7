-- name: count_health_events
-- Add ledger events to the list-health counters, each at most once (health_counted_events says
-- which are in): per UTC day of recording and channel, each event's metrics; the latency of each
-- unsubscribe (recorded_at minus data.requested_at or occurred_at) into bucket width_bucket($3) - 1
-- ($3 = the buckets' lower bounds in seconds); and per campaign each recipient's first
-- unsubscribe and complaint. $1 tenant, $2 event ids. Returns how many events were new.
WITH fresh AS (
    INSERT INTO health_counted_events (tenant_id, event_id)
    SELECT $1, id FROM unnest($2::bigint[]) AS ids(id)
    ORDER BY id  -- one lock order, so batches overlapping in concurrent transactions cannot deadlock
    ON CONFLICT DO NOTHING
    RETURNING event_id
), ev AS (
    SELECT e.id, e.channel, e.address_hash, e.kind, e.campaign_id, e.recorded_at,
           (e.recorded_at AT TIME ZONE 'UTC')::date AS day,
           CASE WHEN e.kind IN ('suppression_added', 'unsubscribed', 'consent_withdrawn')
                THEN e.data ->> 'reason' END AS reason,
           e.kind = 'consent_withdrawn'
               OR CASE WHEN jsonb_typeof(e.data -> 'consents_ended') = 'array'
                       THEN jsonb_array_length(e.data -> 'consents_ended') > 0 ELSE false END AS withdrew,
           greatest(extract(epoch FROM e.recorded_at
                    - coalesce((e.data ->> 'requested_at')::timestamptz, e.occurred_at)), 0) AS latency
    FROM fresh f
    JOIN events e ON e.tenant_id = $1 AND e.id = f.event_id
), metrics AS (
    SELECT ev.day, ev.channel, m.metric
    FROM ev
    CROSS JOIN LATERAL (VALUES
        (ev.reason),
        (CASE WHEN ev.withdrew THEN 'consents_withdrawn' END),
        (CASE ev.kind WHEN 'consent_given' THEN 'consents_given'
                      WHEN 'suppression_lifted' THEN 'lifted'
                      WHEN 'customer_agreement_started' THEN 'relationships_started'
                      WHEN 'customer_agreement_ended' THEN 'relationships_ended'
                      WHEN 'customer_purchase' THEN 'purchases'
                      WHEN 'erased' THEN 'erased'
                      WHEN 'restricted' THEN 'restricted' END)
    ) AS m(metric)
    WHERE m.metric IS NOT NULL
), daily AS (
    INSERT INTO health_daily AS d (tenant_id, day, channel, metric, n)
    SELECT $1, day, channel, metric, count(*) FROM metrics
    GROUP BY day, channel, metric
    ORDER BY day, channel, metric
    ON CONFLICT (tenant_id, day, channel, metric) DO UPDATE SET n = d.n + excluded.n
    RETURNING 1
), latency AS (
    INSERT INTO health_latency AS l (tenant_id, day, bucket, n)
    SELECT $1, day, width_bucket(latency, $3::float8[]) - 1, count(*) FROM ev
    WHERE reason = 'unsubscribed'
    GROUP BY 2, 3
    ORDER BY 2, 3
    ON CONFLICT (tenant_id, day, bucket) DO UPDATE SET n = l.n + excluded.n
    RETURNING 1
), attributed AS (
    INSERT INTO health_campaign_recipients (tenant_id, campaign_id, metric, address_hash, event_id)
    SELECT DISTINCT ON (campaign_id, reason, address_hash) $1, campaign_id, reason, address_hash, id
    FROM ev
    WHERE campaign_id IS NOT NULL AND reason IN ('unsubscribed', 'complained')
    ORDER BY campaign_id, reason, address_hash, id
    ON CONFLICT DO NOTHING
    RETURNING campaign_id, metric, event_id
), campaign_counts AS (
    INSERT INTO health_campaigns AS c (tenant_id, campaign_id, unsubscribed, complained, active_at)
    SELECT $1, a.campaign_id, count(*) FILTER (WHERE a.metric = 'unsubscribed'),
           count(*) FILTER (WHERE a.metric = 'complained'), max(ev.recorded_at)
    FROM attributed a
    JOIN ev ON ev.id = a.event_id
    GROUP BY a.campaign_id
    ORDER BY a.campaign_id
    ON CONFLICT (tenant_id, campaign_id) DO UPDATE
    SET unsubscribed = c.unsubscribed + excluded.unsubscribed,
        complained = c.complained + excluded.complained,
        active_at = greatest(c.active_at, excluded.active_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh) AS counted;

-- name: tenant_event_id_range
-- The lowest and highest event id of a tenant (for rebuilding the counters in id batches).
SELECT min(id) AS first_id, max(id) AS last_id FROM events WHERE tenant_id = $1;

-- name: event_ids_between
-- The ids of a tenant's events in [$2, $3), in order.
SELECT coalesce(array_agg(id ORDER BY id), '{}') AS ids
FROM events WHERE tenant_id = $1 AND id >= $2 AND id < $3;

-- name: forget_health_events
-- Drop a tenant's event-derived counters, so that counting every event again rebuilds them.
WITH counted AS (
    DELETE FROM health_counted_events WHERE tenant_id = $1 RETURNING 1
), daily AS (
    DELETE FROM health_daily WHERE tenant_id = $1 RETURNING 1
), latency AS (
    DELETE FROM health_latency WHERE tenant_id = $1 RETURNING 1
), attributed AS (
    DELETE FROM health_campaign_recipients WHERE tenant_id = $1 RETURNING 1
), campaigns AS (
    UPDATE health_campaigns SET unsubscribed = 0, complained = 0 WHERE tenant_id = $1 RETURNING 1
)
SELECT (SELECT count(*) FROM counted) AS counted;

-- name: prune_health_counted_events
-- Forget up to $2 counted events older than $1 whose effects are done (they never run again).
DELETE FROM health_counted_events h
USING (
    SELECT c.tenant_id, c.event_id FROM health_counted_events c
    WHERE c.counted_at < $1
      AND NOT EXISTS (SELECT 1 FROM pending_effects p
                      WHERE p.tenant_id = c.tenant_id AND p.event_id = c.event_id)
    ORDER BY c.counted_at
    LIMIT $2
) old
WHERE h.tenant_id = old.tenant_id AND h.event_id = old.event_id;

-- name: health_tenants
-- Every tenant's id (the refresh cron enqueues one job per tenant).
SELECT id FROM tenants ORDER BY id;

-- name: health_refresh_inputs
-- What a tenant's snapshot needs besides the recipients: its policy settings, its topics (as a
-- JSON array of {id, name, soft_opt_in}) and the UTC day of the previous campaign refresh.
SELECT t.relationship_window_days, t.soft_opt_in_without_topic, t.transactional_blocked_by,
       t.consent_validity_days,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'name', name, 'soft_opt_in', soft_opt_in)
                                  ORDER BY name), '[]')
        FROM topics WHERE tenant_id = t.id) AS topics,
       s.checks_through
FROM tenants t
LEFT JOIN health_snapshots s ON s.tenant_id = t.id
WHERE t.id = $1;

-- name: health_audience_groups
-- A tenant's recipients grouped by their decision inputs ($1 tenant, $2 now). Each time the
-- decision compares with now is replaced by a stand-in that compares the same way (an expiry by
-- now + 1 day when still ahead, by now when passed; a last purchase by now when at or after $3 =
-- now minus the relationship window, by NULL before it), so recipients in one group decide alike
-- and policy.decide() runs once per group. lapses_on: the UTC day a customer relationship (no
-- open agreement) lapses, last purchase + $4 seconds (the window), when the purchase lies in
-- [$3, $5), i.e. it lapses within the horizon. The consents' times and the objection are
-- compared with $6 = now minus the tenant's consent validity (NULL: consents never lapse) and with
-- each other: an objection becomes $6 + 1 day when after $6, $6 - 1 day when not (now without a
-- validity), and a consent time the stand-in on the same side of both (see decide()). Per row only
-- comparisons with parameters and within the row.
SELECT r.channel,
       r.suppression_reasons,
       CASE WHEN cardinality(r.suppression_expires) = 0 THEN r.suppression_expires
            ELSE ARRAY(SELECT CASE WHEN x.until IS NULL THEN NULL
                                   WHEN x.until > $2 THEN $2 + interval '1 day' ELSE $2 END
                       FROM unnest(r.suppression_expires) WITH ORDINALITY AS x(until, i) ORDER BY x.i)
       END AS suppression_expires,
       r.unsubscribed_topics,
       r.consent_topics,
       CASE WHEN cardinality(r.consent_granted) = 0 OR (r.objected_at IS NULL AND $6::timestamptz IS NULL)
                 THEN '{}'::timestamptz[]  -- never compared: decide() reads them only in those cases
            ELSE ARRAY(SELECT CASE
                           WHEN $6 IS NULL THEN CASE WHEN x.granted > r.objected_at THEN $2 + interval '1 day'
                                                     ELSE $2 END
                           WHEN r.objected_at IS NULL THEN CASE WHEN x.granted > $6 THEN $6 + interval '1 day'
                                                                ELSE $6 END
                           WHEN r.objected_at > $6 THEN CASE WHEN x.granted > r.objected_at THEN $6 + interval '2 days'
                                                             WHEN x.granted > $6 THEN $6 + interval '1 day'
                                                             ELSE $6 END
                           ELSE CASE WHEN x.granted > $6 THEN $6 + interval '1 day'
                                     WHEN x.granted > r.objected_at THEN $6
                                     ELSE $6 - interval '1 day' END
                       END
                       FROM unnest(r.consent_granted) WITH ORDINALITY AS x(granted, i) ORDER BY x.i)
       END AS consent_granted,
       CASE WHEN r.objected_at IS NULL THEN NULL
            WHEN $6::timestamptz IS NULL THEN $2
            WHEN r.objected_at > $6 THEN $6 + interval '1 day'
            ELSE $6 - interval '1 day' END AS objected_at,
       r.partner_consent_topics,
       r.collected_in_sale,
       r.agreement_open,
       CASE WHEN r.last_purchase_at >= $3 THEN $2 END AS last_purchase_at,
       r.restricted_at IS NOT NULL AS restricted,
       r.erased_at IS NOT NULL AS erased,
       CASE WHEN r.collected_in_sale AND NOT r.agreement_open AND r.last_purchase_at >= $3
                 AND r.last_purchase_at < $5
            THEN ((r.last_purchase_at + make_interval(secs => $4::float8)) AT TIME ZONE 'UTC')::date
       END AS lapses_on,
       count(*) AS recipients
FROM recipients r
WHERE r.tenant_id = $1
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14;

-- name: prefer_hash_aggregate
-- For the rest of this transaction: group with a hash table. The planner cannot know that the
-- audience groups are few (it expects one per row) and would sort every row on disk instead.
SET LOCAL enable_sort = off;

-- name: refresh_campaign_checks
-- Recompute from check_counts the check totals of tenant $1's campaigns that have counts on day $2
-- or later; $3 now. A campaign's activity time is the end of its last check day (now for today).
WITH touched AS (
    SELECT DISTINCT campaign_id FROM check_counts
    WHERE tenant_id = $1 AND day >= $2 AND campaign_id <> 0
), outcomes AS (
    SELECT cc.campaign_id, cc.allowed, cc.outcome, sum(cc.recipients) AS n, max(cc.day) AS last_day
    FROM touched t
    JOIN check_counts cc ON cc.tenant_id = $1 AND cc.campaign_id = t.campaign_id AND cc.campaign_id <> 0
    GROUP BY cc.campaign_id, cc.allowed, cc.outcome
), totals AS (
    SELECT campaign_id, sum(n) AS checked, coalesce(sum(n) FILTER (WHERE allowed), 0) AS allowed,
           coalesce(jsonb_object_agg(outcome, n) FILTER (WHERE NOT allowed), '{}') AS denied,
           max(last_day) AS last_day
    FROM outcomes
    GROUP BY campaign_id
)
INSERT INTO health_campaigns AS c
    (tenant_id, campaign_id, checked, allowed, denied, last_checked_on, active_at)
SELECT $1, campaign_id, checked, allowed, denied, last_day,
       least($3::timestamptz, (last_day + 1)::timestamp AT TIME ZONE 'UTC')
FROM totals
ORDER BY campaign_id
ON CONFLICT (tenant_id, campaign_id) DO UPDATE
SET checked = excluded.checked, allowed = excluded.allowed, denied = excluded.denied,
    last_checked_on = excluded.last_checked_on, active_at = greatest(c.active_at, excluded.active_at)
WHERE (c.checked, c.allowed, c.denied, c.last_checked_on)
      IS DISTINCT FROM (excluded.checked, excluded.allowed, excluded.denied, excluded.last_checked_on);

-- name: save_health_snapshot
-- Store a tenant's snapshot unless a newer one is already there. $2 computed at, $3 duration in
-- ms, $4 checks through (UTC day), $5 audience, $6 lapsing.
INSERT INTO health_snapshots AS s (tenant_id, computed_at, duration_ms, checks_through, audience, lapsing)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant_id) DO UPDATE
SET computed_at = excluded.computed_at, duration_ms = excluded.duration_ms,
    checks_through = excluded.checks_through, audience = excluded.audience, lapsing = excluded.lapsing
WHERE s.computed_at <= excluded.computed_at;

-- name: health_overview
-- A tenant's name, alert lines and latest snapshot (NULLs before the first one), and the worker's
-- backlog: the tenant's events whose effects (counting among them) are still pending, counted up
-- to $2, and when the oldest of them (lowest id, the next the drain claims) was written.
SELECT t.name AS tenant_name, t.complaint_alert_rate::float8 AS alert_rate,
       t.complaint_stop_rate::float8 AS stop_rate,
       t.unsubscribe_alert_rate::float8 AS unsubscribe_alert_rate,
       s.computed_at, s.audience, s.lapsing,
       (SELECT count(*) FROM (SELECT 1 FROM pending_effects p WHERE p.tenant_id = t.id LIMIT $2) AS b)
           AS pending_effects,
       (SELECT p.created_at FROM pending_effects p WHERE p.tenant_id = t.id ORDER BY p.event_id LIMIT 1)
           AS oldest_pending_at
FROM tenants t
LEFT JOIN health_snapshots s ON s.tenant_id = t.id
WHERE t.id = $1;

-- name: health_daily_counts
-- A tenant's daily counters from UTC day $2 on.
SELECT day, channel, metric, n FROM health_daily WHERE tenant_id = $1 AND day >= $2;

-- name: health_latency_counts
-- A tenant's unsubscribe latency histogram summed over the UTC days from $2 on.
SELECT bucket, sum(n)::bigint AS n FROM health_latency WHERE tenant_id = $1 AND day >= $2 GROUP BY bucket;

-- name: health_campaign_rows
-- A tenant's campaigns active since $2, most recently active first, at most $3.
SELECT c.name AS campaign, h.checked, h.allowed, h.denied, h.unsubscribed, h.complained, h.active_at
FROM health_campaigns h
JOIN campaigns c ON c.tenant_id = h.tenant_id AND c.id = h.campaign_id
WHERE h.tenant_id = $1 AND h.active_at >= $2
ORDER BY h.active_at DESC, h.campaign_id DESC
LIMIT $3;

-- name: open_dashboard_session
-- A session $1 (SHA-256 of its id) for key $3 of tenant $2 from $4 until $5; the key's expired
-- sessions are forgotten in the same statement.
WITH expired AS (
    DELETE FROM dashboard_sessions WHERE key_id = $3 AND expires_at <= $4
)
INSERT INTO dashboard_sessions (id_hash, tenant_id, key_id, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5);

-- name: dashboard_session_viewer
-- Who looks through session $1 at $2: its key and tenant, while the session lasts and the key is
-- not revoked and may read.
SELECT k.id AS key_id, t.id AS tenant_id, t.name AS tenant_name
FROM dashboard_sessions s
JOIN api_keys k ON k.id = s.key_id AND k.tenant_id = s.tenant_id
JOIN tenants t ON t.id = s.tenant_id
WHERE s.id_hash = $1 AND s.expires_at > $2
  AND k.revoked_at IS NULL AND k.scopes && '{read,admin}'::text[];

-- name: end_dashboard_session
-- Sign out: session $1 is gone, for every copy of its cookie.
DELETE FROM dashboard_sessions WHERE id_hash = $1;
