"""Amazon SES via Amazon SNS (INTEGRATIONS.md §1).

Verification: the SNS message is JSON (sent as text/plain). Its TopicArn must be one the
configuration allows (a valid signature only proves "from SNS", not "from our topic"); its
SigningCertURL must be https, without port or credentials, on `sns.<region>.amazonaws.com[.cn]`
of the TopicArn's own region, ending in `.pem`; SignatureVersion 1 (SHA1withRSA) or 2
(SHA256withRSA) as configured; the signed Timestamp within the configured age; and the signature
over the canonical string must verify with the RSA key of that certificate (fetched once, cached).

Events: subscription confirmations (confirmed by the worker through the SubscribeURL, checked the
same way), SES Bounce (Permanent = hard, Transient / Undetermined = soft), Complaint (except
feedback type `not-spam`) and Subscription (list-management unsubscribes) in both the
notification and the event-publishing format. Campaign: `mail.tags[campaign_key][0]`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final
from urllib.parse import parse_qs, urlsplit

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from msgspec import Meta

from suppress.providers import model
from suppress.providers.certificates import SnsCertificates

KIND: Final = "ses"
TOPIC_ARN_PATTERN: Final = r"^arn:aws(-[a-z]+)*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$"
_SNS_HOST = re.compile(r"^sns\.[a-zA-Z0-9\-]{3,}\.amazonaws\.com(\.cn)?$")
_NOTIFICATION_KEYS: Final = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_KEYS: Final = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_HASHES: Final = {"1": hashes.SHA1, "2": hashes.SHA256}
TYPES: Final = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_SOFT_BOUNCES: Final = ("Transient", "Undetermined")

_Text = Annotated[str, Meta(max_length=300_000)]


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """The SNS message fields verification reads (values as decoded JSON strings)."""

    type: str = msgspec.field(name="Type")
    message_id: Annotated[str, Meta(min_length=1, max_length=300)] = msgspec.field(name="MessageId")
    topic_arn: Annotated[str, Meta(max_length=400)] = msgspec.field(name="TopicArn")
    message: _Text = msgspec.field(name="Message")
    timestamp: Annotated[str, Meta(max_length=64)] = msgspec.field(name="Timestamp")
    signature_version: Annotated[str, Meta(max_length=8)] = msgspec.field(name="SignatureVersion")
    signature: Annotated[str, Meta(max_length=4096)] = msgspec.field(name="Signature")
    signing_cert_url: Annotated[str, Meta(max_length=2000)] = msgspec.field(name="SigningCertURL")
    subject: _Text | None = msgspec.field(default=None, name="Subject")
    subscribe_url: Annotated[str, Meta(max_length=4000)] | None = msgspec.field(
        default=None, name="SubscribeURL"
    )
    token: Annotated[str, Meta(max_length=4000)] | None = msgspec.field(default=None, name="Token")


def string_to_sign(message: dict[str, Any]) -> bytes:
    """The canonical string SNS signs: `key\\nvalue\\n` for each signed key present, in order."""
    keys = _NOTIFICATION_KEYS if message.get("Type") == "Notification" else _CONFIRMATION_KEYS
    return "".join(f"{k}\n{message[k]}\n" for k in keys if message.get(k) is not None).encode()


def region_of(topic_arn: str) -> str:
    """The region of `arn:aws:sns:<region>:<account>:<name>`."""
    parts = topic_arn.split(":")
    return parts[3] if len(parts) == 6 else ""


def _sns_url_parts(url: str, region: str, what: str) -> tuple[str, str]:
    """Path and query of an https URL on the SNS host of `region`; ProviderRejected otherwise."""
    if not url.isascii() or any(ch.isspace() or ch == "\\" or ord(ch) < 0x20 for ch in url):
        raise model.ProviderRejected(f"the {what} is not a plain URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise model.ProviderRejected(f"the {what} is not a valid URL") from None
    if parts.scheme != "https":
        raise model.ProviderRejected(f"the {what} must be an https URL")
    if port is not None or parts.username is not None or parts.password is not None or parts.fragment:
        raise model.ProviderRejected(f"the {what} must not carry a port, credentials or a fragment")
    host = parts.hostname or ""
    if not _SNS_HOST.match(host):
        raise model.ProviderRejected(f"the {what} is not on an Amazon SNS host")
    if host not in (f"sns.{region}.amazonaws.com", f"sns.{region}.amazonaws.com.cn"):
        raise model.ProviderRejected(f"the {what} is not in the region of the TopicArn")
    return parts.path, parts.query


def check_certificate_url(url: str, region: str) -> None:
    """SigningCertURL: https, SNS host of the topic's region, no port, a path ending in .pem."""
    path, query = _sns_url_parts(url, region, "SigningCertURL")
    if not path.endswith(".pem") or query:
        raise model.ProviderRejected("the SigningCertURL is not a .pem certificate path")


