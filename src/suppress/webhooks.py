"""Outbound webhooks: registering endpoints, their signing secrets, the signed payload, deliveries.

Every ledger event is POSTed to each active webhook of its tenant that takes its kind (the fan-out
and the HTTP calls are worker jobs, see workers/webhooks.py). A request carries
`Suppress-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`; receivers check
it with `verify_signature` (docs/webhooks.md shows how). Signing secrets are shown once, at
registration, and kept sealed with AES-256-GCM under a key derived from SUPPRESS_SECRET.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import asyncpg
import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from msgspec import Meta

from suppress import cursors
from suppress.config import derive_key
from suppress.effects import LedgerEvent
from suppress.errors import Conflict, InvalidInput, NotFound
from suppress.ledger import WEBHOOK_EVENT, Checkpoint
from suppress.outbound import Resolver, check_target, system_resolver
from suppress.sql import Queries
from suppress.tenants import Principal

# The event kinds a webhook can ask for: every kind the ledger writes, and `ledger.checkpoint` (a
# tenant-level event: each sealed checkpoint, docs/ledger.md). The one list of them.
EventKind = Literal[
    "suppression_added",
    "suppression_lifted",
    "consent_given",
    "consent_withdrawn",
    "customer_purchase",
    "customer_agreement_started",
    "customer_agreement_ended",
    "unsubscribed",
    "ledger.checkpoint",
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]

SIGNATURE_HEADER = "Suppress-Signature"
EVENT_ID_HEADER = "Suppress-Event-Id"
USER_AGENT = "suppress-webhooks"
# Receivers should refuse signatures whose timestamp is further than this from their clock (replay).
DEFAULT_TOLERANCE = 300
MAX_URL_LENGTH = 2000
MAX_ACTIVE_WEBHOOKS = 20
SECRET_PREFIX = "whsec_"  # noqa: S105  (a label, not a secret)
SECRET_KEY_PURPOSE = "suppress webhook secrets v1"  # noqa: S105  (HKDF info)
# Delivery schedule: attempt n+1 follows attempt n after FIRST_RETRY · 2^(n-1) s (at most an hour),
# up to MAX_ATTEMPTS attempts (about 7.5 hours in all) before a delivery is `failed`.
MAX_ATTEMPTS = 15
FIRST_RETRY = 10.0
MAX_RETRY_DELAY = 3600.0
RETRY_JITTER = 0.1
_MAX_SIGNATURE_HEADER = 4096

WebhookUrl = Annotated[str, Meta(min_length=1, max_length=MAX_URL_LENGTH)]
DeliveryId = Annotated[int, Meta(gt=0)]  # msgspec reads it as an int64


class WebhookIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/webhooks: where to send, and which event kinds (absent = every kind)."""

    url: WebhookUrl
    events: Annotated[list[EventKind], Meta(min_length=1, max_length=100)] | None = None


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    url: str
    events: list[str] | None
    created_at: datetime
    disabled_at: datetime | None = None


class NewWebhook(msgspec.Struct, frozen=True, kw_only=True):
    """A freshly registered webhook: the only time its signing secret is shown."""

    id: int
    url: str
    events: list[str] | None
    secret: str
    created_at: datetime


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One try at a delivery; `duration_ms` is null while no outcome is recorded."""

    attempt: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int | None


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    event_id: str
    type: str
    status: DeliveryStatus
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    attempts: list[Attempt]


class DeliveryPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Delivery]
    next_cursor: str | None


class WebhookPayload(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON body POSTed for one ledger event; `id` is stable across retries (de-duplicate on it)."""

    id: str
    type: str
    occurred_at: datetime
    recorded_at: datetime
    tenant: int
    channel: str
    address: str | None
    topic: str | None
    campaign: str | None
    source: str
    data: dict[str, Any]


