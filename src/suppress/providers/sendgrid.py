"""SendGrid Event Webhook (INTEGRATIONS.md §2).

Verification: `X-Twilio-Email-Event-Webhook-Signature` is a Base64 DER ECDSA signature, by the
configured P-256 verification key, of SHA-256 over the `X-Twilio-Email-Event-Webhook-Timestamp`
header value followed by the raw body bytes exactly as received (a trailing CRLF included); the
timestamp must lie within the configured age. The body is then a JSON array of events.

Events (key: `sg_event_id`): bounce (`type` bounce = hard, blocked = soft), dropped because of an
earlier bounce / spam report / unsubscribe, spamreport, unsubscribe (all topics) and
group_unsubscribe (the ASM group's mapped topic, else all topics). `deferred` is a delay, not a
bounce, and is not counted. Campaign: the custom arg `campaign_key` (custom args arrive as
top-level keys), else `marketing_campaign_name`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from suppress.errors import InvalidInput
from suppress.providers import model

KIND: Final = "sendgrid"
SIGNATURE_HEADER: Final = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER: Final = "x-twilio-email-event-webhook-timestamp"
MAX_EVENTS: Final = 10_000
# dropped reasons that repeat an earlier verdict of SendGrid's own suppression lists
_DROPPED: Final[dict[str, model.Action]] = {
    "Bounced Address": "hard_bounce",
    "Spam Reporting Address": "complaint",
    "Unsubscribed Address": "unsubscribe",
}


def load_verification_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (Base64 DER, no PEM armour) or as PEM; P-256 only."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise InvalidInput("verification_key is not a public key in Base64 (DER) or PEM form") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidInput("verification_key must be an ECDSA P-256 public key")
    return key


def verify(request: model.InboundRequest, provider: model.LoadedProvider, now: datetime) -> model.Verified:
    """Verify one Event Webhook POST; each event of the batch is one stored event."""
    signature = request.header(SIGNATURE_HEADER)
    timestamp = request.header(TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise model.CredentialsMissing("the SendGrid signature or timestamp header is missing")
    try:
        signed_at = model.unix_time(timestamp)
    except model.MalformedProviderRequest:
        raise model.ProviderRejected("the SendGrid timestamp header is not Unix seconds") from None
    model.check_timestamp(signed_at, now, provider.settings.max_age(KIND))
    key = load_verification_key(provider.credentials["verification_key"])
    try:
        der = base64.b64decode(signature.strip(), validate=True)
        key.verify(der, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        raise model.ProviderRejected("the SendGrid signature does not match the request") from None
    try:
        raw_events = msgspec.json.decode(request.body, type=list[msgspec.Raw])
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise model.MalformedProviderRequest("the body is not a JSON array of events") from None
    if len(raw_events) > MAX_EVENTS:
        raise model.MalformedProviderRequest(f"more than {MAX_EVENTS} events in one request")
    events = []
    for raw in raw_events:
        try:
            event = msgspec.json.decode(raw, type=dict[str, Any])
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise model.MalformedProviderRequest("an event of the batch is not a JSON object") from None
        event_id = model.text_of(event.get("sg_event_id"), 100) or model.fingerprint(bytes(raw))
        events.append(model.Received(event_id, event))
    return model.Verified(events=events)


def interpret(event: dict[str, Any], settings: model.ProviderSettings) -> list[model.Change]:
    """The change one SendGrid event asks for."""
    name = model.text_of(event.get("event"), 40)
    common: dict[str, Any] = {
        "address": model.address_of(event.get("email")),
        "message_id": model.text_of(event.get("sg_message_id"), 300)
        or model.text_of(event.get("smtp-id"), 300),
        "occurred_at": model.time_of(event.get("timestamp")),
        "campaign": model.campaign_of(event, settings.campaign_key)
        or model.text_of(event.get("marketing_campaign_name"), 200),
    }
    detail: dict[str, Any] = {"event": name}
    if name == "bounce":
        bounce_type = model.text_of(event.get("type"), 40)
        detail.update(
            type=bounce_type,
            status=model.text_of(event.get("status"), 20),
            classification=model.text_of(event.get("bounce_classification"), 60),
        )
        action: model.Action = "soft_bounce" if bounce_type == "blocked" else "hard_bounce"
        return [model.Change(action=action, detail=_present(detail), **common)]
    if name == "dropped":
        reason = model.text_of(event.get("reason"), 100)
        detail["reason"] = reason
        dropped = _DROPPED.get(reason or "")
        if dropped == "unsubscribe":
            return [_unsubscribe(event, settings, detail, common)]
        if dropped is not None:
            return [model.Change(action=dropped, detail=_present(detail), **common)]
        return [model.Change(action="ignore", detail=_present(detail))]
    if name == "spamreport":
        return [model.Change(action="complaint", detail=detail, **common)]
    if name in ("unsubscribe", "group_unsubscribe"):
        return [_unsubscribe(event, settings, detail, common)]
    return [model.Change(action="ignore", detail=detail)]


def _unsubscribe(
    event: Mapping[str, Any], settings: model.ProviderSettings, detail: dict[str, Any], common: dict[str, Any]
) -> model.Change:
    """An unsubscribe from the event's ASM group's topic when the tenant mapped it, else from all."""
    group = model.text_of(event.get("asm_group_id"), 40)
    topic = settings.topics.get(group) if group is not None else None
    if group is not None:
        detail["asm_group_id"] = group
    return model.Change(
        action="unsubscribe", topics=(topic,) if topic else (), detail=_present(detail), **common
    )


def _present(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in detail.items() if v is not None}
