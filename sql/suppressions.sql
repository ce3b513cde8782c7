-- name: resolve_campaign
-- A campaign's id by name, created on first use.
WITH new_campaign AS (
    INSERT INTO campaigns (tenant_id, name) VALUES ($1, $2)
    ON CONFLICT (tenant_id, name) DO NOTHING
    RETURNING id
)
SELECT coalesce((SELECT id FROM new_campaign),
                (SELECT id FROM campaigns WHERE tenant_id = $1 AND name = $2)) AS id;

-- name: upsert_suppression
-- Suppress one recipient at one scope, atomically: append the event, upsert the suppression, end
-- the matching consents when the reason is `unsubscribed`, and rewrite the projection row.
-- $1 tenant, $2 channel, $3 address hash, $4 address (NULL keeps the stored one), $5 topic id
-- (0 = all topics), $6 reason, $7 expires at, $8 campaign id, $9 note, $10 source, $11 actor,
-- $12 occurred at, $13 event data, $14 event kind, $15 only if new: when true and the same reason is
-- already in force at this scope or for all topics, nothing is written and no row comes back.
-- A repeated suppression keeps its first time and the later expiry (NULL = never).
WITH go AS (
    SELECT 1 AS ok
    WHERE NOT ($15::boolean AND EXISTS (
        SELECT 1 FROM suppressions
        WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND reason = $6
          AND topic_id IN (0, $5) AND (expires_at IS NULL OR expires_at > $12)))
), prior AS (
    SELECT created_at, expires_at FROM suppressions
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id = $5 AND reason = $6
), merged AS (
    SELECT CASE WHEN p.expires_at IS NOT NULL AND p.expires_at <= $12 THEN $12 ELSE coalesce(p.created_at, $12) END AS created_at,
           CASE WHEN p.created_at IS NULL OR (p.expires_at IS NOT NULL AND p.expires_at <= $12) THEN $7::timestamptz
                WHEN p.expires_at IS NULL OR $7::timestamptz IS NULL THEN NULL
                ELSE greatest(p.expires_at, $7::timestamptz) END AS expires_at
    FROM go LEFT JOIN prior p ON true
), new_event AS (
    SELECT nextval(pg_get_serial_sequence('events', 'id')) AS id FROM merged
), saved AS (
    -- The suppression row decides whether anything is written: ON CONFLICT sees rows committed
    -- after this statement's snapshot, so two concurrent "only if new" clicks write once.
    INSERT INTO suppressions AS s (tenant_id, channel, address_hash, topic_id, reason, created_at,
                                   expires_at, campaign_id, note, event_id)
    SELECT $1, $2, $3, $5, $6, m.created_at, m.expires_at, $8, $9, n.id FROM merged m, new_event n
    ON CONFLICT (tenant_id, channel, address_hash, topic_id, reason) DO UPDATE
    SET created_at = excluded.created_at, expires_at = excluded.expires_at,
        campaign_id = coalesce(excluded.campaign_id, s.campaign_id),
        note = coalesce(excluded.note, s.note), event_id = excluded.event_id
    WHERE NOT $15::boolean OR (s.expires_at IS NOT NULL AND s.expires_at <= $12)
    RETURNING created_at, expires_at, event_id
), ended_consents AS (
    DELETE FROM consents
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3
      AND $6 = 'unsubscribed' AND ($5 = 0 OR topic_id = $5) AND EXISTS (SELECT 1 FROM saved)
    RETURNING topic_id
), ev AS (
    INSERT INTO events (id, tenant_id, channel, address_hash, kind, topic_id, campaign_id, source, actor,
                        occurred_at, data)
    OVERRIDING SYSTEM VALUE
    SELECT sv.event_id, $1, $2, $3, $14, nullif($5, 0), $8, $10, $11, $12,
           $13::jsonb || CASE WHEN $9::text IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('note', $9::text) END
           || jsonb_build_object(
               'reason', $6, 'expires_at', sv.expires_at,
               'consents_ended', (SELECT coalesce(jsonb_agg(topic_id ORDER BY topic_id), '[]') FROM ended_consents))
    FROM saved sv
    RETURNING id, recorded_at
), global_after AS (
    SELECT reason, expires_at FROM suppressions
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id = 0
      AND NOT ($5 = 0 AND reason = $6)
    UNION ALL
    SELECT $6, m.expires_at FROM merged m WHERE $5 = 0
), topics_after AS (
    SELECT topic_id FROM suppressions
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id <> 0 AND reason = 'unsubscribed'
    UNION
    SELECT $5 WHERE $5 <> 0 AND $6 = 'unsubscribed'
), consents_after AS (
    SELECT topic_id, partners, expires_at FROM consents
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3
      AND NOT ($6 = 'unsubscribed' AND ($5 = 0 OR topic_id = $5))
), projection AS (
    INSERT INTO recipients AS r (tenant_id, channel, address_hash, address, suppression_reasons,
                                 suppression_expires, unsubscribed_topics, consent_topics,
                                 partner_consent_topics, consent_expires)
    SELECT $1, $2, $3, $4,
           coalesce((SELECT array_agg(reason ORDER BY reason) FROM global_after), '{}'),
           coalesce((SELECT array_agg(expires_at ORDER BY reason) FROM global_after), '{}'),
           coalesce((SELECT array_agg(topic_id ORDER BY topic_id) FROM topics_after), '{}'),
           coalesce((SELECT array_agg(topic_id ORDER BY topic_id) FROM consents_after), '{}'),
           coalesce((SELECT array_agg(topic_id ORDER BY topic_id) FROM consents_after WHERE partners), '{}'),
           coalesce((SELECT CASE WHEN bool_and(expires_at IS NULL) THEN '{}'::timestamptz[]
                            ELSE array_agg(expires_at ORDER BY topic_id) END FROM consents_after), '{}')
    WHERE EXISTS (SELECT 1 FROM saved)
    ON CONFLICT (tenant_id, channel, address_hash) DO UPDATE
    SET suppression_reasons = excluded.suppression_reasons,
        suppression_expires = excluded.suppression_expires,
        unsubscribed_topics = excluded.unsubscribed_topics,
        consent_topics = excluded.consent_topics,
        partner_consent_topics = excluded.partner_consent_topics,
        consent_expires = excluded.consent_expires,
        address = CASE WHEN r.erased_at IS NULL THEN coalesce(excluded.address, r.address) END,
        updated_at = now()
    RETURNING 1
)
SELECT ev.id AS event_id, saved.created_at, saved.expires_at,
       (SELECT count(*) FROM projection) AS projected,
       (SELECT coalesce(array_agg(topic_id ORDER BY topic_id), '{}') FROM ended_consents) AS consents_ended
