-- name: unsubscribe_page
-- What the unsubscribe page shows: the tenant's name, the recipient's address and current
-- unsubscribes, and the tenant's topics (as a JSON array of {id, name}).
SELECT t.name AS tenant_name, r.address, coalesce(r.suppression_reasons, '{}') AS suppression_reasons,
       coalesce(r.suppression_expires, '{}') AS suppression_expires,
       coalesce(r.unsubscribed_topics, '{}') AS unsubscribed_topics,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'name', name) ORDER BY name), '[]')
        FROM topics WHERE tenant_id = t.id) AS topics
FROM tenants t
LEFT JOIN recipients r ON r.tenant_id = t.id AND r.channel = $2 AND r.address_hash = $3
WHERE t.id = $1;

-- name: topic_name
-- A topic's name by id, within its tenant.
SELECT name FROM topics WHERE tenant_id = $1 AND id = $2;

-- name: unsubscribe_in_force
-- Whether an unsubscribe at this scope is already in force ($4 topic id, 0 = all topics): a repeated
-- one-click then needs no write transaction. Only a shortcut — the write itself decides under the
-- recipient's lock when this says no.
SELECT EXISTS (
    SELECT 1 FROM recipients
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3
      AND ('unsubscribed' = ANY (suppression_reasons) OR ($4 <> 0 AND $4 = ANY (unsubscribed_topics))));
