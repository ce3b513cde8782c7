-- Dashboard sessions kept server-side, so signing out ends a session wherever its cookie was
-- copied, and revoking the key ends every session opened with it. The cookie holds a random id;
-- only its SHA-256 is stored.
CREATE TABLE dashboard_sessions (
    id_hash     bytea PRIMARY KEY,
    tenant_id   integer NOT NULL REFERENCES tenants (id),
    key_id      bigint NOT NULL REFERENCES api_keys (id),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_key ON dashboard_sessions (key_id);
