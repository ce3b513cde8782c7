-- name: create_import
-- Register an upload (its chunks follow in the same transaction); returns the new import's id.
-- $1 tenant, $2 kind, $3 format, $4 options, $5 filename, $6 actor.
INSERT INTO imports (tenant_id, kind, format, options, filename, actor, bytes_total, lines_total, sha256)
VALUES ($1, $2, $3, $4, $5, $6, 1, 0, '\x')
RETURNING id;

-- name: add_import_chunk
-- Store one chunk of an upload. $2 import id, $3 sequence number (from 0), $4 bytes.
INSERT INTO import_chunks (tenant_id, import_id, seq, data) VALUES ($1, $2, $3, $4);

-- name: seal_import
-- Record an upload's size, line count, digest and file name ($6, known late for multipart uploads)
-- once every chunk is stored.
UPDATE imports SET bytes_total = $3, lines_total = $4, sha256 = $5, filename = coalesce($6, filename),
                   updated_at = now()
WHERE tenant_id = $1 AND id = $2;

-- name: import_chunk
-- One stored chunk of an upload (NULL past the end).
SELECT data FROM import_chunks WHERE tenant_id = $1 AND import_id = $2 AND seq = $3;

-- name: import_tenant
-- The tenant settings an import needs to normalise addresses and apply the soft-bounce rule.
SELECT default_region, soft_bounce_suppress_days, require_notice_version FROM tenants WHERE id = $1;

-- name: import_by_id
-- One import with its progress.
SELECT id, kind, format, options, filename, actor, status, bytes_total, lines_total, bytes_done,
       lines_done, rows_done, rows_unchanged, rows_failed, error, created_at, started_at, updated_at,
       finished_at
FROM imports WHERE tenant_id = $1 AND id = $2;

-- name: import_errors_page
-- An import's errors in file order, at most $3 of them after ordinal $4.
SELECT ordinal, line, message, raw FROM import_errors
WHERE tenant_id = $1 AND import_id = $2 AND ordinal > $4
ORDER BY ordinal
LIMIT $3;

-- name: add_import_errors
-- Record the rows of one batch that could not be imported (a re-run batch records nothing twice).
-- $3..$6 parallel arrays of ordinal, line, message, raw text.
INSERT INTO import_errors (tenant_id, import_id, ordinal, line, message, raw)
SELECT $1, $2, o, l, m, r FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[]) AS e(o, l, m, r)
ON CONFLICT (tenant_id, import_id, ordinal) DO NOTHING;

-- name: claim_import
-- Take the lease on an unfinished import unless another runner holds a live one; counts the claim as
-- a stall until a batch commits. $3 lease token, $4 lease length. No row: finished or taken.
UPDATE imports
SET lease_token = $3, lease_until = now() + $4::interval, stalls = stalls + 1,
    status = 'running', started_at = coalesce(started_at, now()), updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running')
  AND (lease_until IS NULL OR lease_until < now())
RETURNING kind, format, options, actor, bytes_total, bytes_done, lines_done, rows_done, rows_unchanged,
          rows_failed, stalls;

-- name: checkpoint_import
-- Move the checkpoint past one batch and renew the lease, inside the batch's transaction; no row
-- means the lease was lost (the batch must roll back). $3 token, $4 lease length, $5 bytes done,
-- $6 lines done, $7..$9 rows done, unchanged, failed in this batch.
UPDATE imports
SET bytes_done = $5, lines_done = $6, rows_done = rows_done + $7, rows_unchanged = rows_unchanged + $8,
    rows_failed = rows_failed + $9, stalls = 0, lease_until = now() + $4::interval, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND lease_token = $3 AND status = 'running'
RETURNING bytes_done;

-- name: release_import
-- Give the lease back (end of a time slice, or a failed attempt with its error message).
UPDATE imports SET lease_token = NULL, lease_until = NULL, error = coalesce($4, error), updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND lease_token = $3;

