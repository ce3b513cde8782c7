-- Side effects of ledger events (outbound webhooks, SMS replies, ...): every inserted event gets a
-- pending_effects row in the same transaction, removed by the worker once its effects are done.
-- A sweeper re-enqueues rows left pending, so a lost enqueue or a killed worker loses nothing.
-- (A separate table keeps the ledger itself append-only.)

CREATE TABLE pending_effects (
    tenant_id   integer NOT NULL,
    event_id    bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX pending_effects_age ON pending_effects (created_at);

CREATE FUNCTION queue_event_effects() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pending_effects (tenant_id, event_id) SELECT tenant_id, id FROM new_events;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_queue_effects
    AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION queue_event_effects();
