"""Email and SMS provider integrations: bounces, complaints, unsubscribes and SMS keywords flow in
from each provider's own webhook, verified by the provider's signature scheme.

- `configs`: per-tenant provider configurations, credentials sealed at rest.
- `ses`, `sendgrid`, `mailgun`, `postmark`, `twilio`, `vonage`: per provider, `verify` (the exact
  signature scheme over the raw request) and `interpret` (its events in our vocabulary).
- `inbox`: the inbound path: verify, store the events durably (de-duplicated), enqueue, acknowledge.
- `processing`: the worker side: apply stored events (suppressions, soft-bounce counting, the SMS
  keyword path, SNS subscription confirmations).
- `certificates`: the SNS signing-certificate fetcher and cache.

docs/providers.md describes the whole flow; ../shared/INTEGRATIONS.md the provider facts.
"""
