"""Provider configurations per tenant: what `POST /v1/providers` accepts, how it is stored (settings
as JSON, credentials sealed with AES-256-GCM under a key derived from SUPPRESS_SECRET), and the
listing that never shows a credential."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
from msgspec import Meta

from suppress.config import derive_key
from suppress.errors import Conflict, InvalidInput, NotFound, UnknownTopic
from suppress.models import TopicName
from suppress.providers import sendgrid
from suppress.providers.model import (
    KINDS,
    LoadedProvider,
    ProviderSettings,
    Replies,
    VonageMethod,
)
from suppress.providers.ses import TOPIC_ARN_PATTERN
from suppress.sql import Queries
from suppress.tenants import Principal
from suppress.webhooks import SecretBox, validate_url

SECRET_KEY_PURPOSE: Final = "suppress provider credentials v1"  # noqa: S105  (HKDF info)
MAX_ACTIVE_PROVIDERS: Final = 20

Label = Annotated[str, Meta(min_length=1, max_length=200)]
# Shared secrets someone chose: long enough that guessing is hopeless.
Secret = Annotated[str, Meta(min_length=16, max_length=512)]
# Secrets a provider issued (Mailgun signing key, Twilio auth token, Vonage signature secret).
IssuedSecret = Annotated[str, Meta(min_length=8, max_length=512)]
TopicArn = Annotated[str, Meta(max_length=400, pattern=TOPIC_ARN_PATTERN)]
MaxAge = Annotated[int, Meta(ge=60, le=172_800)]
CampaignKey = Annotated[str, Meta(min_length=1, max_length=100)]
HeaderName = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9-]+$")]
UserName = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^:\s]+$")]
ScopeKey = Annotated[str, Meta(min_length=1, max_length=256)]
TopicMap = Annotated[dict[ScopeKey, TopicName], Meta(max_length=200)]
AsmGroupMap = Annotated[dict[Annotated[str, Meta(pattern=r"^[0-9]{1,12}$")], TopicName], Meta(max_length=200)]


class ProviderIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    """POST /v1/providers: one provider configuration, chosen by `kind`."""

    label: Label | None = None

    def __repr__(self) -> str:  # the credentials never reach a log line or a traceback
        return f"{type(self).__name__}(label={self.label!r})"


class SesIn(ProviderIn, frozen=True, tag="ses"):
    """Amazon SES via SNS: the topics whose messages are taken (SNS signs; no shared secret)."""

    topic_arns: Annotated[list[TopicArn], Meta(min_length=1, max_length=20)]
    signature_versions: Annotated[list[Literal["1", "2"]], Meta(min_length=1, max_length=2)] = msgspec.field(
        default_factory=lambda: ["1", "2"]
    )
    max_age_seconds: MaxAge | None = None
    topics: TopicMap = msgspec.field(default_factory=dict)
    campaign_key: CampaignKey = "campaign"


class SendGridIn(ProviderIn, frozen=True, tag="sendgrid"):
    """SendGrid Event Webhook: its signed-webhook verification key (P-256, Base64 or PEM)."""

    verification_key: Annotated[str, Meta(min_length=40, max_length=2000)]
    max_age_seconds: MaxAge | None = None
    topics: AsmGroupMap = msgspec.field(default_factory=dict)
    campaign_key: CampaignKey = "campaign"


class MailgunIn(ProviderIn, frozen=True, tag="mailgun"):
    """Mailgun: the HTTP webhook signing key."""

    signing_key: IssuedSecret
    max_age_seconds: MaxAge | None = None
    topics: TopicMap = msgspec.field(default_factory=dict)
    campaign_key: CampaignKey = "campaign"


class PostmarkIn(ProviderIn, frozen=True, tag="postmark"):
    """Postmark: basic-auth credentials and/or a secret in a custom header (both required if both
    are given)."""

    username: UserName | None = None
    password: Secret | None = None
    header_name: HeaderName | None = None
    header_secret: Secret | None = None
    topics: TopicMap = msgspec.field(default_factory=dict)
    campaign_key: CampaignKey = "campaign"


class TwilioIn(ProviderIn, frozen=True, tag="twilio"):
    """Twilio inbound SMS: the account auth token and the public URL Twilio requests (and signs);
    without `url`, the service's own inbound URL for this configuration."""

    auth_token: IssuedSecret
    url: Annotated[str, Meta(min_length=1, max_length=2000)] | None = None
    replies: Replies = "auto"