FROM ev, saved;

-- name: suppressions_at_scope
-- The suppressions of one recipient at one scope (topic id, 0 = all topics).
SELECT reason, created_at, expires_at FROM suppressions
WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id = $4
ORDER BY reason;

-- name: delete_suppressions
-- Lift the named suppressions of one recipient at one scope atomically: one ledger event per lifted
-- row and the projection rewritten. $4 topic id (0 = all), $5 reasons, $6 source, $7 actor,
-- $8 occurred at, $9 event data, $10 lift only rows that expired by then (NULL = regardless).
-- Returns the lifted reasons.
WITH lifted AS (
    DELETE FROM suppressions
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id = $4 AND reason = ANY($5::text[])
      AND ($10::timestamptz IS NULL OR (expires_at IS NOT NULL AND expires_at <= $10))
    RETURNING reason, created_at, expires_at
), ev AS (
    INSERT INTO events (tenant_id, channel, address_hash, kind, topic_id, source, actor, occurred_at, data)
    SELECT $1, $2, $3, 'suppression_lifted', nullif($4, 0), $6, $7, $8,
           $9::jsonb || jsonb_build_object('reason', l.reason, 'suppressed_since', l.created_at)
    FROM lifted l
    RETURNING id
), global_after AS (
    SELECT reason, expires_at FROM suppressions
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id = 0
      AND NOT ($4 = 0 AND reason IN (SELECT reason FROM lifted))
), topics_after AS (
    SELECT topic_id FROM suppressions
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id <> 0 AND reason = 'unsubscribed'
      AND NOT (topic_id = $4 AND reason IN (SELECT reason FROM lifted))
), projection AS (
    UPDATE recipients
    SET suppression_reasons = coalesce((SELECT array_agg(reason ORDER BY reason) FROM global_after), '{}'),
        suppression_expires = coalesce((SELECT array_agg(expires_at ORDER BY reason) FROM global_after), '{}'),
        unsubscribed_topics = coalesce((SELECT array_agg(topic_id ORDER BY topic_id) FROM topics_after), '{}'),
        erased_at = CASE WHEN 'erased' IN (SELECT reason FROM lifted) THEN NULL ELSE erased_at END,
        updated_at = now()
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND EXISTS (SELECT 1 FROM lifted)
    RETURNING 1
)
SELECT l.reason, (SELECT array_agg(id ORDER BY id) FROM ev) AS event_ids,
       (SELECT count(*) FROM projection) AS projected
FROM lifted l ORDER BY l.reason;

-- name: list_suppressions
-- One page of a tenant's suppressions in (created_at, channel, hash, topic, reason) order after the
-- cursor. $2 channel, $3 reason, $4 since (all optional); $5..$9 the cursor (NULL = first page);
-- $10 page size; $11 now (for the active flag).
SELECT s.created_at, s.channel, s.address_hash, s.topic_id, s.reason, s.expires_at, s.note,
       r.address, t.name AS topic, c.name AS campaign,
       (s.expires_at IS NULL OR s.expires_at > $11) AS active
FROM suppressions s
LEFT JOIN recipients r ON r.tenant_id = s.tenant_id AND r.channel = s.channel AND r.address_hash = s.address_hash
LEFT JOIN topics t ON t.id = s.topic_id
LEFT JOIN campaigns c ON c.id = s.campaign_id
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
