"""The values every provider module shares: a configuration as verification sees it, the inbound
request as received, what verification yields, the provider-neutral change an event maps to, and
the errors that refuse a request (nothing is stored when one is raised)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any, ClassVar, Literal, get_args

import msgspec

from suppress.errors import SuppressError
from suppress.models import Channel

ProviderKind = Literal["ses", "sendgrid", "mailgun", "postmark", "twilio", "vonage"]
KINDS: tuple[str, ...] = get_args(ProviderKind)
Replies = Literal["auto", "always", "never"]
VonageMethod = Literal["md5hash", "md5", "sha1", "sha256", "sha512"]

# A signed timestamp further ahead of our clock than this is refused (clock skew allowance).
FUTURE_SKEW = timedelta(minutes=5)
# How old a signed timestamp may be, per provider, unless the configuration says otherwise:
# SNS retries HTTP deliveries for at most an hour; SendGrid and Vonage retry for 24 hours and do
# not document whether retries are re-signed; Mailgun's body is not signed, so its window is short.
DEFAULT_MAX_AGE: dict[str, int] = {"ses": 3600, "sendgrid": 86_400, "mailgun": 300, "vonage": 86_400}


class ProviderSettings(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A configuration's settings: everything but the credentials (stored as JSON, shown by GET)."""

    topic_arns: list[str] = msgspec.field(default_factory=list)  # ses
    signature_versions: list[str] | None = None  # ses; None = both 1 and 2
    url: str | None = None  # twilio: the URL Twilio requests (and signs)
    signature_method: VonageMethod | None = None  # vonage
    header_name: str | None = None  # postmark, with a header secret
    replies: Replies | None = None  # twilio, vonage: our confirmation SMS for keywords
    max_age_seconds: int | None = None
    # the provider's unsubscribe scope (SendGrid ASM group id, Mailgun tag, Postmark message stream,
    # SES list-management topic) → our topic name
    topics: dict[str, str] = msgspec.field(default_factory=dict)
    campaign_key: str = "campaign"

    def max_age(self, kind: str) -> timedelta:
        """How old a signed timestamp may be for this configuration."""
        return timedelta(seconds=self.max_age_seconds or DEFAULT_MAX_AGE.get(kind, 3600))


class LoadedProvider(msgspec.Struct, frozen=True, kw_only=True):
    """An active configuration with its credentials opened, for verifying one request."""

    tenant_id: int
    id: int
    kind: str
    settings: ProviderSettings
    credentials: dict[str, str]
    inbound_url: str

    def __repr__(self) -> str:  # credentials never reach a log line or a traceback
        return f"LoadedProvider(tenant_id={self.tenant_id}, id={self.id}, kind={self.kind!r})"


class InboundRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An inbound provider request as it arrived: header names lower-cased, the raw query string
    (without `?`) and the raw body bytes (signatures are checked over these, never re-encoded)."""

    method: str
    headers: dict[str, str]
    query: str
    body: bytes
    content_type: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Received(msgspec.Struct, frozen=True):
    """One verified provider event: the provider's id for it (the de-duplication key) and the
    event as received."""

    key: str
    payload: dict[str, Any]


class Verified(msgspec.Struct, frozen=True, kw_only=True):
    """What a verified request carries, and a nonce to remember (only once acceptable) if any."""

    events: list[Received]
    nonce: str | None = None
    nonce_expires_at: datetime | None = None


Action = Literal[
    "hard_bounce",
    "soft_bounce",
    "complaint",
    "unsubscribe",
    "manual",
    "sms",
    "confirm_subscription",
    "ignore",
]


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """A provider event in our vocabulary: what happened to which address, with the evidence."""

    action: Action
    channel: Channel = "email"
    address: str | None = None
    # our topic names an unsubscribe is limited to; empty = every topic of the channel
    topics: tuple[str, ...] = ()
    campaign: str | None = None
    message_id: str | None = None
    occurred_at: datetime | None = None
    detail: dict[str, Any] = msgspec.field(default_factory=dict)
    to: str | None = None  # sms: the number the person wrote to
    text: str | None = None  # sms: what they wrote
    reply: bool = True  # sms: whether we send the keyword's confirmation
    url: str | None = None  # confirm_subscription: the SNS SubscribeURL


class ProviderRejected(SuppressError):
    """The request is not a valid signed request from this provider; nothing was stored."""

    code = "provider_signature_invalid"
    status = 403
    # the WWW-Authenticate challenge of a 401
    challenge: ClassVar[str] = 'Signature realm="suppress-providers"'


class CredentialsMissing(ProviderRejected):
    """The request carries no signature or credentials; nothing was stored."""

    code = "provider_credentials_missing"
    status = 401


class BasicCredentialsMissing(CredentialsMissing):
    """The request carries no basic-auth credentials; nothing was stored."""

    challenge = 'Basic realm="suppress-providers"'


class StaleRequest(ProviderRejected):
    """The request's signed timestamp is too old (or too far ahead); nothing was stored."""

    code = "provider_timestamp_stale"


class ReplayedRequest(ProviderRejected):
    """This signed request was accepted before and cannot be used again; nothing was stored."""

    code = "provider_replay"


class MalformedProviderRequest(SuppressError):
    """The request body is not what this provider sends; nothing was stored."""

    code = "malformed_request"
    status = 400


def check_timestamp(at: datetime, now: datetime, max_age: timedelta) -> None:
    """Refuse a signed time older than `max_age` or further ahead than the clock skew allowance."""
    if at > now + FUTURE_SKEW:
        raise StaleRequest("the signed timestamp lies in the future")
    if at < now - max_age:
        raise StaleRequest(f"the signed timestamp is older than {int(max_age.total_seconds())} seconds")


def unix_time(value: object) -> datetime:
    """A signed Unix time (seconds, as digits) as an aware datetime; MalformedProviderRequest if not."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise MalformedProviderRequest("the signed timestamp is not Unix seconds")
    return datetime.fromtimestamp(int(text), UTC)


def fingerprint(raw: bytes) -> str:
    """A de-duplication key for an event that carries no id of its own."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# -- reading provider payloads defensively (a surprising shape maps to "ignore", never a crash) ------


def text_of(value: object, limit: int = 1000) -> str | None:
    """A non-empty string (numbers written out), cut to `limit`, or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:limit]


def mapping_of(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def list_of(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def address_of(value: object) -> str | None:
    """The bare address of `kari@example.no` or `Kari <kari@example.no>`."""
    raw = text_of(value, 600)
    if raw is None:
        return None
    if "<" in raw:
        raw = parseaddr(raw)[1] or raw
    return raw


def time_of(value: object) -> datetime | None:
    """An ISO 8601 time (`...Z` allowed) or Unix seconds (int, float or digits) as an aware
    datetime; None when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str):
            text = value.strip()
            if text.replace(".", "", 1).isdigit():
                return datetime.fromtimestamp(float(text), UTC)
            # Postmark writes seven fractional digits; Python reads at most six.
            head, dot, tail = text.partition(".")
            if dot:
                digits = len(tail) - len(tail.lstrip("0123456789"))
                text = f"{head}.{tail[: min(digits, 6)]}{tail[digits:]}"
            at = datetime.fromisoformat(text)
            return at if at.tzinfo else at.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def campaign_of(metadata: Mapping[str, Any], key: str) -> str | None:
    """The campaign named under `key` in a provider's metadata (a list: its first value)."""
    value = metadata.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    return text_of(value, 200)