class VonageIn(ProviderIn, frozen=True, tag="vonage"):
    """Vonage SMS API inbound SMS: the signature secret and the signing method chosen for it."""

    signature_secret: IssuedSecret
    signature_method: VonageMethod = "sha256"
    max_age_seconds: MaxAge | None = None
    replies: Replies = "always"


ProviderConfigIn = SesIn | SendGridIn | MailgunIn | PostmarkIn | TwilioIn | VonageIn
_CREDENTIAL_FIELDS: Final = (
    "verification_key",
    "signing_key",
    "username",
    "password",
    "header_secret",
    "auth_token",
    "signature_secret",
)


class Provider(msgspec.Struct, frozen=True, kw_only=True):
    """A stored configuration as shown: settings, the names of its credentials (never their
    values) and the URL to give the provider."""

    id: int
    kind: str
    label: str | None
    inbound_url: str
    settings: dict[str, Any]
    credentials: list[str]
    created_at: datetime
    deleted_at: datetime | None = None


EventStatus = Literal["pending", "processed", "failed"]


class ProviderEventView(msgspec.Struct, frozen=True, kw_only=True):
    """One acknowledged provider event: the provider's id for it, its state, what applying it did."""

    id: int
    event_key: str
    received_at: datetime
    status: EventStatus
    attempts: int
    processed_at: datetime | None
    outcome: list[dict[str, Any]] | None
    error: str | None


class _Sealed(msgspec.Struct, frozen=True):
    kind: str
    credentials: dict[str, str]


def provider_box(master_secret: str) -> SecretBox:
    """The box that seals provider credentials: the webhook secrets' AES-GCM box under its own key."""
    return SecretBox(derive_key(master_secret, SECRET_KEY_PURPOSE))


def inbound_path(kind: str, provider_id: int) -> str:
    return f"/v1/providers/{kind}/{provider_id}"


def split(data: ProviderIn) -> tuple[ProviderSettings, dict[str, str]]:
    """The settings and the credentials of a configuration."""
    fields = msgspec.structs.asdict(data)
    credentials = {k: v for k in _CREDENTIAL_FIELDS if isinstance(v := fields.get(k), str)}
    if isinstance(data, PostmarkIn) and data.header_secret is not None and data.header_name is None:
        fields["header_name"] = "X-Webhook-Secret"
    settings = msgspec.convert(
        {k: v for k, v in fields.items() if k not in _CREDENTIAL_FIELDS and k != "label" and v is not None},
        ProviderSettings,
    )
    return settings, credentials


