-- The decision inputs, as decided at decision time (sql/writes.sql rewrite_projection keeps them).
--
-- Objection (GDPR Art. 21) is a fact about the customer: customers.objected_at, and on every
-- recipient linked to an objecting customer, before or after, recipients.objected_at (the latest
-- objection of its customers). Consents granted after it still count for their own scope.
ALTER TABLE customers ADD COLUMN objected_at timestamptz;
ALTER TABLE recipients
    ADD COLUMN objected_at timestamptz,
    -- parallel to consent_topics: when each consent was given. The tenant's consent validity is
    -- applied to it when deciding, under the setting in force then; nothing lapses at write time.
    ADD COLUMN consent_granted timestamptz[] NOT NULL DEFAULT '{}';
ALTER TABLE recipients DROP COLUMN consent_expires;
ALTER TABLE consents DROP COLUMN expires_at;

-- Objections recorded before: each `objected` event names its customer.
UPDATE customers c SET objected_at = o.at
FROM (
    SELECT tenant_id, personal ->> 'customer_ref' AS customer_ref, max(occurred_at) AS at
    FROM events
    WHERE kind = 'objected' AND personal ? 'customer_ref'
    GROUP BY 1, 2
) o
WHERE c.tenant_id = o.tenant_id AND c.customer_ref = o.customer_ref;

UPDATE recipients r SET consent_granted = k.granted
FROM (
    SELECT tenant_id, channel, address_hash, array_agg(granted_at ORDER BY topic_id) AS granted
    FROM consents GROUP BY 1, 2, 3
) k
WHERE r.tenant_id = k.tenant_id AND r.channel = k.channel AND r.address_hash = k.address_hash;

UPDATE recipients r SET objected_at = o.at
FROM (
    SELECT ca.tenant_id, ca.channel, ca.address_hash, max(cu.objected_at) AS at
    FROM customer_addresses ca
    JOIN customers cu USING (tenant_id, customer_ref)
    WHERE cu.objected_at IS NOT NULL
    GROUP BY 1, 2, 3
) o
WHERE r.tenant_id = o.tenant_id AND r.channel = o.channel AND r.address_hash = o.address_hash;
