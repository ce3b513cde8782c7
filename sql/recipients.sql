-- name: recipient_events
-- One recipient's ledger, oldest first, at most $4 events (the newest ones).
SELECT * FROM (
    SELECT e.id, e.seq, e.kind, t.name AS topic, c.name AS campaign, e.source, e.actor, e.occurred_at,
           e.recorded_at, e.data, e.personal
    FROM events e
    LEFT JOIN topics t ON t.tenant_id = e.tenant_id AND t.id = e.topic_id
    LEFT JOIN campaigns c ON c.tenant_id = e.tenant_id AND c.id = e.campaign_id
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
     FROM consents k LEFT JOIN topics t ON t.tenant_id = k.tenant_id AND t.id = k.topic_id
     WHERE k.tenant_id = $1 AND k.channel = $2 AND k.address_hash = $3) AS consents,
    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'topic', t.name, 'reason', s.reason, 'since', s.created_at, 'expires_at', s.expires_at,
                'campaign', c.name, 'note', s.note)
            ORDER BY s.topic_id, s.reason), '[]')
     FROM suppressions s LEFT JOIN topics t ON t.tenant_id = s.tenant_id AND t.id = s.topic_id LEFT JOIN campaigns c ON c.tenant_id = s.tenant_id AND c.id = s.campaign_id
     WHERE s.tenant_id = $1 AND s.channel = $2 AND s.address_hash = $3) AS suppressions,
    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'customer_ref', ca.customer_ref, 'collected_in_sale', ca.collected_in_sale,
                'agreement_open', cu.agreement_open, 'last_purchase_at', cu.last_purchase_at,
                'objected_at', cu.objected_at)
            ORDER BY ca.customer_ref), '[]')
     FROM customer_addresses ca JOIN customers cu USING (tenant_id, customer_ref)
     WHERE ca.tenant_id = $1 AND ca.channel = $2 AND ca.address_hash = $3) AS customers;
