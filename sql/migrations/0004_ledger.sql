-- A tamper-evident ledger, GDPR state, and consent-quality settings.
--
-- Each tenant's events form hash chains: event n of a chain stores hash(n) = sha256(hash(n-1) ||
-- line(n)), where line(n) is a canonical text of the event's fields (see ledger_line()) that
-- includes personal_hash = sha256(personal::text) instead of the personal fields themselves.
-- Erasure nulls `personal` and keeps `personal_hash`, so the chains stay verifiable after the data
-- is gone. Appends to one chain are serialised by a row lock on its ledger_heads row (held until
-- commit), which also orders it (seq = 1, 2, 3, ...) in commit order. So that one busy tenant's
-- writers do not queue behind a single lock, a tenant has 16 chains ("lanes"), chosen by the
-- first byte of the recipient's address hash: every event of one recipient is in one lane.

ALTER TABLE events
    ADD COLUMN lane           smallint,
    ADD COLUMN seq            bigint,
    ADD COLUMN personal       jsonb,
    ADD COLUMN personal_hash  bytea,
    ADD COLUMN prev_hash      bytea,
    ADD COLUMN hash           bytea;

CREATE TABLE ledger_heads (
    tenant_id  integer NOT NULL,
    lane       smallint NOT NULL,
    last_seq   bigint NOT NULL,
    last_hash  bytea NOT NULL,
    PRIMARY KEY (tenant_id, lane)
);

-- The lane of an event: fixed for ever (verification recomputes it), so never change the 16.
CREATE FUNCTION ledger_lane(address_hash bytea) RETURNS smallint LANGUAGE sql IMMUTABLE AS $$
    SELECT (get_byte(address_hash, 0) % 16)::smallint
$$;

-- Keys of an event's data that are personal data: moved into `personal` on insert, whoever
-- writes the event, so that erasure has one place to scrub.
CREATE FUNCTION ledger_personal_keys() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['ip', 'user_agent', 'evidence', 'note', 'text', 'to', 'from', 'customer_ref',
                 'address', 'email', 'phone', 'name']
$$;

-- The canonical text of one event that the chain hashes (Python re-derives it in ledger.py).
CREATE FUNCTION ledger_line(e events) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT concat_ws(E'\x1f',
        e.lane::text, e.seq::text, e.tenant_id::text, e.id::text, e.channel, encode(e.address_hash, 'hex'), e.kind,
        coalesce(e.topic_id::text, ''), coalesce(e.campaign_id::text, ''), e.source, coalesce(e.actor, ''),
        ((extract(epoch FROM e.occurred_at) * 1000000)::bigint)::text,
        ((extract(epoch FROM e.recorded_at) * 1000000)::bigint)::text,
        e.data::text, encode(e.personal_hash, 'hex'))
$$;

CREATE FUNCTION ledger_append() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head ledger_heads%ROWTYPE;
    personal_keys text[] := ledger_personal_keys();
BEGIN
    NEW.personal := (SELECT jsonb_object_agg(key, value) FROM jsonb_each(NEW.data) WHERE key = ANY(personal_keys));
    NEW.data := NEW.data - personal_keys;
    NEW.personal_hash := sha256(convert_to(coalesce(NEW.personal, '{}'::jsonb)::text, 'UTF8'));
    -- microsecond precision on both clocks, as the canonical line records them
    NEW.recorded_at := coalesce(NEW.recorded_at, now());
    NEW.lane := ledger_lane(NEW.address_hash);
    SELECT * INTO head FROM ledger_heads WHERE tenant_id = NEW.tenant_id AND lane = NEW.lane FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO ledger_heads (tenant_id, lane, last_seq, last_hash)
        VALUES (NEW.tenant_id, NEW.lane, 0, '\x0000000000000000000000000000000000000000000000000000000000000000')
        ON CONFLICT (tenant_id, lane) DO NOTHING;
        SELECT * INTO head FROM ledger_heads WHERE tenant_id = NEW.tenant_id AND lane = NEW.lane FOR UPDATE;
    END IF;
    NEW.seq := head.last_seq + 1;
    NEW.prev_hash := head.last_hash;
    NEW.hash := sha256(NEW.prev_hash || convert_to(ledger_line(NEW), 'UTF8'));
    UPDATE ledger_heads SET last_seq = NEW.seq, last_hash = NEW.hash
    WHERE tenant_id = NEW.tenant_id AND lane = NEW.lane;
    RETURN NEW;
END;
$$;

-- Chain the events that already exist, per tenant and lane in id order.
DO $$
DECLARE
    e events;
    head ledger_heads%ROWTYPE;
    personal_keys text[] := ledger_personal_keys();
BEGIN
    FOR e IN SELECT * FROM events ORDER BY tenant_id, id LOOP
        e.lane := ledger_lane(e.address_hash);
        SELECT * INTO head FROM ledger_heads WHERE tenant_id = e.tenant_id AND lane = e.lane;
        IF NOT FOUND THEN
            head := ROW(e.tenant_id, e.lane, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
            INSERT INTO ledger_heads VALUES (head.*);
        END IF;
        e.personal := (SELECT jsonb_object_agg(key, value) FROM jsonb_each(e.data) WHERE key = ANY(personal_keys));
        e.data := e.data - personal_keys;
        e.personal_hash := sha256(convert_to(coalesce(e.personal, '{}'::jsonb)::text, 'UTF8'));
        e.seq := head.last_seq + 1;
        e.prev_hash := head.last_hash;
        e.hash := sha256(e.prev_hash || convert_to(ledger_line(e), 'UTF8'));
        UPDATE events SET lane = e.lane, seq = e.seq, personal = e.personal, data = e.data,
                          personal_hash = e.personal_hash, prev_hash = e.prev_hash, hash = e.hash
        WHERE tenant_id = e.tenant_id AND id = e.id;
        UPDATE ledger_heads SET last_seq = e.seq, last_hash = e.hash WHERE tenant_id = e.tenant_id AND lane = e.lane;
    END LOOP;
END;
$$;

ALTER TABLE events
    ALTER COLUMN lane SET NOT NULL,
    ALTER COLUMN seq SET NOT NULL,
    ALTER COLUMN personal_hash SET NOT NULL,
    ALTER COLUMN prev_hash SET NOT NULL,
    ALTER COLUMN hash SET NOT NULL;
CREATE UNIQUE INDEX events_chain ON events (tenant_id, lane, seq);

CREATE TRIGGER events_ledger_append BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION ledger_append();

-- GDPR and consent quality
ALTER TABLE tenants
    ADD COLUMN require_notice_version  boolean NOT NULL DEFAULT false,
    ADD COLUMN consent_validity_days   integer CHECK (consent_validity_days IS NULL OR consent_validity_days > 0);

ALTER TABLE consents ADD COLUMN expires_at timestamptz;
ALTER TABLE recipients
    ADD COLUMN consent_expires          timestamptz[] NOT NULL DEFAULT '{}',
    ADD COLUMN restriction_note         text;

-- A name for people (the unsubscribe page shows it instead of the topic's identifier).
ALTER TABLE topics ADD COLUMN label text CHECK (label IS NULL OR length(label) BETWEEN 1 AND 200);
