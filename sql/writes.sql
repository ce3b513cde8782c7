-- The one write path (src/suppress/writes.py). Every write runs, in one transaction:
-- lock_recipients (in key order), the apply statements of its intents (set-based, at most one
-- intent per recipient per statement), then rewrite_projection. Only rewrite_projection computes
-- the projection's derived columns; the apply statements change the rows it derives them from.

-- name: lock_recipients
-- Take the write lock of each recipient, in the order given (callers sort by channel and hash, so
-- concurrent writers never wait on each other in a cycle), creating the projection rows that do
-- not exist yet; a given address (not NULL) is stored unless the recipient was erased.
-- $2..$4 parallel arrays: channel, hash, address (no key twice).
INSERT INTO recipients AS r (tenant_id, channel, address_hash, address)
SELECT $1, i.channel, i.address_hash, i.address
FROM unnest($2::text[], $3::bytea[], $4::text[]) AS i(channel, address_hash, address)
ON CONFLICT (tenant_id, channel, address_hash) DO UPDATE
SET address = excluded.address
-- the row is locked either way; it is only rewritten when there is a new address to keep
WHERE r.erased_at IS NULL AND excluded.address IS NOT NULL AND excluded.address IS DISTINCT FROM r.address;

-- name: rewrite_projection
-- Recompute the derived decision columns of these recipients from the rows they come from:
-- suppressions (global reasons and expiries, topic unsubscribes), consents, and customer links
-- (a relationship counts only through links collected in a sale; an objection of any linked
-- customer, GDPR Art. 21, reaches the address whenever it is linked, before or after the objection).
-- $2, $3 parallel arrays: channel, hash. Restriction, erasure and the address are set by their own
-- intents, not derived. Consent validity is not stored: decide() applies the tenant's setting.
UPDATE recipients r
SET suppression_reasons = coalesce(g.reasons, '{}'),
    suppression_expires = coalesce(g.expires, '{}'),
    unsubscribed_topics = coalesce(g.topics, '{}'),
    consent_topics = coalesce(k.topics, '{}'),
    partner_consent_topics = coalesce(k.partner_topics, '{}'),
    consent_granted = coalesce(k.granted, '{}'),
    collected_in_sale = coalesce(c.collected, false),
    agreement_open = coalesce(c.open, false),
    last_purchase_at = c.last_purchase,
    objected_at = c.objected,
    updated_at = now()
FROM unnest($2::text[], $3::bytea[]) AS i(channel, address_hash)
CROSS JOIN LATERAL (
    -- one probe of the recipient's suppressions for both the global ones and the topic unsubscribes
    SELECT array_agg(s.reason ORDER BY s.reason) FILTER (WHERE s.topic_id = 0) AS reasons,
           array_agg(s.expires_at ORDER BY s.reason) FILTER (WHERE s.topic_id = 0) AS expires,
           array_agg(s.topic_id ORDER BY s.topic_id) FILTER (WHERE s.topic_id <> 0 AND s.reason = 'unsubscribed')
               AS topics
    FROM suppressions s
    WHERE s.tenant_id = $1 AND s.channel = i.channel AND s.address_hash = i.address_hash
) g
CROSS JOIN LATERAL (
    SELECT array_agg(k.topic_id ORDER BY k.topic_id) AS topics,
           array_agg(k.topic_id ORDER BY k.topic_id) FILTER (WHERE k.partners) AS partner_topics,
           array_agg(k.granted_at ORDER BY k.topic_id) AS granted
    FROM consents k
    WHERE k.tenant_id = $1 AND k.channel = i.channel AND k.address_hash = i.address_hash
) k
CROSS JOIN LATERAL (
    SELECT bool_or(ca.collected_in_sale) AS collected,
           bool_or(ca.collected_in_sale AND cu.agreement_open) AS open,
           max(cu.last_purchase_at) FILTER (WHERE ca.collected_in_sale) AS last_purchase,
           max(cu.objected_at) AS objected
    FROM customer_addresses ca
    JOIN customers cu USING (tenant_id, customer_ref)
    WHERE ca.tenant_id = $1 AND ca.channel = i.channel AND ca.address_hash = i.address_hash
) c
WHERE r.tenant_id = $1 AND r.channel = i.channel AND r.address_hash = i.address_hash
  -- a write that changed nothing (a repeated unsubscribe, say) leaves the row as it is
  AND (r.suppression_reasons, r.suppression_expires, r.unsubscribed_topics, r.consent_topics,
       r.partner_consent_topics, r.consent_granted, r.collected_in_sale, r.agreement_open, r.last_purchase_at,
       r.objected_at)
      IS DISTINCT FROM
      (coalesce(g.reasons, '{}'), coalesce(g.expires, '{}'), coalesce(g.topics, '{}'), coalesce(k.topics, '{}'),
       coalesce(k.partner_topics, '{}'), coalesce(k.granted, '{}'), coalesce(c.collected, false),
       coalesce(c.open, false), c.last_purchase, c.objected);

