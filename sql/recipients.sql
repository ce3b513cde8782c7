-- name: create_topic
-- Create a topic, or update its soft opt-in flag; `created` tells which.
INSERT INTO topics AS t (tenant_id, name, soft_opt_in) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, name) DO UPDATE SET soft_opt_in = excluded.soft_opt_in
RETURNING id, name, soft_opt_in, created_at, (xmax = 0) AS created;

-- name: topic_by_name
-- One topic of a tenant by name.
SELECT id, name, soft_opt_in, created_at FROM topics WHERE tenant_id = $1 AND name = $2;

-- name: list_topics
-- All topics of a tenant, by name.
SELECT id, name, soft_opt_in, created_at FROM topics WHERE tenant_id = $1 ORDER BY name;

-- name: recipient_state
-- One recipient's projection row (NULL row when nothing is known).
SELECT address, created_at, updated_at, suppression_reasons, suppression_expires, unsubscribed_topics,
       consent_topics, partner_consent_topics, collected_in_sale, agreement_open, last_purchase_at,
       restricted_at, erased_at
FROM recipients WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3;

-- name: recipient_events
-- One recipient's ledger, oldest first, at most $4 events (the newest ones).
SELECT * FROM (
    SELECT e.id, e.seq, e.kind, t.name AS topic, c.name AS campaign, e.source, e.actor, e.occurred_at,
           e.recorded_at, e.data, e.personal
    FROM events e
    LEFT JOIN topics t ON t.id = e.topic_id
    LEFT JOIN campaigns c ON c.id = e.campaign_id
    WHERE e.tenant_id = $1 AND e.channel = $2 AND e.address_hash = $3
    ORDER BY e.id DESC LIMIT $4
) newest ORDER BY id;

-- name: recipient_details
-- One recipient's current consents, suppressions and customer links, as three JSON arrays.
SELECT
    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'topic', t.name, 'partners', k.partners, 'source', k.source,
                'notice_version', k.notice_version, 'evidence', k.evidence, 'granted_at', k.granted_at)
            ORDER BY k.topic_id), '[]')
     FROM consents k LEFT JOIN topics t ON t.id = k.topic_id
     WHERE k.tenant_id = $1 AND k.channel = $2 AND k.address_hash = $3) AS consents,
    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'topic', t.name, 'reason', s.reason, 'since', s.created_at, 'expires_at', s.expires_at,
                'campaign', c.name, 'note', s.note)
            ORDER BY s.topic_id, s.reason), '[]')
     FROM suppressions s LEFT JOIN topics t ON t.id = s.topic_id LEFT JOIN campaigns c ON c.id = s.campaign_id
     WHERE s.tenant_id = $1 AND s.channel = $2 AND s.address_hash = $3) AS suppressions,
    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'customer_ref', ca.customer_ref, 'collected_in_sale', ca.collected_in_sale,
                'agreement_open', cu.agreement_open, 'last_purchase_at', cu.last_purchase_at)
            ORDER BY ca.customer_ref), '[]')
     FROM customer_addresses ca JOIN customers cu USING (tenant_id, customer_ref)
     WHERE ca.tenant_id = $1 AND ca.channel = $2 AND ca.address_hash = $3) AS customers;

