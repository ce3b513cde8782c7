-- The core schema: tenants and their policy settings, hashed API keys, topics, campaigns,
-- the append-only event ledger and the per-recipient state projection the check reads.
-- Large tables lead with tenant_id in their keys so they can be distributed by tenant later.

CREATE TABLE tenants (
    id                          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at                  timestamptz NOT NULL DEFAULT now(),
    -- policy settings (POLICY.md, "Tenant settings")
    default_region              text NOT NULL DEFAULT 'NO' CHECK (default_region ~ '^[A-Z]{2}$'),
    relationship_window_days    integer NOT NULL DEFAULT 365 CHECK (relationship_window_days > 0),
    soft_opt_in_without_topic   boolean NOT NULL DEFAULT false,
    transactional_blocked_by    text[] NOT NULL DEFAULT '{hard_bounced}',
    soft_bounce_threshold       integer NOT NULL DEFAULT 3 CHECK (soft_bounce_threshold > 0),
    soft_bounce_window_days     integer NOT NULL DEFAULT 30 CHECK (soft_bounce_window_days > 0),
    soft_bounce_suppress_days   integer NOT NULL DEFAULT 30 CHECK (soft_bounce_suppress_days > 0),
    complaint_alert_rate        numeric NOT NULL DEFAULT 0.001,
    complaint_stop_rate         numeric NOT NULL DEFAULT 0.003
);

CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   integer NOT NULL REFERENCES tenants (id),
    key_hash    bytea NOT NULL UNIQUE,
    prefix      text NOT NULL,
    scopes      text[] NOT NULL CHECK (scopes <@ '{check,write,read,admin}' AND cardinality(scopes) > 0),
    label       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE topics (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    integer NOT NULL REFERENCES tenants (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    soft_opt_in  boolean NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE campaigns (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   integer NOT NULL REFERENCES tenants (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- Pre-send check outcomes, aggregated per batch (never per recipient). campaign_id 0 = no campaign;
-- outcome is the basis of an allowed recipient or the reason of a denied one.
CREATE TABLE check_counts (
    tenant_id    integer NOT NULL,
    day          date NOT NULL,
    channel      text NOT NULL,
    campaign_id  bigint NOT NULL,
    allowed      boolean NOT NULL,
    outcome      text NOT NULL,
    recipients   bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, channel, campaign_id, allowed, outcome)
);
CREATE INDEX check_counts_campaign ON check_counts (tenant_id, campaign_id) WHERE campaign_id <> 0;

-- The ledger: every state change with who, when, how and the evidence. Append-only.
CREATE TABLE events (
    tenant_id     integer NOT NULL,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    channel       text NOT NULL CHECK (channel IN ('email', 'sms')),
    address_hash  bytea NOT NULL,
    kind          text NOT NULL,
    topic_id      integer,
    campaign_id   bigint,
    source        text NOT NULL,
    actor         text,
    occurred_at   timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    data          jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX events_recipient ON events (tenant_id, channel, address_hash, id);

-- The projection: everything the decision needs, one row per (tenant, channel, address).
-- Topic arrays use 0 for "all topics". suppression_reasons/_expires are parallel arrays of the
-- active global (all-topics) suppressions; NULL expiry = permanent.
CREATE TABLE recipients (
    tenant_id               integer NOT NULL,
    channel                 text NOT NULL CHECK (channel IN ('email', 'sms')),
    address_hash            bytea NOT NULL,
    address                 text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    suppression_reasons     text[] NOT NULL DEFAULT '{}',
    suppression_expires     timestamptz[] NOT NULL DEFAULT '{}',
    unsubscribed_topics     integer[] NOT NULL DEFAULT '{}',
    consent_topics          integer[] NOT NULL DEFAULT '{}',
    partner_consent_topics  integer[] NOT NULL DEFAULT '{}',
    collected_in_sale       boolean NOT NULL DEFAULT false,
    agreement_open          boolean NOT NULL DEFAULT false,
    last_purchase_at        timestamptz,
    restricted_at           timestamptz,
    erased_at               timestamptz,
    PRIMARY KEY (tenant_id, channel, address_hash)
);

-- Current suppressions, the source the projection's suppression columns are computed from.
-- topic_id 0 = all topics of the channel.
CREATE TABLE suppressions (
    tenant_id     integer NOT NULL,
    channel       text NOT NULL,
    address_hash  bytea NOT NULL,
    topic_id      integer NOT NULL DEFAULT 0,
    reason        text NOT NULL CHECK (reason IN
                      ('unsubscribed', 'complained', 'hard_bounced', 'soft_bounced', 'manual', 'erased')),
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz,
    campaign_id   bigint,
    note          text,
    event_id      bigint NOT NULL,
    PRIMARY KEY (tenant_id, channel, address_hash, topic_id, reason)
);
CREATE INDEX suppressions_listing ON suppressions (tenant_id, created_at, channel, address_hash, topic_id, reason);

-- Current consents (withdrawn ones are removed here; the ledger keeps their history).
CREATE TABLE consents (
    tenant_id       integer NOT NULL,
    channel         text NOT NULL,
    address_hash    bytea NOT NULL,
    topic_id        integer NOT NULL DEFAULT 0,
    partners        boolean NOT NULL DEFAULT false,
    source          text NOT NULL,
    notice_version  text,
    evidence        jsonb NOT NULL DEFAULT '{}',
    granted_at      timestamptz NOT NULL,
    event_id        bigint NOT NULL,
    PRIMARY KEY (tenant_id, channel, address_hash, topic_id)
);

CREATE TABLE customers (
    tenant_id             integer NOT NULL,
    customer_ref          text NOT NULL CHECK (length(customer_ref) BETWEEN 1 AND 200),
    agreement_open        boolean NOT NULL DEFAULT false,
    agreement_started_at  timestamptz,
    agreement_ended_at    timestamptz,
    last_purchase_at      timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_ref)
);

CREATE TABLE customer_addresses (
    tenant_id          integer NOT NULL,
    customer_ref       text NOT NULL,
    channel            text NOT NULL,
    address_hash       bytea NOT NULL,
    collected_in_sale  boolean NOT NULL,
    linked_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_ref, channel, address_hash),
    FOREIGN KEY (tenant_id, customer_ref) REFERENCES customers (tenant_id, customer_ref)
);
CREATE INDEX customer_addresses_recipient ON customer_addresses (tenant_id, channel, address_hash);