class CheckpointPayload(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON body POSTed for a sealed checkpoint (`type` = `ledger.checkpoint`)."""

    id: str
    type: str
    tenant: int
    checkpoint: Checkpoint


_payload_encoder = msgspec.json.Encoder()


def checkpoint_ref(tenant_id: int, seq: int) -> str:
    """The public id of a checkpoint delivery: `<tenant>:checkpoint:<seq>`."""
    return f"{tenant_id}:checkpoint:{seq}"


def checkpoint_payload_body(checkpoint: Checkpoint) -> bytes:
    """The exact bytes POSTed (and signed) for a checkpoint."""
    return _payload_encoder.encode(
        CheckpointPayload(
            id=checkpoint_ref(checkpoint.tenant, checkpoint.seq),
            type=WEBHOOK_EVENT,
            tenant=checkpoint.tenant,
            checkpoint=checkpoint,
        )
    )


def event_ref(tenant_id: int, event_id: int) -> str:
    """The public id of a ledger event: `<tenant>:<event id>`."""
    return f"{tenant_id}:{event_id}"


def delivery_job_id(tenant_id: int, delivery_id: int) -> str:
    """The deterministic job id of one delivery: enqueueing twice runs once."""
    return f"webhook:{tenant_id}:{delivery_id}"


def payload_body(event: LedgerEvent) -> bytes:
    """The exact bytes POSTed (and signed) for an event."""
    return _payload_encoder.encode(
        WebhookPayload(
            id=event_ref(event.tenant_id, event.id),
            type=event.kind,
            occurred_at=event.occurred_at,
            recorded_at=event.recorded_at,
            tenant=event.tenant_id,
            channel=event.channel,
            address=event.address,
            topic=event.topic,
            campaign=event.campaign,
            source=event.source,
            data=event.data,
        )
    )


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `Suppress-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, now: float, tolerance: float = DEFAULT_TOLERANCE
) -> bool:
    """True when `header` is a valid signature of `body` by `secret`, made within `tolerance`
    seconds of `now` (unix seconds). Pure: the receiver's side of `sign`."""
    if not header or len(header) > _MAX_SIGNATURE_HEADER:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit()) or len(value) > 12:
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body).encode()
    return any(hmac.compare_digest(expected, c.encode("utf-8", "replace")) for c in candidates)


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def retry_delay(attempt: int, jitter: float) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based); `jitter` in [0, 1) shortens it by
    up to 10 % so retries of many deliveries spread out."""
    base: float = min(FIRST_RETRY * 2.0 ** min(attempt - 1, 30), MAX_RETRY_DELAY)
    return base * (1 - RETRY_JITTER * jitter)


def validate_url(url: str, *, allow_http: bool) -> str:
    """The URL if it is an absolute https (or, when allowed, http) URL without credentials."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidInput("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number in range
    except ValueError:
        raise InvalidInput("url is not a valid URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme.lower() not in schemes:
        raise InvalidInput(
            "url must be an absolute https:// URL"
            + ("" if allow_http else " (http:// only where SUPPRESS_ALLOW_HTTP_WEBHOOKS=1)")
        )
    if "@" in parts.netloc:
        raise InvalidInput("url must not carry a user name or password")
    if not parts.hostname or port == 0:
        raise InvalidInput("url has no host")
    if parts.fragment or url.endswith("#"):
        raise InvalidInput("url must not have a #fragment")
    return url


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class SecretBox:
    """Seals signing secrets at rest with AES-256-GCM, each bound to its tenant."""

    _VERSION = b"\x01"

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_secret(cls, master_secret: str) -> SecretBox:
        """The box keyed from SUPPRESS_SECRET."""
        return cls(derive_key(master_secret, SECRET_KEY_PURPOSE))

    def __repr__(self) -> str:
        return "SecretBox()"

    @staticmethod
    def _aad(tenant_id: int) -> bytes:
        return f"suppress webhook secret:{tenant_id}".encode()

    def seal(self, tenant_id: int, secret: str) -> bytes:
        nonce = os.urandom(12)
        return self._VERSION + nonce + self._aead.encrypt(nonce, secret.encode(), self._aad(tenant_id))

    def open(self, tenant_id: int, sealed: bytes) -> str:
        """The secret; ValueError when the box was altered, moved or sealed under another key."""
        if sealed[:1] != self._VERSION or len(sealed) < 29:
            raise ValueError("not a sealed webhook secret")
        try:
            return self._aead.decrypt(sealed[1:13], sealed[13:], self._aad(tenant_id)).decode()
        except InvalidTag:
            raise ValueError("the webhook secret cannot be opened with this key") from None


class Webhooks:
    """Registering, listing and disabling a tenant's webhooks, and reading their deliveries."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        box: SecretBox,
        *,
        allow_http: bool,
        allow_private: bool = False,
        resolve: Resolver | None = None,
    ) -> None:
        self._pool = pool
        self._q = queries
        self._box = box
        self._allow_http = allow_http
        self._allow_private = allow_private
        self._resolve = resolve or system_resolver

    async def register(self, principal: Principal, data: WebhookIn) -> NewWebhook:
        """Register an endpoint with a new signing secret, returned only here."""
        url = validate_url(data.url, allow_http=self._allow_http)
        await check_target(url, self._resolve, allow_private=self._allow_private)
        # canonical order, no repeats
        events = None if data.events is None else [k for k in EVENT_KINDS if k in data.events]
        secret = new_secret()
        row = await self._pool.fetchrow(
            self._q.create_webhook,
            principal.tenant_id,
            url,
            events,
            self._box.seal(principal.tenant_id, secret),
            MAX_ACTIVE_WEBHOOKS,
        )
        if row is None:
            raise Conflict(f"at most {MAX_ACTIVE_WEBHOOKS} webhooks can be active; disable one first")
        return NewWebhook(
            id=row["id"], url=row["url"], events=row["events"], secret=secret, created_at=row["created_at"]
        )

    async def list_webhooks(self, principal: Principal) -> list[Webhook]:
        """Every webhook of the tenant, newest first, disabled ones included (no secrets)."""
        rows = await self._pool.fetch(self._q.list_webhooks, principal.tenant_id)
        return [_webhook(r) for r in rows]

    async def disable(self, principal: Principal, webhook_id: int, now: datetime) -> Webhook:
        """Stop deliveries to a webhook (pending ones are cancelled); its history stays readable."""
        _check_id(webhook_id)
        row = await self._pool.fetchrow(self._q.disable_webhook, principal.tenant_id, webhook_id, now)
        if row is None:
            raise NotFound(f"no webhook with id {webhook_id}")
        return _webhook(row)

    async def deliveries(
        self,
        principal: Principal,
        webhook_id: int,
        *,
        status: DeliveryStatus | None,
        cursor: str | None,
        limit: int,
    ) -> DeliveryPage:
        """One page of a webhook's deliveries with their attempts, newest first."""
        _check_id(webhook_id)
        before = _decode_cursor(cursor) if cursor else None
        async with self._pool.acquire() as conn:
            if await conn.fetchrow(self._q.webhook_by_id, principal.tenant_id, webhook_id) is None:
                raise NotFound(f"no webhook with id {webhook_id}")
            rows = await conn.fetch(
                self._q.list_webhook_deliveries, principal.tenant_id, webhook_id, status, before, limit + 1
            )
        page = rows[:limit]
        items = [
            Delivery(
                id=r["id"],
                event_id=event_ref(principal.tenant_id, r["event_id"])
                if r["event_id"] is not None
                else checkpoint_ref(principal.tenant_id, r["checkpoint_seq"]),
                type=r["kind"],
                status=r["status"],
                created_at=r["created_at"],
                next_attempt_at=r["next_attempt_at"],
                finished_at=r["finished_at"],
                attempts=msgspec.convert(r["attempts"], list[Attempt]),
            )
            for r in page
        ]
        next_cursor = _encode_cursor(page[-1]["id"]) if len(rows) > limit else None
        return DeliveryPage(items=items, next_cursor=next_cursor)


def _webhook(row: asyncpg.Record) -> Webhook:
    return Webhook(
        id=row["id"],
        url=row["url"],
        events=row["events"],
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
    )


def _check_id(webhook_id: int) -> None:
    if not 0 < webhook_id < 2**63:
        raise NotFound(f"no webhook with id {webhook_id}")


def _encode_cursor(delivery_id: int) -> str:
    return cursors.encode(delivery_id)


def _decode_cursor(cursor: str) -> int:
    return cursors.decode(cursor, DeliveryId)
