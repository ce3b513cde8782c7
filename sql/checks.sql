-- name: resolve_check_context
-- The topic (id, soft opt-in) and the campaign id (created on first use) of a check, in one trip.
-- $1 tenant, $2 topic name or NULL, $3 campaign name or NULL. An unknown topic creates nothing.
WITH topic AS (
    SELECT id, soft_opt_in FROM topics WHERE tenant_id = $1 AND name = $2
), new_campaign AS (
    INSERT INTO campaigns (tenant_id, name)
    SELECT $1, $3 WHERE $3::text IS NOT NULL AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM topic))
    ON CONFLICT (tenant_id, name) DO NOTHING
    RETURNING id
)
SELECT (SELECT id FROM topic) AS topic_id,
       (SELECT soft_opt_in FROM topic) AS topic_soft_opt_in,
       coalesce((SELECT id FROM new_campaign),
                (SELECT id FROM campaigns WHERE tenant_id = $1 AND name = $3)) AS campaign_id;

-- name: recipient_states
-- The decision input of each known recipient of a batch (array of address hashes in, one trip):
-- the one statement every reader of a recipient's state uses (suppress.decisions.state_of builds
-- the state). Column order matches policy.RecipientState after the hash; an empty array comes
-- back as NULL (a NULL decodes several times faster than an empty array, and most of these arrays
-- are empty). The consents' times are only read when one can lapse (the tenant has a consent
-- validity) or the customer objected; otherwise they are never compared.
SELECT address_hash, nullif(suppression_reasons, '{}'), nullif(suppression_expires, '{}'),
       nullif(unsubscribed_topics, '{}'), nullif(consent_topics, '{}'),
       nullif(partner_consent_topics, '{}'), collected_in_sale, agreement_open,
       last_purchase_at, restricted_at IS NOT NULL AS restricted, erased_at IS NOT NULL AS erased,
       CASE WHEN objected_at IS NOT NULL
                 OR (SELECT consent_validity_days FROM tenants WHERE id = $1) IS NOT NULL
            THEN nullif(consent_granted, '{}') END,
       objected_at
FROM recipients
WHERE tenant_id = $1 AND channel = $2 AND address_hash = ANY($3::bytea[]);

-- name: add_check_counts
-- Add the outcome counts a process gathered since its last flush to the day's counters (per
-- campaign; 0 = none), in the order given: the caller sorts by key, so two processes flushing at
-- once take the rows they share in the same order. $1..$7 parallel arrays: tenant, day, channel,
-- campaign, allowed, outcome, recipients.
INSERT INTO check_counts AS c (tenant_id, day, channel, campaign_id, allowed, outcome, recipients)
SELECT t.tenant_id, t.day, t.channel, t.campaign_id, t.allowed, t.outcome, t.n
FROM unnest($1::integer[], $2::date[], $3::text[], $4::bigint[], $5::boolean[], $6::text[], $7::bigint[])
     WITH ORDINALITY AS t(tenant_id, day, channel, campaign_id, allowed, outcome, n, i)
ORDER BY t.i
ON CONFLICT (tenant_id, day, channel, campaign_id, allowed, outcome)
DO UPDATE SET recipients = c.recipients + excluded.recipients;
