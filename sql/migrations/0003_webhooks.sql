-- Outbound webhooks: endpoints a tenant registers, one delivery per (webhook, ledger event), and
-- every attempt at a delivery. Payloads are built from the ledger at delivery time and never
-- stored here, so an erasure that scrubs the address also reaches deliveries still being retried.

CREATE TABLE webhooks (
    tenant_id    integer NOT NULL REFERENCES tenants (id),
    id           bigint GENERATED ALWAYS AS IDENTITY,
    url          text NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    -- event kinds delivered; NULL = every kind, including kinds added later
    events       text[] CHECK (events IS NULL OR cardinality(events) > 0),
    -- the signing secret, AES-256-GCM sealed: version byte || 12-byte nonce || ciphertext+tag
    secret_box   bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE webhook_deliveries (
    tenant_id        integer NOT NULL,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    webhook_id       bigint NOT NULL,
    event_id         bigint NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    -- when the next attempt is due (a claimed attempt pushes it out by a lease); NULL once finished
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, webhook_id, event_id),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_listing ON webhook_deliveries (tenant_id, webhook_id, id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- One row per attempt, written when the attempt starts; duration_ms stays NULL until its outcome is
-- recorded (in flight, or the worker stopped during it).
CREATE TABLE webhook_attempts (
    tenant_id     integer NOT NULL,
    delivery_id   bigint NOT NULL,
    attempt       integer NOT NULL CHECK (attempt > 0),
    attempted_at  timestamptz NOT NULL,
    status_code   integer,
    error         text,
    duration_ms   integer,
    PRIMARY KEY (tenant_id, delivery_id, attempt),
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES webhook_deliveries (tenant_id, id)
);