def check_subscribe_url(url: str | None, topic_arn: str) -> None:
    """SubscribeURL: like the certificate URL, and a ConfirmSubscription for this very topic."""
    if not url:
        raise model.MalformedProviderRequest("a SubscriptionConfirmation without SubscribeURL")
    path, query = _sns_url_parts(url, region_of(topic_arn), "SubscribeURL")
    params = parse_qs(query)
    if (
        path not in ("", "/")
        or params.get("Action") != ["ConfirmSubscription"]
        or params.get("TopicArn") != [topic_arn]
        or len(params.get("Token", [])) != 1
    ):
        raise model.ProviderRejected("the SubscribeURL is not a ConfirmSubscription of this topic")


async def verify(
    request: model.InboundRequest,
    provider: model.LoadedProvider,
    now: datetime,
    certificates: SnsCertificates,
) -> model.Verified:
    """Verify one SNS message; the message itself is the one event (key: its MessageId)."""
    if (request.header("x-amz-sns-rawdelivery") or "").strip().lower() == "true":
        raise model.ProviderRejected(
            "raw message delivery carries no signature: turn it off for this subscription"
        )
    try:
        document = msgspec.json.decode(request.body)
        envelope = msgspec.convert(document, Envelope)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise model.MalformedProviderRequest(f"not an SNS message: {exc}") from None
    if envelope.type not in TYPES:
        raise model.MalformedProviderRequest(f"unknown SNS message type {envelope.type[:40]!r}")
    for header, value in (
        ("x-amz-sns-message-type", envelope.type),
        ("x-amz-sns-message-id", envelope.message_id),
        ("x-amz-sns-topic-arn", envelope.topic_arn),
    ):
        sent = request.header(header)
        if sent is not None and sent.strip() != value:
            raise model.ProviderRejected(f"the {header} header does not match the signed message")
    if envelope.topic_arn not in provider.settings.topic_arns:
        raise model.ProviderRejected("the TopicArn is not one this configuration allows")
    check_certificate_url(envelope.signing_cert_url, region_of(envelope.topic_arn))
    if envelope.type == "SubscriptionConfirmation":
        check_subscribe_url(envelope.subscribe_url, envelope.topic_arn)
    version = envelope.signature_version
    if version not in _HASHES or version not in (provider.settings.signature_versions or _HASHES):
        raise model.ProviderRejected(f"SignatureVersion {version[:8]!r} is not accepted")
    signed_at = model.time_of(envelope.timestamp)
    if signed_at is None:
        raise model.MalformedProviderRequest("the SNS Timestamp is not an ISO 8601 time")
    model.check_timestamp(signed_at, now, provider.settings.max_age(KIND))
    try:
        signature = base64.b64decode(envelope.signature, validate=True)
    except (binascii.Error, ValueError):
        raise model.ProviderRejected("the SNS signature is not Base64") from None
    key = await certificates.public_key(envelope.signing_cert_url, now)
    try:
        key.verify(signature, string_to_sign(document), padding.PKCS1v15(), _HASHES[version]())
    except InvalidSignature:
        raise model.ProviderRejected("the SNS signature does not match the message") from None
    return model.Verified(events=[model.Received(envelope.message_id, document)])


def interpret(payload: dict[str, Any], settings: model.ProviderSettings) -> list[model.Change]:
    """The changes one verified SNS message asks for."""
    kind = payload.get("Type")
    if kind == "SubscriptionConfirmation":
        return [
            model.Change(action="confirm_subscription", url=model.text_of(payload.get("SubscribeURL"), 4000))
        ]
    if kind != "Notification":
        return [model.Change(action="ignore", detail={"sns_type": model.text_of(kind, 40)})]
    try:
        message = msgspec.json.decode(str(payload.get("Message", "")))
    except msgspec.DecodeError:  # e.g. "Successfully validated SNS topic for Amazon SES ..."
        return [model.Change(action="ignore", detail={"sns_message": "not JSON"})]
    message = model.mapping_of(message)
    event = model.text_of(message.get("eventType") or message.get("notificationType"), 40)
    mail = model.mapping_of(message.get("mail"))
    common = {
        "message_id": model.text_of(mail.get("messageId"), 300),
        "campaign": model.campaign_of(model.mapping_of(mail.get("tags")), settings.campaign_key),
    }
    if event == "Bounce":
        return _bounces(model.mapping_of(message.get("bounce")), common)
    if event == "Complaint":
        return _complaints(model.mapping_of(message.get("complaint")), common)
    if event == "Subscription":
        return _unsubscribes(model.mapping_of(message.get("subscription")), mail, settings, common)
    return [model.Change(action="ignore", detail={"event": event})]


