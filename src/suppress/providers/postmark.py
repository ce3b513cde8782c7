"""Postmark webhooks (INTEGRATIONS.md §4).

Verification: Postmark signs nothing; it authenticates with HTTP basic auth (the credentials in the
webhook URL) and/or a custom header carrying a long shared secret (the webhook's HttpHeaders).
Whatever the configuration holds is required, each part compared in constant time.

Events (key: `RecordType:ID`; subscription changes: a digest of recipient, stream, time and
direction): Bounce (HardBounce / BadEmailAddress = hard, SoftBounce / Blocked = soft; Transient and
DnsError are delays and not counted), SpamComplaint, SubscriptionChange with SuppressSending
(HardBounce, SpamComplaint, ManualSuppression: by the recipient = unsubscribe from the message
stream's mapped topic, else all topics; by the customer or an admin = manual). Reactivations lift
nothing here. Campaign: `Metadata[campaign_key]`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import msgspec

from suppress.providers import model

KIND: Final = "postmark"
DEFAULT_HEADER: Final = "X-Webhook-Secret"
_BOUNCES: Final[dict[str, model.Action]] = {
    "HardBounce": "hard_bounce",
    "BadEmailAddress": "hard_bounce",
    "SoftBounce": "soft_bounce",
    "Blocked": "soft_bounce",
    "SpamComplaint": "complaint",
    "Unsubscribe": "unsubscribe",
}


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def verify(request: model.InboundRequest, provider: model.LoadedProvider, now: datetime) -> model.Verified:
    """Check the configured credentials; the body is one event."""
    credentials = provider.credentials
    if "username" in credentials:
        header = request.header("authorization")
        if not header:
            raise model.BasicCredentialsMissing("basic-auth credentials are required")
        scheme, _, value = header.strip().partition(" ")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            decoded = ""
        user, colon, password = decoded.partition(":")
        # both compared, always: the time taken says nothing about which part was wrong
        matches = [_same(user, credentials["username"]), _same(password, credentials["password"])]
        if scheme.lower() != "basic" or not colon or not all(matches):
            raise model.ProviderRejected("the basic-auth credentials do not match")
    if "header_secret" in credentials:
        name = provider.settings.header_name or DEFAULT_HEADER
        sent = request.header(name)
        if sent is None:
            raise model.CredentialsMissing(f"the {name} header is missing")
        if not _same(sent.strip(), credentials["header_secret"]):
            raise model.ProviderRejected(f"the {name} header does not match")
    try:
        event = msgspec.json.decode(request.body, type=dict[str, Any])
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise model.MalformedProviderRequest("the body is not a JSON object") from None
    return model.Verified(events=[model.Received(event_key(event, request.body), event)])


def event_key(event: Mapping[str, Any], body: bytes) -> str:
    record = model.text_of(event.get("RecordType"), 40)
    record_id = model.text_of(event.get("ID"), 60)
    if record and record_id:
        return f"{record}:{record_id}"
    if record == "SubscriptionChange":
        parts = [event.get(k) for k in ("Recipient", "MessageStream", "ChangedAt", "SuppressSending")]
        return model.fingerprint(msgspec.json.encode(parts))
    return model.fingerprint(body)


def interpret(event: dict[str, Any], settings: model.ProviderSettings) -> list[model.Change]:
    """The change one Postmark event asks for."""
    record = model.text_of(event.get("RecordType"), 40)
    stream = model.text_of(event.get("MessageStream"), 100)
    common: dict[str, Any] = {
        "message_id": model.text_of(event.get("MessageID"), 300),
        "campaign": model.campaign_of(model.mapping_of(event.get("Metadata")), settings.campaign_key),
    }
    detail: dict[str, Any] = {"record": record, "stream": stream}
    if record in ("Bounce", "SpamComplaint"):
        kind = model.text_of(event.get("Type"), 60)
        detail["type"] = kind
        bounce: model.Action = (
            "complaint" if record == "SpamComplaint" else _BOUNCES.get(kind or "", "ignore")
        )
        if bounce == "ignore":
            return [model.Change(action="ignore", detail=_present(detail))]
        return [
            model.Change(
                action=bounce,
                address=model.address_of(event.get("Email")),
                occurred_at=model.time_of(event.get("BouncedAt")),
                topics=_stream_topics(stream, settings) if bounce == "unsubscribe" else (),
                detail=_present(detail),
                **common,
            )
        ]
    if record == "SubscriptionChange":
        reason = model.text_of(event.get("SuppressionReason"), 60)
        origin = model.text_of(event.get("Origin"), 40)
        detail.update(reason=reason, origin=origin)
        if event.get("SuppressSending") is not True:  # a reactivation: nothing here is lifted by it
            detail["suppress_sending"] = False
            return [model.Change(action="ignore", detail=_present(detail))]
        action: model.Action
        if reason == "HardBounce":
            action = "hard_bounce"
        elif reason == "SpamComplaint":
            action = "complaint"
        elif reason == "ManualSuppression":
            action = "unsubscribe" if origin == "Recipient" else "manual"
        else:
            return [model.Change(action="ignore", detail=_present(detail))]
        return [
            model.Change(
                action=action,
                address=model.address_of(event.get("Recipient")),
                occurred_at=model.time_of(event.get("ChangedAt")),
                topics=_stream_topics(stream, settings) if action == "unsubscribe" else (),
                detail=_present(detail),
                **common,
            )
        ]
    return [model.Change(action="ignore", detail=_present(detail))]


def _stream_topics(stream: str | None, settings: model.ProviderSettings) -> tuple[str, ...]:
    topic = settings.topics.get(stream) if stream else None
    return (topic,) if topic else ()


def _present(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in detail.items() if v is not None}
