-- name: recipient_page
-- What the recipient's page shows besides the decision state (read with recipient_states): the
-- tenant's names, decision settings and consent notice, its topics (JSON array of {id, name,
-- soft_opt_in, display}), the recipient's stored address, when each consent was given and each
-- topic unsubscribe made (JSON objects by topic id), and the latest unsubscribe made through link
-- $4 that is still in force ({id, topic_id} or NULL: what an undo would reverse).
SELECT t.name, t.display_name, t.consent_notice, t.relationship_window_days, t.soft_opt_in_without_topic,
       t.transactional_blocked_by, t.consent_validity_days, r.address,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('id', p.id, 'name', p.name, 'soft_opt_in', p.soft_opt_in,
                                                     'display', p.display) ORDER BY p.name), '[]')
        FROM topics p WHERE p.tenant_id = t.id) AS topics,
       (SELECT jsonb_object_agg(k.topic_id::text, k.granted_at) FROM consents k
        WHERE k.tenant_id = t.id AND k.channel = $2 AND k.address_hash = $3) AS consented,
       (SELECT jsonb_object_agg(s.topic_id::text, s.created_at) FROM suppressions s
        WHERE s.tenant_id = t.id AND s.channel = $2 AND s.address_hash = $3 AND s.reason = 'unsubscribed')
           AS unsubscribed,
       (SELECT jsonb_build_object('event_id', e.id, 'topic_id', s.topic_id)
        FROM suppressions s
        JOIN events e ON e.tenant_id = s.tenant_id AND e.id = s.event_id
        WHERE s.tenant_id = t.id AND s.channel = $2 AND s.address_hash = $3 AND s.reason = 'unsubscribed'
          AND e.kind = 'unsubscribed' AND e.actor = 'recipient' AND e.data ->> 'link' = $4
        ORDER BY e.id DESC LIMIT 1) AS undo
FROM tenants t
LEFT JOIN recipients r ON r.tenant_id = t.id AND r.channel = $2 AND r.address_hash = $3
WHERE t.id = $1;

-- name: unsubscribe_in_force
-- Whether an unsubscribe at this scope is already in force ($4 topic id, 0 = all topics): a repeated
-- one-click then needs no write transaction. Only a shortcut — the write itself decides under the
-- recipient's lock when this says no.
SELECT EXISTS (
    SELECT 1 FROM recipients
    WHERE tenant_id = $1 AND channel = $2 AND address_hash = $3
      AND ('unsubscribed' = ANY (suppression_reasons) OR ($4 <> 0 AND $4 = ANY (unsubscribed_topics))));