-- name: apply_suppressions
-- Suppress intents: for each row, unless `only if new` and the same reason is already in force at
-- its scope or for all topics, upsert the suppression (a repeat keeps its first time and the later
-- expiry, NULL = never), end the matching consents when the reason is `unsubscribed`, and append
-- the event. $2..$15 parallel arrays: intent number, channel, hash, topic id (0 = all), reason,
-- expires at, campaign id, note, source, actor, occurred at, event data (JSON text), event kind,
-- only if new, the event's personal fields (JSON text or NULL; kept outside the sealed line, so
-- erasure can scrub them). The event names the consents it ended and their own events (an undo of
-- an unsubscribe restores them from those). Returns, per intent that wrote, its event id and the
-- consent topics it ended.
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::bytea[], $5::integer[], $6::text[],
                         $7::timestamptz[], $8::bigint[], $9::text[], $10::text[], $11::text[],
                         $12::timestamptz[], $13::text[], $14::text[], $15::boolean[], $16::text[])
        AS i(n, channel, address_hash, topic_id, reason, expires_at, campaign_id, note, source, actor,
             occurred_at, data, kind, only_if_new, personal)
), merged AS (
    SELECT i.*, nextval(pg_get_serial_sequence('events', 'id')) AS event_id,
           CASE WHEN p.expires_at IS NOT NULL AND p.expires_at <= i.occurred_at THEN i.occurred_at
                ELSE coalesce(p.created_at, i.occurred_at) END AS since,
           CASE WHEN p.created_at IS NULL OR (p.expires_at IS NOT NULL AND p.expires_at <= i.occurred_at)
                    THEN i.expires_at
                WHEN p.expires_at IS NULL OR i.expires_at IS NULL THEN NULL
                ELSE greatest(p.expires_at, i.expires_at) END AS until
    FROM input i
    -- probes per input row: a hash join would read all of the tenant's rows for each batch
    LEFT JOIN LATERAL (
        SELECT p.created_at, p.expires_at FROM suppressions p
        WHERE p.tenant_id = $1 AND p.channel = i.channel AND p.address_hash = i.address_hash
          AND p.topic_id = i.topic_id AND p.reason = i.reason
        OFFSET 0
    ) p ON true
    WHERE NOT (i.only_if_new AND EXISTS (
        SELECT 1 FROM suppressions s
        WHERE s.tenant_id = $1 AND s.channel = i.channel AND s.address_hash = i.address_hash
          AND s.reason = i.reason AND s.topic_id IN (0, i.topic_id)
          AND (s.expires_at IS NULL OR s.expires_at > i.occurred_at)))
), ended AS (
    DELETE FROM consents c
    WHERE c.tenant_id = $1 AND c.ctid = ANY (ARRAY(
        SELECT k.ctid FROM merged m
        CROSS JOIN LATERAL (
            SELECT k.ctid FROM consents k
            WHERE k.tenant_id = $1 AND k.channel = m.channel AND k.address_hash = m.address_hash
              AND (m.topic_id = 0 OR k.topic_id = m.topic_id)
            OFFSET 0
        ) k
        WHERE m.reason = 'unsubscribed'))
    RETURNING c.channel, c.address_hash, c.topic_id, c.event_id
), ended_by AS (
    SELECT m.n, coalesce(array_agg(e.topic_id ORDER BY e.topic_id) FILTER (WHERE e.topic_id IS NOT NULL), '{}')
               AS topics,
           coalesce(array_agg(e.event_id ORDER BY e.topic_id) FILTER (WHERE e.topic_id IS NOT NULL), '{}')
               AS events
    FROM merged m LEFT JOIN ended e ON e.channel = m.channel AND e.address_hash = m.address_hash
    GROUP BY m.n
), saved AS (
    INSERT INTO suppressions AS s (tenant_id, channel, address_hash, topic_id, reason, created_at,
                                   expires_at, campaign_id, note, event_id)
    SELECT $1, m.channel, m.address_hash, m.topic_id, m.reason, m.since, m.until, m.campaign_id, m.note,
           m.event_id
    FROM merged m
    ON CONFLICT (tenant_id, channel, address_hash, topic_id, reason) DO UPDATE
    SET created_at = excluded.created_at, expires_at = excluded.expires_at,
        campaign_id = coalesce(excluded.campaign_id, s.campaign_id),
        note = coalesce(excluded.note, s.note), event_id = excluded.event_id
    RETURNING 1
), ev AS (
    INSERT INTO events (id, tenant_id, channel, address_hash, kind, topic_id, campaign_id, source, actor,
                        occurred_at, data, personal)
    OVERRIDING SYSTEM VALUE
    SELECT m.event_id, $1, m.channel, m.address_hash, m.kind, nullif(m.topic_id, 0), m.campaign_id, m.source,
           m.actor, m.occurred_at,
           m.data::jsonb
           || jsonb_build_object('reason', m.reason, 'expires_at', m.until, 'consents_ended', to_jsonb(b.topics))
           -- the ended consents' own events: what an undo of this unsubscribe restores
           || CASE WHEN cardinality(b.events) > 0 THEN jsonb_build_object('consents_ended_events', to_jsonb(b.events))
                   ELSE '{}' END,
           m.personal::jsonb
    FROM merged m JOIN ended_by b USING (n)
    RETURNING 1
)
SELECT m.n, m.event_id, b.topics AS consents_ended
FROM merged m JOIN ended_by b USING (n)
ORDER BY m.n;

