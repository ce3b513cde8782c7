-- List health rollups (docs/health.md). Workers keep them current (workers/health.py); GET /v1/health
-- and /dashboard read only these tables, never the ledger. Every table leads with tenant_id.

-- Events already added to the counters below: counting inserts the event here first and adds to
-- the counters only when the insert is new, so an effect that runs twice counts once. Rows whose
-- effects are done are pruned a day later (an event with no pending effects is never run again).
CREATE TABLE health_counted_events (
    tenant_id   integer NOT NULL,
    event_id    bigint NOT NULL,
    counted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX health_counted_events_age ON health_counted_events (counted_at);

-- Per tenant, UTC day of recording and channel: how many events of each metric (new unsubscribes,
-- complaints, bounces, manual suppressions, erasures, restrictions, lifts, consents given and
-- withdrawn, relationships started and ended, purchases; names in suppress.health.DAILY_METRICS).
CREATE TABLE health_daily (
    tenant_id  integer NOT NULL,
    day        date NOT NULL,
    channel    text NOT NULL,
    metric     text NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, channel, metric)
);

-- Unsubscribe latency (request -> applied) as a histogram per UTC day; bucket i holds latencies in
-- [LATENCY_BOUNDS[i], LATENCY_BOUNDS[i + 1]) seconds (suppress.health.LATENCY_BOUNDS).
CREATE TABLE health_latency (
    tenant_id  integer NOT NULL,
    day        date NOT NULL,
    bucket     smallint NOT NULL CHECK (bucket >= 0),
    n          bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, bucket)
);

-- Each recipient's unsubscribe or complaint attributed to a campaign, once: a repeated report
-- (the same person complaining twice about one campaign) does not raise the campaign's rate.
CREATE TABLE health_campaign_recipients (
    tenant_id     integer NOT NULL,
    campaign_id   bigint NOT NULL,
    metric        text NOT NULL CHECK (metric IN ('unsubscribed', 'complained')),
    address_hash  bytea NOT NULL,
    event_id      bigint NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, metric, address_hash)
);

-- Per campaign: check totals (recomputed from check_counts by the refresh cron) and the
-- attributed unsubscribes and complaints (added by the effect). active_at: latest activity.
CREATE TABLE health_campaigns (
    tenant_id        integer NOT NULL,
    campaign_id      bigint NOT NULL,
    checked          bigint NOT NULL DEFAULT 0,
    allowed          bigint NOT NULL DEFAULT 0,
    denied           jsonb NOT NULL DEFAULT '{}',
    last_checked_on  date,
    unsubscribed     bigint NOT NULL DEFAULT 0,
    complained       bigint NOT NULL DEFAULT 0,
    active_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id)
);
CREATE INDEX health_campaigns_recent ON health_campaigns (tenant_id, active_at DESC, campaign_id DESC);

-- The state snapshot per tenant, replaced by the refresh cron: what a marketing check (own offer)
-- would answer for every known recipient, per channel and topic (audience: [{channel, topic,
-- outcome, n}]), and the customer relationships lapsing soon (lapsing: [{channel, day, n}]).
-- checks_through: the UTC day of the last campaign refresh (the next one re-reads from the day before).
CREATE TABLE health_snapshots (
    tenant_id       integer PRIMARY KEY,
    computed_at     timestamptz NOT NULL,
    duration_ms     integer NOT NULL,
    checks_through  date NOT NULL,
    audience        jsonb NOT NULL,
    lapsing         jsonb NOT NULL
);