-- name: finish_import
-- Mark an import done or failed and drop its stored upload (its personal data is not kept).
-- $3 token (NULL: regardless of the lease), $4 status, $5 error.
WITH done AS (
    UPDATE imports
    SET status = $4, error = coalesce($5, error), lease_token = NULL, lease_until = NULL,
        finished_at = now(), updated_at = now()
    WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running')
      AND ($3::text IS NULL OR lease_token = $3)
    RETURNING id
), dropped AS (
    DELETE FROM import_chunks WHERE tenant_id = $1 AND import_id IN (SELECT id FROM done)
    RETURNING 1
)
SELECT (SELECT count(*) FROM done) AS finished, (SELECT count(*) FROM dropped) AS chunks_dropped;

-- name: stalled_imports
-- Unfinished imports no runner holds and nobody touched since $1 (lost enqueue, killed worker).
SELECT tenant_id, id, bytes_done FROM imports
WHERE status IN ('queued', 'running') AND (lease_until IS NULL OR lease_until < now()) AND updated_at < $1
ORDER BY updated_at
LIMIT $2;

-- name: import_suppressions
-- The batched form of upsert_suppression (with "only if new"): for each input row, unless the same
-- reason is already in force at its scope or for all topics, append the event, upsert the
-- suppression, end matching consents when the reason is `unsubscribed`, and rewrite the projection.
-- One row per recipient per statement (the caller splits repeats into further statements).
-- $2..$12 parallel arrays: row number, channel, hash, address, topic id (0 = all), reason, expires at,
-- campaign id, note, occurred at, event data (JSON text); $13 source, $14 actor. Returns the numbers
-- of the rows that wrote.
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::bytea[], $5::text[], $6::integer[], $7::text[],
                         $8::timestamptz[], $9::bigint[], $10::text[], $11::timestamptz[], $12::text[])
        AS i(n, channel, address_hash, address, topic_id, reason, expires_at, campaign_id, note, occurred_at, data)
), merged AS (
    SELECT i.*,
           CASE WHEN p.expires_at IS NOT NULL AND p.expires_at <= i.occurred_at THEN i.occurred_at
                ELSE coalesce(p.created_at, i.occurred_at) END AS since,
           CASE WHEN p.created_at IS NULL OR (p.expires_at IS NOT NULL AND p.expires_at <= i.occurred_at)
                    THEN i.expires_at
                WHEN p.expires_at IS NULL OR i.expires_at IS NULL THEN NULL
                ELSE greatest(p.expires_at, i.expires_at) END AS until
    FROM input i
    -- Every lookup is a probe per input row (LATERAL ... OFFSET 0, EXISTS in a select list): a
    -- hash join would read all of the tenant's rows for each batch, and during a big import the
    -- planner's row estimates lag far behind.
    CROSS JOIN LATERAL (
        SELECT EXISTS (
            SELECT 1 FROM suppressions s
            WHERE s.tenant_id = $1 AND s.channel = i.channel AND s.address_hash = i.address_hash
              AND s.reason = i.reason AND s.topic_id IN (0, i.topic_id)
              AND (s.expires_at IS NULL OR s.expires_at > i.occurred_at)) AS in_force
        OFFSET 0
    ) f
    LEFT JOIN LATERAL (
        SELECT p.created_at, p.expires_at FROM suppressions p
        WHERE p.tenant_id = $1 AND p.channel = i.channel AND p.address_hash = i.address_hash
          AND p.topic_id = i.topic_id AND p.reason = i.reason
        OFFSET 0
    ) p ON true
    WHERE NOT f.in_force
), ended_consents AS (
    DELETE FROM consents c
    WHERE c.ctid = ANY (ARRAY(
        SELECT k.ctid FROM merged m
        CROSS JOIN LATERAL (
            SELECT k.ctid FROM consents k
            WHERE k.tenant_id = $1 AND k.channel = m.channel AND k.address_hash = m.address_hash
              AND (m.topic_id = 0 OR k.topic_id = m.topic_id)
            OFFSET 0
        ) k
        WHERE m.reason = 'unsubscribed'))
    RETURNING c.channel, c.address_hash, c.topic_id
), ev AS (
    INSERT INTO events (tenant_id, channel, address_hash, kind, topic_id, campaign_id, source, actor,
                        occurred_at, data)
    SELECT $1, m.channel, m.address_hash, 'suppression_added', nullif(m.topic_id, 0), m.campaign_id, $13, $14,
           m.occurred_at,
           m.data::jsonb || jsonb_build_object(
               'reason', m.reason, 'expires_at', m.until,
               'consents_ended', (SELECT coalesce(jsonb_agg(e.topic_id ORDER BY e.topic_id), '[]')
                                  FROM ended_consents e
                                  WHERE e.channel = m.channel AND e.address_hash = m.address_hash))
    FROM merged m
    RETURNING id, channel, address_hash
), saved AS (
    INSERT INTO suppressions AS s (tenant_id, channel, address_hash, topic_id, reason, created_at,
                                   expires_at, campaign_id, note, event_id)
    SELECT $1, m.channel, m.address_hash, m.topic_id, m.reason, m.since, m.until, m.campaign_id, m.note, ev.id
    FROM merged m JOIN ev ON ev.channel = m.channel AND ev.address_hash = m.address_hash
    ON CONFLICT (tenant_id, channel, address_hash, topic_id, reason) DO UPDATE
    SET created_at = excluded.created_at, expires_at = excluded.expires_at,
        campaign_id = coalesce(excluded.campaign_id, s.campaign_id),
        note = coalesce(excluded.note, s.note), event_id = excluded.event_id
    RETURNING 1
), projection AS (
    INSERT INTO recipients AS r (tenant_id, channel, address_hash, address, suppression_reasons,
                                 suppression_expires, unsubscribed_topics, consent_topics,
                                 partner_consent_topics, consent_expires)
    SELECT $1, m.channel, m.address_hash, m.address, coalesce(g.reasons, '{}'), coalesce(g.expires, '{}'),
           coalesce(t.topics, '{}'), coalesce(k.topics, '{}'), coalesce(k.partner_topics, '{}'),
           coalesce(k.expires, '{}')
    FROM merged m
    CROSS JOIN LATERAL (
        SELECT array_agg(x.reason ORDER BY x.reason) AS reasons,
               array_agg(x.expires_at ORDER BY x.reason) AS expires
        FROM (SELECT s.reason, s.expires_at FROM suppressions s
              WHERE s.tenant_id = $1 AND s.channel = m.channel AND s.address_hash = m.address_hash
                AND s.topic_id = 0 AND NOT (m.topic_id = 0 AND s.reason = m.reason)
              UNION ALL
              SELECT m.reason, m.until WHERE m.topic_id = 0) x
    ) g
    CROSS JOIN LATERAL (
        SELECT array_agg(x.topic_id ORDER BY x.topic_id) AS topics
        FROM (SELECT s.topic_id FROM suppressions s
              WHERE s.tenant_id = $1 AND s.channel = m.channel AND s.address_hash = m.address_hash
                AND s.topic_id <> 0 AND s.reason = 'unsubscribed'
              UNION
              SELECT m.topic_id WHERE m.topic_id <> 0 AND m.reason = 'unsubscribed') x
    ) t
    CROSS JOIN LATERAL (
        SELECT array_agg(c.topic_id ORDER BY c.topic_id) AS topics,
               array_agg(c.topic_id ORDER BY c.topic_id) FILTER (WHERE c.partners) AS partner_topics,
               CASE WHEN bool_and(c.expires_at IS NULL) THEN '{}'::timestamptz[]
                    ELSE array_agg(c.expires_at ORDER BY c.topic_id) END AS expires
        FROM consents c
        WHERE c.tenant_id = $1 AND c.channel = m.channel AND c.address_hash = m.address_hash
          AND NOT (m.reason = 'unsubscribed' AND (m.topic_id = 0 OR c.topic_id = m.topic_id))
    ) k
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
SELECT (SELECT coalesce(array_agg(n), '{}') FROM merged) AS written, (SELECT count(*) FROM ev) AS events,
       (SELECT count(*) FROM saved) AS saved, (SELECT count(*) FROM projection) AS projected;

-- name: import_consents
-- The batched form of upsert_consent: for each input row that is not already recorded as is, append
-- the event, lift an `unsubscribed` suppression of the same scope the consent postdates (with its
-- own event), upsert the consent (lapsing after the tenant's consent_validity_days when set) and
-- rewrite the projection. Erased recipients get nothing written; their row numbers come back in
-- `erased`. One row per recipient per statement.
-- $2..$12 parallel arrays: row number, channel, hash, address, topic id, partners, source, notice
-- version, evidence (JSON text), granted at, event data (JSON text); $13 actor. Returns the numbers of
-- the rows that wrote.
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::bytea[], $5::text[], $6::integer[], $7::boolean[],
                         $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::text[])
        AS i(n, channel, address_hash, address, topic_id, partners, source, notice_version, evidence,
             granted_at, data)
), validity AS (
    SELECT CASE WHEN consent_validity_days IS NULL THEN NULL::interval
                ELSE make_interval(days => consent_validity_days) END AS span
    FROM tenants WHERE id = $1
), checked AS (
    -- probes per input row, as in import_suppressions
    SELECT i.*, x.erased, x.recorded FROM input i
    CROSS JOIN LATERAL (
        SELECT EXISTS (
                   SELECT 1 FROM recipients r
                   WHERE r.tenant_id = $1 AND r.channel = i.channel AND r.address_hash = i.address_hash
                     AND r.erased_at IS NOT NULL) AS erased,
               EXISTS (
                   SELECT 1 FROM consents k
                   WHERE k.tenant_id = $1 AND k.channel = i.channel AND k.address_hash = i.address_hash
                     AND k.topic_id = i.topic_id AND k.partners = i.partners AND k.granted_at = i.granted_at
                     AND k.source = i.source AND k.notice_version IS NOT DISTINCT FROM i.notice_version) AS recorded
        OFFSET 0
    ) x
), erased AS (
    SELECT n FROM checked WHERE erased
), fresh AS (
    SELECT c.n, c.channel, c.address_hash, c.address, c.topic_id, c.partners, c.source, c.notice_version,
           c.evidence, c.granted_at, c.data, c.granted_at + (SELECT span FROM validity) AS expires_at
    FROM checked c WHERE NOT c.erased AND NOT c.recorded
), lifted AS (
    DELETE FROM suppressions s
    WHERE s.ctid = ANY (ARRAY(
        SELECT u.ctid FROM fresh f
        CROSS JOIN LATERAL (
            SELECT u.ctid FROM suppressions u
            WHERE u.tenant_id = $1 AND u.channel = f.channel AND u.address_hash = f.address_hash
              AND u.topic_id = f.topic_id AND u.reason = 'unsubscribed' AND u.created_at < f.granted_at
            OFFSET 0
        ) u))
    RETURNING s.channel, s.address_hash, s.created_at
), ev AS (
    INSERT INTO events (tenant_id, channel, address_hash, kind, topic_id, source, actor, occurred_at, data)
    SELECT $1, f.channel, f.address_hash, 'consent_given', nullif(f.topic_id, 0), f.source, $13, f.granted_at,
           f.data::jsonb || jsonb_build_object('partners', f.partners, 'notice_version', f.notice_version,
                                               'evidence', f.evidence::jsonb, 'expires_at', f.expires_at)
    FROM fresh f
    RETURNING id, channel, address_hash
), lift_event AS (
    INSERT INTO events (tenant_id, channel, address_hash, kind, topic_id, source, actor, occurred_at, data)
    SELECT $1, f.channel, f.address_hash, 'suppression_lifted', nullif(f.topic_id, 0), f.source, $13,
           f.granted_at,
           jsonb_build_object('reason', 'unsubscribed', 'cause', 'consent', 'suppressed_since', l.created_at)
    FROM lifted l JOIN fresh f ON f.channel = l.channel AND f.address_hash = l.address_hash
    RETURNING id
), saved AS (
    INSERT INTO consents AS k (tenant_id, channel, address_hash, topic_id, partners, source,
                               notice_version, evidence, granted_at, event_id, expires_at)
    SELECT $1, f.channel, f.address_hash, f.topic_id, f.partners, f.source, f.notice_version,
           f.evidence::jsonb, f.granted_at, ev.id, f.expires_at
    FROM fresh f JOIN ev ON ev.channel = f.channel AND ev.address_hash = f.address_hash
    ON CONFLICT (tenant_id, channel, address_hash, topic_id) DO UPDATE
    SET partners = excluded.partners, source = excluded.source, notice_version = excluded.notice_version,
        evidence = excluded.evidence, granted_at = excluded.granted_at, event_id = excluded.event_id,
        expires_at = excluded.expires_at
    RETURNING 1
), projection AS (
    INSERT INTO recipients AS r (tenant_id, channel, address_hash, address, suppression_reasons,
                                 suppression_expires, unsubscribed_topics, consent_topics,
                                 partner_consent_topics, consent_expires)
    SELECT $1, f.channel, f.address_hash, f.address, coalesce(g.reasons, '{}'), coalesce(g.expires, '{}'),
           coalesce(t.topics, '{}'), coalesce(k.topics, '{}'), coalesce(k.partner_topics, '{}'),
           coalesce(k.expires, '{}')
    FROM fresh f
    CROSS JOIN LATERAL (
        SELECT EXISTS (SELECT 1 FROM lifted l
                       WHERE l.channel = f.channel AND l.address_hash = f.address_hash) AS any
    ) l
    CROSS JOIN LATERAL (
        SELECT array_agg(s.reason ORDER BY s.reason) AS reasons,
               array_agg(s.expires_at ORDER BY s.reason) AS expires
        FROM suppressions s
        WHERE s.tenant_id = $1 AND s.channel = f.channel AND s.address_hash = f.address_hash
          AND s.topic_id = 0 AND NOT (f.topic_id = 0 AND s.reason = 'unsubscribed' AND l.any)
    ) g
    CROSS JOIN LATERAL (
        SELECT array_agg(s.topic_id ORDER BY s.topic_id) AS topics
        FROM suppressions s
        WHERE s.tenant_id = $1 AND s.channel = f.channel AND s.address_hash = f.address_hash
          AND s.topic_id <> 0 AND s.reason = 'unsubscribed' AND NOT (s.topic_id = f.topic_id AND l.any)
    ) t
    CROSS JOIN LATERAL (
        SELECT array_agg(x.topic_id ORDER BY x.topic_id) AS topics,
               array_agg(x.topic_id ORDER BY x.topic_id) FILTER (WHERE x.partners) AS partner_topics,
               CASE WHEN bool_and(x.expires_at IS NULL) THEN '{}'::timestamptz[]
                    ELSE array_agg(x.expires_at ORDER BY x.topic_id) END AS expires
        FROM (SELECT c.topic_id, c.partners, c.expires_at FROM consents c
              WHERE c.tenant_id = $1 AND c.channel = f.channel AND c.address_hash = f.address_hash
                AND c.topic_id <> f.topic_id
              UNION ALL
              SELECT f.topic_id, f.partners, f.expires_at) x
    ) k
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
SELECT (SELECT coalesce(array_agg(n), '{}') FROM fresh) AS written,
       (SELECT coalesce(array_agg(n), '{}') FROM erased) AS erased, (SELECT count(*) FROM lift_event) AS lifted,
       (SELECT count(*) FROM saved) AS saved, (SELECT count(*) FROM projection) AS projected;

-- name: import_customer_links
-- The batched form of link_customer_address for rows of many customers: rows that would change
-- nothing (link known with the same flag, the customer already at or past the event's time) are
-- left out; the others link the address, make sure it has a recipient row and append one event
-- each. Run before import_customers, which moves the customers' times. One row per (customer,
-- recipient) per statement. $2..$10 parallel arrays: row number, customer ref, channel, hash, address,
-- collected in sale, event, at, event data (JSON text); $11 source, $12 actor. Returns the numbers of
-- the rows that wrote.
WITH input AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::boolean[],
                         $8::text[], $9::timestamptz[], $10::text[])
        AS i(n, customer_ref, channel, address_hash, address, collected_in_sale, event, at, data)
), fresh AS (
    SELECT i.* FROM input i
    CROSS JOIN LATERAL (  -- a probe per input row, as in import_suppressions
        SELECT EXISTS (
            SELECT 1 FROM customer_addresses ca JOIN customers cu USING (tenant_id, customer_ref)
            WHERE ca.tenant_id = $1 AND ca.customer_ref = i.customer_ref AND ca.channel = i.channel
              AND ca.address_hash = i.address_hash AND (ca.collected_in_sale OR NOT i.collected_in_sale)
              AND CASE i.event WHEN 'purchase' THEN cu.last_purchase_at >= i.at
                               WHEN 'agreement_started' THEN cu.agreement_started_at >= i.at
                               ELSE cu.agreement_ended_at >= i.at END) AS known
        OFFSET 0
    ) x
    WHERE NOT x.known
), links AS (
    INSERT INTO customer_addresses AS ca (tenant_id, customer_ref, channel, address_hash, collected_in_sale)
    SELECT $1, customer_ref, channel, address_hash, collected_in_sale FROM fresh
    ON CONFLICT (tenant_id, customer_ref, channel, address_hash) DO UPDATE
    SET collected_in_sale = ca.collected_in_sale OR excluded.collected_in_sale
    RETURNING 1
), customer_rows AS (
    INSERT INTO customers (tenant_id, customer_ref)
    SELECT DISTINCT $1::integer, customer_ref FROM fresh
    ON CONFLICT (tenant_id, customer_ref) DO NOTHING
    RETURNING 1
), recipient_rows AS (
    INSERT INTO recipients AS r (tenant_id, channel, address_hash, address)
    SELECT DISTINCT ON (channel, address_hash) $1::integer, channel, address_hash, address FROM fresh
    ON CONFLICT (tenant_id, channel, address_hash) DO UPDATE
    SET address = CASE WHEN r.erased_at IS NULL THEN excluded.address END
    RETURNING 1
), ev AS (
    INSERT INTO events (tenant_id, channel, address_hash, kind, source, actor, occurred_at, data)
    SELECT $1, channel, address_hash, 'customer_' || event, $11, $12, at,
           data::jsonb || jsonb_build_object('customer_ref', customer_ref, 'collected_in_sale', collected_in_sale)
    FROM fresh
    RETURNING id
)
SELECT (SELECT coalesce(array_agg(n), '{}') FROM fresh) AS written, (SELECT count(*) FROM links) AS links,
       (SELECT count(*) FROM customer_rows) AS customers, (SELECT count(*) FROM recipient_rows) AS recipients;