-- name: apply_lifts
-- Lift intents: delete the named suppression of each row (one reason at one scope), when
-- `expired by` is NULL or the suppression's expiry has passed by then, with one
-- `suppression_lifted` event each. $2..$11 parallel arrays: intent number, channel, hash, topic id,
-- reason, expired by, source, actor, occurred at, event data (JSON text), personal fields (JSON text
-- or NULL). Returns what was lifted.
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::bytea[], $5::integer[], $6::text[],
                         $7::timestamptz[], $8::text[], $9::text[], $10::timestamptz[], $11::text[],
                         $12::text[])
        AS i(n, channel, address_hash, topic_id, reason, expired_by, source, actor, occurred_at, data, personal)
), lifted AS (
    DELETE FROM suppressions s USING input i
    WHERE s.tenant_id = $1 AND s.channel = i.channel AND s.address_hash = i.address_hash
      AND s.topic_id = i.topic_id AND s.reason = i.reason
      AND (i.expired_by IS NULL OR (s.expires_at IS NOT NULL AND s.expires_at <= i.expired_by))
    RETURNING i.n, s.created_at
), numbered AS (
    SELECT i.*, l.created_at AS suppressed_since, nextval(pg_get_serial_sequence('events', 'id')) AS event_id
    FROM input i JOIN lifted l USING (n)
), ev AS (
    INSERT INTO events (id, tenant_id, channel, address_hash, kind, topic_id, source, actor, occurred_at, data,
                        personal)
    OVERRIDING SYSTEM VALUE
    SELECT x.event_id, $1, x.channel, x.address_hash, 'suppression_lifted', nullif(x.topic_id, 0), x.source,
           x.actor, x.occurred_at,
           x.data::jsonb || jsonb_build_object('reason', x.reason, 'suppressed_since', x.suppressed_since),
           x.personal::jsonb
    FROM numbered x
    RETURNING 1
)
SELECT x.n, x.reason, x.event_id FROM numbered x
ORDER BY x.n;