-- name: upsert_consent
-- Record a consent atomically: the event, the consent row, the lift of an `unsubscribed`
-- suppression of the same scope that the consent postdates (a person-initiated re-opt-in, with its
-- own event), and the projection. $1 tenant, $2 channel, $3 hash, $4 address, $5 topic id (0 = all),
-- $6 partners, $7 source, $8 notice version, $9 evidence, $10 granted at, $11 actor, $12 event data.
-- The consent lapses after the tenant's consent_validity_days when that is set. An erased recipient
-- gets nothing written and no row back: only an admin lifting the erasure makes consent possible.
WITH validity AS (
    SELECT CASE WHEN consent_validity_days IS NULL THEN NULL::timestamptz
                ELSE $10::timestamptz + make_interval(days => consent_validity_days) END AS expires_at
    FROM tenants WHERE id = $1
), go AS (
    SELECT 1 WHERE NOT EXISTS (
        SELECT 1 FROM recipients
        WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND erased_at IS NOT NULL)
), lifted AS (
    DELETE FROM suppressions
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id = $5
      AND reason = 'unsubscribed' AND created_at < $10 AND EXISTS (SELECT 1 FROM go)
    RETURNING created_at
), ev AS (
    INSERT INTO events (tenant_id, channel, address_hash, kind, topic_id, source, actor, occurred_at, data)
    SELECT $1, $2, $3, 'consent_given', nullif($5, 0), $7, $11, $10,
           $12::jsonb || jsonb_build_object('partners', $6::boolean, 'notice_version', $8::text,
                                            'evidence', $9::jsonb, 'expires_at', (SELECT expires_at FROM validity))
    FROM go
    RETURNING id
), lift_event AS (
    INSERT INTO events (tenant_id, channel, address_hash, kind, topic_id, source, actor, occurred_at, data)
    SELECT $1, $2, $3, 'suppression_lifted', nullif($5, 0), $7, $11, $10,
           jsonb_build_object('reason', 'unsubscribed', 'cause', 'consent', 'suppressed_since', l.created_at)
    FROM lifted l
    RETURNING id
), saved AS (
    INSERT INTO consents AS k (tenant_id, channel, address_hash, topic_id, partners, source,
                               notice_version, evidence, granted_at, event_id, expires_at)
    SELECT $1, $2, $3, $5, $6, $7, $8, $9, $10, ev.id, (SELECT expires_at FROM validity) FROM ev
    ON CONFLICT (tenant_id, channel, address_hash, topic_id) DO UPDATE
    SET partners = excluded.partners, source = excluded.source, notice_version = excluded.notice_version,
        evidence = excluded.evidence, granted_at = excluded.granted_at, event_id = excluded.event_id,
        expires_at = excluded.expires_at
    RETURNING 1
), global_after AS (
    SELECT reason, expires_at FROM suppressions
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id = 0
      AND NOT ($5 = 0 AND reason = 'unsubscribed' AND EXISTS (SELECT 1 FROM lifted))
), topics_after AS (
    SELECT topic_id FROM suppressions
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id <> 0 AND reason = 'unsubscribed'
      AND NOT (topic_id = $5 AND EXISTS (SELECT 1 FROM lifted))
), consents_after AS (
    SELECT topic_id, partners, expires_at FROM consents
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND topic_id <> $5
    UNION ALL
    SELECT $5, $6, (SELECT expires_at FROM validity)
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
    WHERE EXISTS (SELECT 1 FROM go)
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
SELECT ev.id AS event_id, EXISTS (SELECT 1 FROM lifted) AS lifted_unsubscribe,
       ARRAY[ev.id] || coalesce((SELECT array_agg(id ORDER BY id) FROM lift_event), '{}') AS event_ids,
       (SELECT count(*) FROM saved) + (SELECT count(*) FROM projection) + (SELECT count(*) FROM lift_event) AS writes
FROM ev;

-- name: upsert_customer
-- Apply one customer event; out-of-order agreement events never undo a later one.
-- $1 tenant, $2 customer ref, $3 event, $4 at.
INSERT INTO customers AS c (tenant_id, customer_ref, agreement_open, agreement_started_at,
                            agreement_ended_at, last_purchase_at)
VALUES ($1, $2, $3 = 'agreement_started',
        CASE WHEN $3 = 'agreement_started' THEN $4::timestamptz END,
        CASE WHEN $3 = 'agreement_ended' THEN $4::timestamptz END,
        CASE WHEN $3 = 'purchase' THEN $4::timestamptz END)
ON CONFLICT (tenant_id, customer_ref) DO UPDATE
SET agreement_open = CASE
        WHEN $3 = 'agreement_started' AND (c.agreement_ended_at IS NULL OR c.agreement_ended_at <= $4) THEN true
        WHEN $3 = 'agreement_ended' AND (c.agreement_started_at IS NULL OR c.agreement_started_at <= $4) THEN false
        ELSE c.agreement_open END,
    agreement_started_at = CASE WHEN $3 = 'agreement_started'
        THEN greatest(c.agreement_started_at, $4) ELSE c.agreement_started_at END,
    agreement_ended_at = CASE WHEN $3 = 'agreement_ended'
        THEN greatest(c.agreement_ended_at, $4) ELSE c.agreement_ended_at END,
    last_purchase_at = CASE WHEN $3 = 'purchase'
        THEN greatest(c.last_purchase_at, $4) ELSE c.last_purchase_at END
RETURNING agreement_open, last_purchase_at;

-- name: link_customer_address
-- Link addresses to a customer (collected in a sale stays true once true), make sure each has a
-- recipient row, and append one ledger event per address. $3..$6 parallel arrays of channel, hash,
-- address, collected_in_sale; $7 event kind, $8 source, $9 actor, $10 occurred at, $11 event data.
WITH input AS (
    SELECT * FROM unnest($3::text[], $4::bytea[], $5::text[], $6::boolean[])
        AS i(channel, address_hash, address, collected_in_sale)
), links AS (
    INSERT INTO customer_addresses AS ca (tenant_id, customer_ref, channel, address_hash, collected_in_sale)
    SELECT $1, $2, channel, address_hash, collected_in_sale FROM input
    ON CONFLICT (tenant_id, customer_ref, channel, address_hash) DO UPDATE
    SET collected_in_sale = ca.collected_in_sale OR excluded.collected_in_sale
    RETURNING 1
), rows AS (
    INSERT INTO recipients AS r (tenant_id, channel, address_hash, address)
    SELECT $1, channel, address_hash, address FROM input
    ON CONFLICT (tenant_id, channel, address_hash) DO UPDATE
    SET address = CASE WHEN r.erased_at IS NULL THEN excluded.address END
    RETURNING 1
), ev AS (
    INSERT INTO events (tenant_id, channel, address_hash, kind, source, actor, occurred_at, data)
    SELECT $1, channel, address_hash, $7, $8, $9, $10,
           $11::jsonb || jsonb_build_object('customer_ref', $2::text, 'collected_in_sale', collected_in_sale)
    FROM input
    RETURNING id
)
SELECT (SELECT count(*) FROM links) AS links, (SELECT count(*) FROM rows) AS recipients,
       (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM ev) AS event_ids;

-- name: refresh_customer_relationships
-- Recompute the relationship columns of every address linked to these customers ($2, an array),
-- from all the customers each address belongs to (only links collected in a sale count as a basis).
UPDATE recipients r
SET collected_in_sale = agg.collected, agreement_open = agg.open,
    last_purchase_at = agg.last_purchase, updated_at = now()
FROM (
    SELECT ca.channel, ca.address_hash,
           bool_or(ca.collected_in_sale) AS collected,
           bool_or(ca.collected_in_sale AND cu.agreement_open) AS open,
           max(cu.last_purchase_at) FILTER (WHERE ca.collected_in_sale) AS last_purchase
    FROM customer_addresses ca
    JOIN customers cu USING (tenant_id, customer_ref)
    WHERE ca.tenant_id = $1
      AND (ca.channel, ca.address_hash) IN (
          SELECT channel, address_hash FROM customer_addresses WHERE tenant_id = $1 AND customer_ref = ANY($2::text[]))
    GROUP BY ca.channel, ca.address_hash
) agg
WHERE r.tenant_id = $1 AND r.channel = agg.channel AND r.address_hash = agg.address_hash;
