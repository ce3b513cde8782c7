"""Mailgun webhooks (INTEGRATIONS.md §3).

Verification: the JSON body's `signature.signature` must be hex HMAC-SHA256, keyed with the
configured HTTP webhook signing key, of `signature.timestamp` + `signature.token` (compared in
constant time); the timestamp must lie within the configured age (default 5 minutes); and the
token is accepted once only (remembered until it would be stale anyway). Mailgun's signature does
not cover the body, so a replayed token, with any body, is refused.

Events (key: `event-data.id` with `event-data.timestamp`, as Mailgun's id is unique only within a
day): failed/permanent (hard; a 4xx code after retries ran out = soft; Mailgun's own
suppress-unsubscribe / suppress-complaint mapped to those), failed/temporary (soft), complained,
unsubscribed (the topics its tags map to, else all topics). Campaign:
`event-data.user-variables[campaign_key]`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta

from suppress.providers import model

KIND: Final = "mailgun"
# A token stays remembered a little past the moment its timestamp turns stale.
NONCE_MARGIN: Final = timedelta(minutes=10)


class _Signature(msgspec.Struct, frozen=True):
    timestamp: Annotated[str, Meta(max_length=20)] | int
    token: Annotated[str, Meta(min_length=1, max_length=256)]
    signature: Annotated[str, Meta(max_length=256)]


class _Body(msgspec.Struct, frozen=True):
    signature: _Signature
    event_data: dict[str, Any] = msgspec.field(name="event-data")


def verify(request: model.InboundRequest, provider: model.LoadedProvider, now: datetime) -> model.Verified:
    """Verify one webhook POST; it carries one event. The token is the nonce to remember."""
    try:
        document = msgspec.json.decode(request.body)
    except msgspec.DecodeError:
        raise model.MalformedProviderRequest(
            "the body is not JSON (legacy form webhooks are not taken)"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("signature"), dict):
        raise model.CredentialsMissing("the Mailgun signature is missing")
    try:
        body = msgspec.convert(document, _Body)
    except msgspec.ValidationError as exc:
        raise model.MalformedProviderRequest(f"not a Mailgun webhook: {exc}") from None
    timestamp = str(body.signature.timestamp)
    key = provider.credentials["signing_key"].encode()
    expected = hmac.new(key, (timestamp + body.signature.token).encode(), hashlib.sha256).hexdigest()
    given = body.signature.signature.strip().lower().encode("utf-8", "replace")
    if not hmac.compare_digest(expected.encode(), given):
        raise model.ProviderRejected("the Mailgun signature does not match")
    try:
        signed_at = model.unix_time(timestamp)
    except model.MalformedProviderRequest:
        raise model.ProviderRejected("the Mailgun timestamp is not Unix seconds") from None
    max_age = provider.settings.max_age(KIND)
    model.check_timestamp(signed_at, now, max_age)
    event = body.event_data
    event_id, event_time = model.text_of(event.get("id"), 200), model.text_of(event.get("timestamp"), 40)
    key_text = f"{event_id}:{event_time}" if event_id and event_time else model.fingerprint(request.body)
    return model.Verified(
        events=[model.Received(key_text, document)],
        nonce=body.signature.token,
        nonce_expires_at=signed_at + max_age + NONCE_MARGIN,
    )


def interpret(payload: dict[str, Any], settings: model.ProviderSettings) -> list[model.Change]:
    """The change one Mailgun event asks for."""
    event = model.mapping_of(payload.get("event-data"))
    name = model.text_of(event.get("event"), 40)
    headers = model.mapping_of(model.mapping_of(event.get("message")).get("headers"))
    common: dict[str, Any] = {
        "address": model.address_of(event.get("recipient")),
        "message_id": model.text_of(headers.get("message-id"), 300),
        "occurred_at": model.time_of(event.get("timestamp")),
        "campaign": model.campaign_of(model.mapping_of(event.get("user-variables")), settings.campaign_key),
    }
    detail: dict[str, Any] = {"event": name}
    if name == "failed":
        severity = model.text_of(event.get("severity"), 20)
        reason = model.text_of(event.get("reason"), 60)
        status = model.mapping_of(event.get("delivery-status"))
        code = status.get("code")
        detail.update(severity=severity, reason=reason)
        if isinstance(code, int):
            detail["code"] = code
        if model.text_of(status.get("enhanced-code"), 20):
            detail["status"] = model.text_of(status.get("enhanced-code"), 20)
        if severity == "temporary":
            return [model.Change(action="soft_bounce", detail=_present(detail), **common)]
        if severity != "permanent":
            return [model.Change(action="ignore", detail=_present(detail))]
        if reason == "suppress-unsubscribe":
            return [_unsubscribe(event, settings, detail, common)]
        if reason == "suppress-complaint":
            return [model.Change(action="complaint", detail=_present(detail), **common)]
        # a permanent failure after a temporary (4xx) one: the retries ran out, a soft bounce
        soft = isinstance(code, int) and 400 <= code < 500
        return [
            model.Change(action="soft_bounce" if soft else "hard_bounce", detail=_present(detail), **common)
        ]
    if name == "complained":
        return [model.Change(action="complaint", detail=detail, **common)]
    if name == "unsubscribed":
        return [_unsubscribe(event, settings, detail, common)]
    return [model.Change(action="ignore", detail=detail)]


def _unsubscribe(
    event: Mapping[str, Any], settings: model.ProviderSettings, detail: dict[str, Any], common: dict[str, Any]
) -> model.Change:
    """An unsubscribe from the topics the event's tags map to, else from all topics."""
    tags = [t for t in (model.text_of(tag, 256) for tag in model.list_of(event.get("tags"))) if t is not None]
    topics = tuple(dict.fromkeys(settings.topics[t] for t in tags if t in settings.topics))
    if tags:
        detail["tags"] = tags[:20]
    return model.Change(action="unsubscribe", topics=topics, detail=_present(detail), **common)


def _present(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in detail.items() if v is not None}
