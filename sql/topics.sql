-- name: create_topic
-- Create a topic, or update its soft opt-in flag and, when $4 is not NULL, its labels and
-- descriptions per language; `created` tells which.
INSERT INTO topics AS t (tenant_id, name, soft_opt_in, display) VALUES ($1, $2, $3, coalesce($4::jsonb, '{}'))
ON CONFLICT (tenant_id, name) DO UPDATE
SET soft_opt_in = excluded.soft_opt_in, display = coalesce($4::jsonb, t.display)
RETURNING id, name, soft_opt_in, display, created_at, (xmax = 0) AS created;

-- name: topic_by_name
-- One topic of a tenant by name.
SELECT id, name, soft_opt_in, created_at FROM topics WHERE tenant_id = $1 AND name = $2;

-- name: list_topics
-- All topics of a tenant, by name.
SELECT id, name, soft_opt_in, display, created_at FROM topics WHERE tenant_id = $1 ORDER BY name;
