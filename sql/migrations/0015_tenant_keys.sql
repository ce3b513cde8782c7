-- Every table of tenant data leads its keys with tenant_id, so it distributes by tenant
-- (docs/scaling.md; tests/integration/test_tenant_sharding.py keeps it so). Changes:
-- 1. topics: primary key (id) -> (tenant_id, id)
-- 2. campaigns: primary key (id) -> (tenant_id, id)
-- 3. provider_nonces: new column tenant_id (filled from the provider), primary key
--    (provider_id, nonce) -> (tenant_id, provider_id, nonce)
-- Ids stay drawn from one identity sequence each, so they remain unique across tenants too.

ALTER TABLE topics DROP CONSTRAINT topics_pkey, ADD PRIMARY KEY (tenant_id, id);
ALTER TABLE campaigns DROP CONSTRAINT campaigns_pkey, ADD PRIMARY KEY (tenant_id, id);

ALTER TABLE provider_nonces ADD COLUMN tenant_id integer;
UPDATE provider_nonces n SET tenant_id = p.tenant_id FROM providers p WHERE p.id = n.provider_id;
-- a nonce of no known configuration guards nothing
DELETE FROM provider_nonces WHERE tenant_id IS NULL;
ALTER TABLE provider_nonces
    ALTER COLUMN tenant_id SET NOT NULL,
    DROP CONSTRAINT provider_nonces_pkey,
    ADD PRIMARY KEY (tenant_id, provider_id, nonce);