-- name: apply_undos
-- Undo intents: reverse one unsubscribe the recipient made through a link, exactly: delete the
-- `unsubscribed` suppression that unsubscribe wrote (only while it is still the one it wrote: not
-- undone, not lifted, not replaced since) and put back the consents it ended, as they were (their
-- own source, notice version, evidence, times and events), unless a consent of that topic was given
-- since. No consent is given and no consent event appended; one `suppression_lifted` event (cause
-- `undo`, naming the unsubscribe and the consents restored). $2..$10 parallel arrays: intent number,
-- channel, hash, the unsubscribe's event id, the link it must have come through, source, actor,
-- occurred at, event data (JSON text), personal fields (JSON text or NULL). Returns per intent that
-- reversed something its event id, the scope and the consent topics restored.
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::bytea[], $5::bigint[], $6::text[], $7::text[],
                         $8::text[], $9::timestamptz[], $10::text[], $11::text[])
        AS i(n, channel, address_hash, undoes, link, source, actor, occurred_at, data, personal)
), target AS (
    SELECT i.*, coalesce(e.topic_id, 0) AS scope, e.data AS unsubscribe FROM input i
    JOIN events e ON e.tenant_id = $1 AND e.id = i.undoes AND e.channel = i.channel
                 AND e.address_hash = i.address_hash AND e.kind = 'unsubscribed' AND e.actor = 'recipient'
                 AND e.data ->> 'link' = i.link
), lifted AS (
    DELETE FROM suppressions s USING target t
    WHERE s.tenant_id = $1 AND s.channel = t.channel AND s.address_hash = t.address_hash
      AND s.topic_id = t.scope AND s.reason = 'unsubscribed' AND s.event_id = t.undoes
    RETURNING t.n, s.created_at
), restored AS (
    INSERT INTO consents (tenant_id, channel, address_hash, topic_id, partners, source, notice_version,
                          evidence, granted_at, event_id)
    SELECT $1, c.channel, c.address_hash, coalesce(c.topic_id, 0), coalesce((c.data ->> 'partners')::boolean, false),
           c.source, c.data ->> 'notice_version', coalesce(c.personal -> 'evidence', '{}'), c.occurred_at, c.id
    FROM target t
    JOIN lifted l USING (n)
    CROSS JOIN LATERAL jsonb_array_elements_text(coalesce(t.unsubscribe -> 'consents_ended_events', '[]')) AS x(id)
    JOIN events c ON c.tenant_id = $1 AND c.id = x.id::bigint AND c.kind = 'consent_given'
                 AND c.channel = t.channel AND c.address_hash = t.address_hash
    ON CONFLICT (tenant_id, channel, address_hash, topic_id) DO NOTHING  -- a consent given since stays
    RETURNING channel, address_hash, topic_id
), numbered AS (
    SELECT t.*, l.created_at AS suppressed_since,
           coalesce((SELECT array_agg(r.topic_id ORDER BY r.topic_id) FROM restored r
                     WHERE r.channel = t.channel AND r.address_hash = t.address_hash), '{}') AS consents_restored,
           nextval(pg_get_serial_sequence('events', 'id')) AS event_id
    FROM target t JOIN lifted l USING (n)
), ev AS (
    INSERT INTO events (id, tenant_id, channel, address_hash, kind, topic_id, source, actor, occurred_at, data,
                        personal)
    OVERRIDING SYSTEM VALUE
    SELECT x.event_id, $1, x.channel, x.address_hash, 'suppression_lifted', nullif(x.scope, 0), x.source, x.actor,
           x.occurred_at,
           x.data::jsonb || jsonb_build_object('reason', 'unsubscribed', 'cause', 'undo', 'undoes', x.undoes,
                                               'suppressed_since', x.suppressed_since,
                                               'consents_restored', to_jsonb(x.consents_restored)),
           x.personal::jsonb
    FROM numbered x
    RETURNING 1
)
SELECT x.n, x.event_id, x.scope, x.consents_restored FROM numbered x
ORDER BY x.n;

