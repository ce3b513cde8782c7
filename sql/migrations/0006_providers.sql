-- Provider integrations (docs/providers.md): each tenant's email and SMS provider configurations
-- with their credentials sealed, the verified provider events acknowledged but not yet applied
-- (de-duplicated on the provider's own event id), the nonces a provider may use only once, and
-- the soft-bounce observations the tenant's soft-bounce rule counts.

CREATE TABLE providers (
    tenant_id         integer NOT NULL REFERENCES tenants (id),
    id                bigint GENERATED ALWAYS AS IDENTITY,
    kind              text NOT NULL
                          CHECK (kind IN ('ses', 'sendgrid', 'mailgun', 'postmark', 'twilio', 'vonage')),
    label             text CHECK (length(label) BETWEEN 1 AND 200),
    -- everything that is not a secret: allowed TopicArns, topic mapping, signed URL, method, ...
    settings          jsonb NOT NULL DEFAULT '{}',
    -- the credentials as JSON, AES-256-GCM sealed (version byte || 12-byte nonce || ciphertext+tag);
    -- destroyed (NULL) when the configuration is deleted
    secret_box        bytea,
    credential_names  text[] NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    PRIMARY KEY (tenant_id, id),
    -- inbound requests name the configuration by id alone (/v1/providers/{kind}/{id})
    UNIQUE (id),
    CHECK ((deleted_at IS NULL) = (secret_box IS NOT NULL))
);

-- One row per verified provider event (a SendGrid batch is several). `payload` is the provider's
-- event as received (for SNS the signed envelope); the worker maps it to suppressions and marks it
-- processed. The sweeper re-enqueues pending rows whose job was lost; a claim (`claimed_until`)
-- keeps two workers from applying the same event at once.
CREATE TABLE provider_events (
    tenant_id      integer NOT NULL,
    id             bigint GENERATED ALWAYS AS IDENTITY,
    provider_id    bigint NOT NULL,
    event_key      text NOT NULL CHECK (length(event_key) BETWEEN 1 AND 300),
    payload        jsonb NOT NULL,
    received_at    timestamptz NOT NULL,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processed', 'failed')),
    attempts       integer NOT NULL DEFAULT 0,
    claimed_until  timestamptz,
    processed_at   timestamptz,
    outcome        jsonb,
    error          text,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, provider_id, event_key),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id),
    CHECK ((status = 'pending') = (processed_at IS NULL))
);
CREATE INDEX provider_events_pending ON provider_events (received_at) WHERE status = 'pending';
CREATE INDEX provider_events_listing ON provider_events (tenant_id, provider_id, id);
CREATE INDEX provider_events_processed ON provider_events (processed_at) WHERE status <> 'pending';

-- Values a provider signs that must not be accepted twice (Mailgun's token): kept until a request
-- carrying them would be refused as stale anyway.
CREATE TABLE provider_nonces (
    provider_id  bigint NOT NULL,
    nonce        text NOT NULL CHECK (length(nonce) BETWEEN 1 AND 300),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (provider_id, nonce)
);
CREATE INDEX provider_nonces_expiry ON provider_nonces (expires_at);

-- Soft bounces seen per recipient (no plaintext address). One row per bounced message, so repeated
-- reports about the same message count once; rows older than the tenant's window are pruned.
CREATE TABLE bounce_observations (
    tenant_id          integer NOT NULL,
    channel            text NOT NULL CHECK (channel IN ('email', 'sms')),
    address_hash       bytea NOT NULL,
    observation_key    text NOT NULL CHECK (length(observation_key) BETWEEN 1 AND 400),
    observed_at        timestamptz NOT NULL,
    provider_event_id  bigint NOT NULL,
    PRIMARY KEY (tenant_id, channel, address_hash, observation_key)
);
CREATE INDEX bounce_observations_age ON bounce_observations (observed_at);
