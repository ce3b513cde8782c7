-- What the recipient's pages show: the sender's display name, the consent notice a tenant may set
-- for re-subscribing on the preference page ({"nb": {"text", "version"}, "en": {...}}; NULL = the
-- page offers opt-outs only), and each topic's label and description per language
-- ({"nb": {"label", "description"}, "en": {...}}).
ALTER TABLE tenants
    ADD COLUMN display_name text CHECK (display_name IS NULL OR length(display_name) BETWEEN 1 AND 200),
    ADD COLUMN consent_notice jsonb;
ALTER TABLE topics ADD COLUMN display jsonb NOT NULL DEFAULT '{}';