-- name: apply_consents
-- Consent intents: record each consent with its evidence, unless the recipient was erased (refused)
-- or, with `only if new`, the same consent is already recorded (unchanged). A consent lifts an
-- `unsubscribed` suppression of the same scope that it postdates (a person-initiated re-opt-in,
-- with its own event). Whether it has lapsed is decided when it is read, under the tenant's
-- consent validity then (policy.decide), so nothing about its end is stored.
-- $2..$13 parallel arrays: intent number, channel, hash, topic id (0 = all), partners, source, notice
-- version, evidence (JSON text), granted at, actor, event data (JSON text), only if new, the event's
-- personal fields besides the evidence (JSON text or NULL).
-- Returns per intent its status (written, unchanged, erased), event id and the lift's event id.
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::bytea[], $5::integer[], $6::boolean[], $7::text[],
                         $8::text[], $9::text[], $10::timestamptz[], $11::text[], $12::text[], $13::boolean[],
                         $14::text[])
        AS i(n, channel, address_hash, topic_id, partners, source, notice_version, evidence, granted_at,
             actor, data, only_if_new, personal)
), checked AS (
    SELECT i.*, x.erased, x.recorded FROM input i
    CROSS JOIN LATERAL (
        SELECT EXISTS (
                   SELECT 1 FROM recipients r
                   WHERE r.tenant_id = $1 AND r.channel = i.channel AND r.address_hash = i.address_hash
                     AND r.erased_at IS NOT NULL) AS erased,
               i.only_if_new AND EXISTS (
                   SELECT 1 FROM consents k
                   WHERE k.tenant_id = $1 AND k.channel = i.channel AND k.address_hash = i.address_hash
                     AND k.topic_id = i.topic_id AND k.partners = i.partners AND k.granted_at = i.granted_at
                     AND k.source = i.source AND k.notice_version IS NOT DISTINCT FROM i.notice_version) AS recorded
        OFFSET 0
    ) x
), fresh AS (
    SELECT c.*, nextval(pg_get_serial_sequence('events', 'id')) AS event_id
    FROM checked c WHERE NOT c.erased AND NOT c.recorded
), lifted AS (
    DELETE FROM suppressions s
    WHERE s.tenant_id = $1 AND s.ctid = ANY (ARRAY(
        SELECT u.ctid FROM fresh f
        CROSS JOIN LATERAL (
            SELECT u.ctid FROM suppressions u
            WHERE u.tenant_id = $1 AND u.channel = f.channel AND u.address_hash = f.address_hash
              AND u.topic_id = f.topic_id AND u.reason = 'unsubscribed' AND u.created_at < f.granted_at
            OFFSET 0
        ) u))
    RETURNING s.channel, s.address_hash, s.created_at
), lifts AS (
    SELECT f.n, f.channel, f.address_hash, f.topic_id, f.source, f.actor, f.granted_at, l.created_at,
           nextval(pg_get_serial_sequence('events', 'id')) AS event_id
    FROM lifted l JOIN fresh f ON f.channel = l.channel AND f.address_hash = l.address_hash
), ev AS (
    INSERT INTO events (id, tenant_id, channel, address_hash, kind, topic_id, source, actor, occurred_at, data,
                        personal)
    OVERRIDING SYSTEM VALUE
    SELECT f.event_id, $1, f.channel, f.address_hash, 'consent_given', nullif(f.topic_id, 0), f.source, f.actor,
           f.granted_at,
           f.data::jsonb || jsonb_build_object('partners', f.partners, 'notice_version', f.notice_version),
           jsonb_build_object('evidence', f.evidence::jsonb) || coalesce(f.personal::jsonb, '{}')
    FROM fresh f
    UNION ALL
    SELECT l.event_id, $1, l.channel, l.address_hash, 'suppression_lifted', nullif(l.topic_id, 0), l.source,
           l.actor, l.granted_at,
           jsonb_build_object('reason', 'unsubscribed', 'cause', 'consent', 'suppressed_since', l.created_at),
           NULL
    FROM lifts l
    RETURNING 1
), saved AS (
    INSERT INTO consents AS k (tenant_id, channel, address_hash, topic_id, partners, source,
                               notice_version, evidence, granted_at, event_id)
    SELECT $1, f.channel, f.address_hash, f.topic_id, f.partners, f.source, f.notice_version,
           f.evidence::jsonb, f.granted_at, f.event_id
    FROM fresh f
    ON CONFLICT (tenant_id, channel, address_hash, topic_id) DO UPDATE
    SET partners = excluded.partners, source = excluded.source, notice_version = excluded.notice_version,
        evidence = excluded.evidence, granted_at = excluded.granted_at, event_id = excluded.event_id
    RETURNING 1
)
SELECT c.n,
       CASE WHEN c.erased THEN 'erased' WHEN c.recorded THEN 'unchanged' ELSE 'written' END AS status,
       f.event_id, l.event_id AS lift_event_id
