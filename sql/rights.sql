-- name: erase_recipient
-- GDPR erasure of one address, atomically: scrub the personal fields of its ledger events (their
-- hashes stay, so the chain still verifies), delete its consents, suppressions and customer links,
-- append an `erased` event, keep an `erased` suppression on the keyed hash, and mark the
-- projection row erased (run by writes.Writer, which locks the row first and rewrites its derived
-- columns afterwards). $1 tenant, $2 channel, $3 hash, $4 source, $5 actor,
-- $6 occurred at. Returns the erased event's id and what was removed.
WITH scrubbed AS (
    UPDATE events SET personal = NULL
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND personal IS NOT NULL
    RETURNING 1
), gone_consents AS (
    DELETE FROM consents WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 RETURNING 1
), gone_suppressions AS (
    DELETE FROM suppressions
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND reason <> 'erased'
    RETURNING 1
), gone_links AS (
    DELETE FROM customer_addresses WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3
    RETURNING customer_ref
), ev AS (
    INSERT INTO events (tenant_id, channel, address_hash, kind, source, actor, occurred_at, data)
    VALUES ($1, $2, $3, 'erased', $4, $5, $6,
            jsonb_build_object('events_scrubbed', (SELECT count(*) FROM scrubbed),
                               'consents_removed', (SELECT count(*) FROM gone_consents),
                               'suppressions_removed', (SELECT count(*) FROM gone_suppressions),
                               'customer_links_removed', (SELECT count(*) FROM gone_links)))
    RETURNING id
), kept AS (
    INSERT INTO suppressions AS s (tenant_id, channel, address_hash, topic_id, reason, created_at, event_id)
    SELECT $1, $2, $3, 0, 'erased', $6, ev.id FROM ev
    ON CONFLICT (tenant_id, channel, address_hash, topic_id, reason) DO UPDATE
    SET event_id = excluded.event_id, note = NULL, campaign_id = NULL
    RETURNING 1
), projection AS (
    -- the derived columns follow from what is left (rewrite_projection); these are erasure's own
    UPDATE recipients r
    SET address = NULL, restricted_at = NULL, restriction_note = NULL,
        erased_at = coalesce(r.erased_at, $6), updated_at = now()
    WHERE r.tenant_id = $1 AND r.channel = $2 AND r.address_hash = $3
    RETURNING 1
)
SELECT ev.id AS event_id, (SELECT count(*) FROM scrubbed) AS events_scrubbed,
       (SELECT coalesce(array_agg(DISTINCT customer_ref), '{}') FROM gone_links) AS customers,
       (SELECT count(*) FROM kept) + (SELECT count(*) FROM projection) AS writes
FROM ev;

-- name: delete_customer
-- Remove a customer and its links (after its addresses were erased).
WITH links AS (DELETE FROM customer_addresses WHERE tenant_id = $1 AND customer_ref = $2 RETURNING 1)
DELETE FROM customers WHERE tenant_id = $1 AND customer_ref = $2 RETURNING (SELECT count(*) FROM links) AS links;

-- name: set_restriction
-- Restrict (GDPR Art. 18) or lift a restriction, with a ledger event; nothing happens when the
-- recipient is already in that state (run by writes.Writer, which locks the row first). $4 restrict?, $5 note, $6 source, $7 actor, $8 occurred at.
WITH current AS (
    SELECT restricted_at IS NOT NULL AS restricted FROM recipients
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3
), go AS (
    SELECT 1 WHERE coalesce((SELECT restricted FROM current), false) IS DISTINCT FROM $4::boolean
), ev AS (
    INSERT INTO events (tenant_id, channel, address_hash, kind, source, actor, occurred_at, data, personal)
    SELECT $1, $2, $3, CASE WHEN $4 THEN 'restricted' ELSE 'unrestricted' END, $6, $7, $8, '{}'::jsonb,
           CASE WHEN $5::text IS NOT NULL THEN jsonb_build_object('note', $5::text) END
    FROM go
    RETURNING id
), projection AS (
    UPDATE recipients
    SET restricted_at = CASE WHEN $4 THEN $8::timestamptz END, restriction_note = CASE WHEN $4 THEN $5::text END,
        updated_at = now()
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3 AND EXISTS (SELECT 1 FROM go)
    RETURNING 1
)
SELECT ev.id AS event_id, (SELECT count(*) FROM projection) AS projected FROM ev;

-- name: customer_addresses
-- The addresses linked to one customer (with the stored plaintext where it is still held).
SELECT ca.channel, ca.address_hash, r.address, ca.collected_in_sale, ca.linked_at
FROM customer_addresses ca
LEFT JOIN recipients r ON r.tenant_id = ca.tenant_id AND r.channel = ca.channel AND r.address_hash = ca.address_hash
WHERE ca.tenant_id = $1 AND ca.customer_ref = $2
ORDER BY ca.channel, r.address;

-- name: customer_by_ref
-- One customer row.
SELECT customer_ref, agreement_open, agreement_started_at, agreement_ended_at, last_purchase_at, created_at,
       objected_at
FROM customers WHERE tenant_id = $1 AND customer_ref = $2;

-- name: recipient_export_row
-- The whole projection row of one recipient, for an access request.
SELECT address, created_at, updated_at, suppression_reasons, suppression_expires, unsubscribed_topics,
       consent_topics, partner_consent_topics, consent_granted, collected_in_sale, agreement_open,
       last_purchase_at, restricted_at, restriction_note, erased_at, objected_at
FROM recipients WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3;

-- name: scrub_stored_copies
-- After an erasure: remove the address from copies kept outside the ledger — provider event
-- payloads not yet dropped (pending or failed), import error rows, bounce observations.
-- $1 tenant, $2 the address as it appears in those copies (lower case; a phone number without
-- its +, which also matches the forms with it), $3 channel, $4 address hash.
WITH provider AS (
    UPDATE provider_events
    SET payload = '{"erased": true}'::jsonb, outcome = NULL,
        error = CASE WHEN strpos(lower(coalesce(error, '')), $2) > 0 THEN 'erased' ELSE error END
    WHERE tenant_id = $1
      AND (strpos(lower(payload::text), $2) > 0 OR strpos(lower(coalesce(outcome::text, '')), $2) > 0
           OR strpos(lower(coalesce(error, '')), $2) > 0)
    RETURNING 1
), import_rows AS (
    UPDATE import_errors SET raw = NULL, message = 'erased'
    WHERE tenant_id = $1 AND (strpos(lower(coalesce(raw, '')), $2) > 0 OR strpos(lower(message), $2) > 0)
    RETURNING 1
), bounces AS (
    DELETE FROM bounce_observations WHERE tenant_id = $1 AND channel = $3 AND address_hash = $4 RETURNING 1
)
SELECT (SELECT count(*) FROM provider) AS provider_events, (SELECT count(*) FROM import_rows) AS import_errors,
       (SELECT count(*) FROM bounces) AS bounce_observations;