class ProviderConfigs:
    """Storing, listing and deleting provider configurations, and opening one for an inbound request."""

    def __init__(self, pool: asyncpg.Pool, queries: Queries, box: SecretBox, *, public_url: str) -> None:
        self._pool = pool
        self._q = queries
        self._box = box
        self._public_url = public_url.rstrip("/")

    def __repr__(self) -> str:
        return "ProviderConfigs()"

    async def create(self, principal: Principal, data: ProviderIn) -> Provider:
        """Store a configuration; its credentials are sealed and never shown again."""
        kind = type(data).__struct_config__.tag
        assert isinstance(kind, str) and kind in KINDS
        await self._check(principal, data)
        settings, credentials = split(data)
        sealed = self._box.seal(principal.tenant_id, msgspec.json.encode(_Sealed(kind, credentials)).decode())
        row = await self._pool.fetchrow(
            self._q.create_provider,
            principal.tenant_id,
            kind,
            data.label,
            msgspec.to_builtins(settings),
            sealed,
            sorted(credentials),
            MAX_ACTIVE_PROVIDERS,
        )
        if row is None:
            raise Conflict(f"at most {MAX_ACTIVE_PROVIDERS} provider configurations can be active")
        return self._provider(row)

    async def list_providers(self, principal: Principal) -> list[Provider]:
        """Every configuration of the tenant, newest first, deleted ones included."""
        return [
            self._provider(r) for r in await self._pool.fetch(self._q.list_providers, principal.tenant_id)
        ]

    async def get(self, principal: Principal, provider_id: int) -> Provider:
        _check_id(provider_id)
        row = await self._pool.fetchrow(self._q.provider_by_id, principal.tenant_id, provider_id)
        if row is None:
            raise NotFound(f"no provider configuration with id {provider_id}")
        return self._provider(row)

    async def delete(self, principal: Principal, provider_id: int, now: datetime) -> Provider:
        """Delete a configuration: its credentials are destroyed and its inbound URL stops working."""
        _check_id(provider_id)
        row = await self._pool.fetchrow(self._q.delete_provider, principal.tenant_id, provider_id, now)
        if row is None:
            raise NotFound(f"no provider configuration with id {provider_id}")
        return self._provider(row)

    async def events(
        self,
        principal: Principal,
        provider_id: int,
        *,
        status: EventStatus | None,
        before: int | None,
        limit: int,
    ) -> list[ProviderEventView]:
        """One page of a configuration's events, newest first (pass the last id as `before`)."""
        await self.get(principal, provider_id)
        rows = await self._pool.fetch(
            self._q.list_provider_events, principal.tenant_id, provider_id, status, before, limit
        )
        return [msgspec.convert(dict(r.items()), ProviderEventView) for r in rows]

    async def load(self, kind: str, provider_id: int) -> LoadedProvider | None:
        """The active configuration an inbound request names, credentials opened; None if none."""
        if kind not in KINDS or not 0 < provider_id < 2**63:
            return None
        row = await self._pool.fetchrow(self._q.provider_for_inbound, provider_id, kind)
        if row is None:
            return None
        sealed = msgspec.json.decode(self._box.open(row["tenant_id"], row["secret_box"]), type=_Sealed)
        if sealed.kind != kind:  # a box moved between configurations of different kinds
            raise ValueError(f"provider {provider_id}: sealed credentials are for {sealed.kind!r}")
        return LoadedProvider(
            tenant_id=row["tenant_id"],
            id=row["id"],
            kind=kind,
            settings=msgspec.convert(row["settings"], ProviderSettings),
            credentials=sealed.credentials,
            inbound_url=self._public_url + inbound_path(kind, provider_id),
        )

    async def _check(self, principal: Principal, data: ProviderIn) -> None:
        """What the types cannot say: keys that load, credentials that come in pairs, topics that exist."""
        if isinstance(data, SendGridIn):
            sendgrid.load_verification_key(data.verification_key)
        elif isinstance(data, PostmarkIn):
            if (data.username is None) != (data.password is None):
                raise InvalidInput("basic auth needs both username and password")
            if data.header_name is not None and data.header_secret is None:
                raise InvalidInput("header_name needs header_secret")
            if data.username is None and data.header_secret is None:
                raise InvalidInput("give username and password, or header_secret (or both)")
            if data.header_name is not None and data.header_name.lower() in (
                "authorization",
                "host",
                "cookie",
            ):
                raise InvalidInput(f"{data.header_name} cannot carry the shared secret")
        elif isinstance(data, TwilioIn) and data.url is not None:
            try:
                validate_url(data.url, allow_http=False)
            except InvalidInput:
                raise InvalidInput(
                    "url must be the absolute https:// URL Twilio requests, without credentials or #fragment"
                ) from None
        topics = getattr(data, "topics", {})
        if topics:
            known = {r["name"] for r in await self._pool.fetch(self._q.list_topics, principal.tenant_id)}
            unknown = sorted(set(topics.values()) - known)
            if unknown:
                raise UnknownTopic(f"no topic named {unknown[0]!r}; create it with POST /v1/topics")

    def _provider(self, row: asyncpg.Record) -> Provider:
        settings = msgspec.convert(row["settings"], ProviderSettings)
        return Provider(
            id=row["id"],
            kind=row["kind"],
            label=row["label"],
            inbound_url=self._public_url + inbound_path(row["kind"], row["id"]),
            settings=msgspec.to_builtins(settings),
            credentials=list(row["credential_names"]),
            created_at=row["created_at"],
            deleted_at=row["deleted_at"],
        )


def _check_id(provider_id: int) -> None:
    if not 0 < provider_id < 2**63:
        raise NotFound(f"no provider configuration with id {provider_id}")
