-- A campaign's unsubscribe rate (unsubscribes attributed to it per recipient allowed) at or above
-- this line raises its list-health alert to `warn`, next to the complaint lines (docs/health.md).
ALTER TABLE tenants
    ADD COLUMN unsubscribe_alert_rate numeric NOT NULL DEFAULT 0.005
        CHECK (unsubscribe_alert_rate > 0 AND unsubscribe_alert_rate <= 1);