FROM checked c
LEFT JOIN fresh f USING (n)
LEFT JOIN lifts l USING (n)
ORDER BY c.n;

-- name: apply_customer_links
-- Customer intents, the address side: link each address to its customer (collected in a sale stays
-- true once true) and append one event each. With `only if new`, a row that would change nothing
-- (link known with that flag, the customer already at or past the event's time) is left out.
-- Run before apply_customers, which moves the customers' times. $2..$12 parallel arrays: intent
-- number, customer ref, channel, hash, collected in sale, event, at, source, actor, event data (JSON
-- text), only if new. Returns per intent whether it wrote and its event id.
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bytea[], $6::boolean[], $7::text[],
                         $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::boolean[])
        AS i(n, customer_ref, channel, address_hash, collected_in_sale, event, at, source, actor, data,
             only_if_new)
), fresh AS (
    SELECT i.*, nextval(pg_get_serial_sequence('events', 'id')) AS event_id FROM input i
    CROSS JOIN LATERAL (
        SELECT i.only_if_new AND EXISTS (
            SELECT 1 FROM customer_addresses ca JOIN customers cu USING (tenant_id, customer_ref)
            WHERE ca.tenant_id = $1 AND ca.customer_ref = i.customer_ref AND ca.channel = i.channel
              AND ca.address_hash = i.address_hash AND (ca.collected_in_sale OR NOT i.collected_in_sale)
              AND CASE i.event WHEN 'purchase' THEN cu.last_purchase_at >= i.at
                               WHEN 'agreement_started' THEN cu.agreement_started_at >= i.at
                               ELSE cu.agreement_ended_at >= i.at END) AS known
        OFFSET 0
    ) x
    WHERE NOT x.known
), customer_rows AS (
    INSERT INTO customers (tenant_id, customer_ref)
    SELECT DISTINCT $1::integer, customer_ref FROM fresh ORDER BY 2
    ON CONFLICT (tenant_id, customer_ref) DO NOTHING
    RETURNING 1
), links AS (
    INSERT INTO customer_addresses AS ca (tenant_id, customer_ref, channel, address_hash, collected_in_sale)
    SELECT DISTINCT ON (customer_ref, channel, address_hash) $1::integer, customer_ref, channel, address_hash,
           collected_in_sale
    FROM fresh ORDER BY customer_ref, channel, address_hash, collected_in_sale DESC
    ON CONFLICT (tenant_id, customer_ref, channel, address_hash) DO UPDATE
    SET collected_in_sale = ca.collected_in_sale OR excluded.collected_in_sale
    RETURNING 1
), ev AS (
    INSERT INTO events (id, tenant_id, channel, address_hash, kind, source, actor, occurred_at, data, personal)
    OVERRIDING SYSTEM VALUE
    SELECT event_id, $1, channel, address_hash, 'customer_' || event, source, actor, at,
           data::jsonb || jsonb_build_object('collected_in_sale', collected_in_sale),
           jsonb_build_object('customer_ref', customer_ref)
    FROM fresh
    RETURNING 1
)
SELECT n, event_id FROM fresh
ORDER BY n;

