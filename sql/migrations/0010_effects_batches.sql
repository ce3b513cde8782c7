-- Effects are claimed per tenant in event id order (sql/effects.sql claim_effects, drained in
-- batches); nothing reads pending effects by age any more, so every appended event stops paying
-- for that index.
DROP INDEX pending_effects_age;