def _bounces(bounce: Mapping[str, Any], common: dict[str, Any]) -> list[model.Change]:
    bounce_type = model.text_of(bounce.get("bounceType"), 40)
    action: model.Action
    if bounce_type == "Permanent":
        action = "hard_bounce"
    elif bounce_type in _SOFT_BOUNCES:
        action = "soft_bounce"
    else:
        return [model.Change(action="ignore", detail={"event": "Bounce", "bounce_type": bounce_type})]
    occurred = model.time_of(bounce.get("timestamp"))
    changes = []
    for item in model.list_of(bounce.get("bouncedRecipients")):
        item = model.mapping_of(item)
        detail = {
            "event": "Bounce",
            "bounce_type": bounce_type,
            "bounce_subtype": model.text_of(bounce.get("bounceSubType"), 60),
            "status": model.text_of(item.get("status"), 20),
            "feedback_id": model.text_of(bounce.get("feedbackId"), 200),
        }
        changes.append(
            model.Change(
                action=action,
                address=model.address_of(item.get("emailAddress")),
                occurred_at=occurred,
                detail={k: v for k, v in detail.items() if v is not None},
                **common,
            )
        )
    return changes or [model.Change(action="ignore", detail={"event": "Bounce", "recipients": 0})]


def _complaints(complaint: Mapping[str, Any], common: dict[str, Any]) -> list[model.Change]:
    feedback = model.text_of(complaint.get("complaintFeedbackType"), 40)
    if feedback == "not-spam":
        return [model.Change(action="ignore", detail={"event": "Complaint", "feedback_type": feedback})]
    occurred = model.time_of(complaint.get("timestamp"))
    detail = {
        "event": "Complaint",
        "feedback_type": feedback,
        "feedback_id": model.text_of(complaint.get("feedbackId")),
    }
    return [
        model.Change(
            action="complaint",
            address=model.address_of(model.mapping_of(item).get("emailAddress")),
            occurred_at=occurred,
            detail={k: v for k, v in detail.items() if v is not None},
            **common,
        )
        for item in model.list_of(complaint.get("complainedRecipients"))
    ] or [model.Change(action="ignore", detail={"event": "Complaint", "recipients": 0})]


def _opted_out(preferences: Mapping[str, Any]) -> list[str]:
    return [
        name
        for item in model.list_of(preferences.get("topicSubscriptionStatus"))
        if model.mapping_of(item).get("subscriptionStatus") == "OptOut"
        and (name := model.text_of(model.mapping_of(item).get("topicName"), 200)) is not None
    ]


def _unsubscribes(
    subscription: Mapping[str, Any],
    mail: Mapping[str, Any],
    settings: model.ProviderSettings,
    common: dict[str, Any],
) -> list[model.Change]:
    new = model.mapping_of(subscription.get("newTopicPreferences"))
    if new.get("unsubscribeAll") is True:
        topics: tuple[str, ...] = ()
        names: list[str] = []
    else:
        before = set(_opted_out(model.mapping_of(subscription.get("oldTopicPreferences"))))
        names = [n for n in _opted_out(new) if n not in before]
        if not names:
            return [model.Change(action="ignore", detail={"event": "Subscription", "opted_out": 0})]
        mapped = [settings.topics.get(n) for n in names]
        # a topic the tenant has not mapped: the safe reading is "everything"
        topics = () if None in mapped else tuple(dict.fromkeys(t for t in mapped if t is not None))
    occurred = model.time_of(subscription.get("timestamp"))
    detail: dict[str, Any] = {
        "event": "Subscription",
        "contact_list": model.text_of(subscription.get("contactList"), 200),
    }
    if names:
        detail["provider_topics"] = names[:20]
    return [
        model.Change(
            action="unsubscribe",
            address=model.address_of(raw),
            topics=topics,
            occurred_at=occurred,
            detail={k: v for k, v in detail.items() if v is not None},
            **common,
        )
        for raw in model.list_of(mail.get("destination"))
    ] or [model.Change(action="ignore", detail={"event": "Subscription", "recipients": 0})]