-- name: apply_customers
-- Customer intents, the customer side: each customer's events folded into its row (the latest
-- start, end and purchase win; an agreement is open when its latest start is after its latest end,
-- so events arriving out of order never undo a later one). $2..$4 parallel arrays: customer ref,
-- event, at. Returns each customer's state after the change.
WITH input AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS i(customer_ref, event, at)
), folded AS (
    SELECT customer_ref,
           max(at) FILTER (WHERE event = 'agreement_started') AS started,
           max(at) FILTER (WHERE event = 'agreement_ended') AS ended,
           max(at) FILTER (WHERE event = 'purchase') AS purchase
    FROM input GROUP BY customer_ref
)
INSERT INTO customers AS c (tenant_id, customer_ref, agreement_open, agreement_started_at,
                            agreement_ended_at, last_purchase_at)
SELECT $1, customer_ref, started IS NOT NULL AND (ended IS NULL OR ended < started), started, ended, purchase
FROM folded ORDER BY customer_ref
ON CONFLICT (tenant_id, customer_ref) DO UPDATE
SET agreement_open = CASE
        WHEN excluded.agreement_started_at IS NULL AND excluded.agreement_ended_at IS NULL THEN c.agreement_open
        WHEN greatest(c.agreement_started_at, excluded.agreement_started_at) IS NULL THEN false
        WHEN greatest(c.agreement_ended_at, excluded.agreement_ended_at) IS NULL THEN true
        ELSE greatest(c.agreement_ended_at, excluded.agreement_ended_at)
             < greatest(c.agreement_started_at, excluded.agreement_started_at) END,
    agreement_started_at = greatest(c.agreement_started_at, excluded.agreement_started_at),
    agreement_ended_at = greatest(c.agreement_ended_at, excluded.agreement_ended_at),
    last_purchase_at = greatest(c.last_purchase_at, excluded.last_purchase_at)
RETURNING customer_ref, agreement_open, last_purchase_at;

-- name: customer_recipients
-- Every recipient linked to these customers ($2, an array): the keys a customer-wide write locks.
SELECT DISTINCT channel, address_hash FROM customer_addresses
WHERE tenant_id = $1 AND customer_ref = ANY($2::text[]);

-- name: apply_objection
-- An objection to direct marketing (GDPR Art. 21) recorded on the customer, or lifted ($3 objected?
-- false = an admin's lift): sets or clears customers.objected_at and appends one event per address
-- linked now (`objected` / `objection_lifted`, the customer ref and note as personal fields).
-- Addresses linked later are covered through rewrite_projection, which reads the customer.
-- $2 customer ref, $4 at, $5 source, $6 actor, $7 the event's personal fields (JSON text).
-- Returns whether the customer changed (false: no such customer, or a lift of no objection) and the
-- event ids. The caller then reads the customer's links again (customer_recipients, a new snapshot
-- taken after this statement locked the customer, so a link committed meanwhile is in it) and
-- rewrites their projection.
WITH customer AS (
    UPDATE customers c SET objected_at = CASE WHEN $3::boolean THEN $4::timestamptz END
    WHERE c.tenant_id = $1 AND c.customer_ref = $2 AND ($3::boolean OR c.objected_at IS NOT NULL)
    RETURNING c.customer_ref
), linked AS (
    SELECT ca.channel, ca.address_hash, nextval(pg_get_serial_sequence('events', 'id')) AS event_id
    FROM customer_addresses ca JOIN customer USING (customer_ref)
    WHERE ca.tenant_id = $1
), ev AS (
    INSERT INTO events (id, tenant_id, channel, address_hash, kind, source, actor, occurred_at, data, personal)
    OVERRIDING SYSTEM VALUE
    SELECT l.event_id, $1, l.channel, l.address_hash, CASE WHEN $3 THEN 'objected' ELSE 'objection_lifted' END,
           $5, $6, $4, '{}'::jsonb, $7::jsonb
    FROM linked l
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM customer) AS changed,
       coalesce((SELECT array_agg(event_id ORDER BY event_id) FROM linked), '{}') AS event_ids,
       (SELECT count(*) FROM ev) AS events;