-- name: import_customers
-- The batched form of upsert_customer: each customer's events of one batch folded into its row
-- (latest start, end and purchase win; an agreement is open when its latest start is after its
-- latest end). $2..$4 parallel arrays: customer ref, event, at.
WITH input AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS i(customer_ref, event, at)
), folded AS (
    SELECT customer_ref,
           max(at) FILTER (WHERE event = 'agreement_started') AS started,
           max(at) FILTER (WHERE event = 'agreement_ended') AS ended,
           max(at) FILTER (WHERE event = 'purchase') AS purchase
    FROM input GROUP BY customer_ref
), saved AS (
    INSERT INTO customers AS c (tenant_id, customer_ref, agreement_open, agreement_started_at,
                                agreement_ended_at, last_purchase_at)
    SELECT $1, customer_ref, started IS NOT NULL AND (ended IS NULL OR ended < started), started, ended, purchase
    FROM folded
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
    RETURNING 1
)
SELECT count(*) AS customers FROM saved;

-- name: refresh_import_customers
-- refresh_customer_relationships for many customers at once: recompute the relationship columns of
-- every address linked to any of them. $2 customer refs.
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
          SELECT channel, address_hash FROM customer_addresses
          WHERE tenant_id = $1 AND customer_ref = ANY($2::text[]))
    GROUP BY ca.channel, ca.address_hash
) agg
WHERE r.tenant_id = $1 AND r.channel = agg.channel AND r.address_hash = agg.address_hash;
