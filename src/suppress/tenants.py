"""Tenants (one sending organisation = one controller) and their scoped, hashed API keys."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from typing import Annotated

import asyncpg
import msgspec
from msgspec import Meta

from suppress.decisions import tenant_policy
from suppress.errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, NotFound
from suppress.models import SCOPES, SuppressionReason
from suppress.policy import TenantPolicy
from suppress.sql import Queries

KEY_PREFIX = "sk_"
# A key is "sk_" + 43 base64url characters (256 random bits); anything else is rejected unread.
_KEY_LENGTH = len(KEY_PREFIX) + 43


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: an API key, its scopes, and its tenant's settings."""

    key_id: int
    scopes: frozenset[str]
    tenant_id: int
    tenant_name: str
    default_region: str
    soft_bounce_suppress_days: int
    require_notice_version: bool = False
    consent_validity_days: int | None = None
    policy: TenantPolicy

    @property
    def actor(self) -> str:
        """How the ledger names this caller."""
        return f"api_key:{self.key_id}"

    def require(self, scope: str) -> None:
        """Raise Forbidden unless the key has `scope` (admin has every scope)."""
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this operation needs an API key with the {scope!r} scope")


class NewKey(msgspec.Struct, frozen=True, kw_only=True):
    """A freshly made API key: the only time its plaintext exists."""

    key_id: int
    tenant_id: int
    api_key: str
    scopes: list[str]


def hash_api_key(api_key: str) -> bytes:
    """Keys are 256 random bits, so a plain SHA-256 is a safe one-way store."""
    return hashlib.sha256(api_key.encode()).digest()


def parse_scopes(raw: str | Iterable[str]) -> list[str]:
    """Validate a comma-separated list (or iterable) of scopes."""
    items = [s.strip() for s in (raw.split(",") if isinstance(raw, str) else raw) if s.strip()]
    unknown = sorted(set(items) - set(SCOPES))
    if not items or unknown:
        raise InvalidInput(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
    return sorted(set(items), key=SCOPES.index)


async def create_tenant(conn: asyncpg.Connection, queries: Queries, name: str) -> NewKey:
    """Create a tenant and its first key, with the admin scope."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidInput("a tenant name is 1 to 200 characters")
    async with conn.transaction():
        if await conn.fetchval(queries.tenant_by_name, name) is not None:
            raise Conflict(f"a tenant named {name!r} already exists")
        tenant_id: int = await conn.fetchval(queries.create_tenant, name)
        return await create_api_key(conn, queries, tenant_id, ["admin"], label="created with tenant")


async def create_api_key(
    conn: asyncpg.Connection,
    queries: Queries,
    tenant_id: int,
    scopes: Iterable[str],
    *,
    label: str | None = None,
) -> NewKey:
    """Make a new key for a tenant; only its hash is stored."""
    scope_list = parse_scopes(scopes)
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        key_id: int = await conn.fetchval(
            queries.create_api_key, tenant_id, hash_api_key(api_key), api_key[:8], scope_list, label
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFound(f"no tenant with id {tenant_id}") from None
    return NewKey(key_id=key_id, tenant_id=tenant_id, api_key=api_key, scopes=scope_list)


async def resolve_tenant(conn: asyncpg.Connection, queries: Queries, ref: str) -> int:
    """A tenant id from its id or its name."""
    if ref.isdigit():
        return int(ref)
    tenant_id: int | None = await conn.fetchval(queries.tenant_by_name, ref)
    if tenant_id is None:
        raise NotFound(f"no tenant named {ref!r}")
    return tenant_id


class Authenticator:
    """Turns a bearer key into a Principal, caching answers briefly to spare the hot path a query.

    A revoked key stops working within `ttl` seconds.
    """

    def __init__(self, pool: asyncpg.Pool, queries: Queries, ttl: float = 5.0) -> None:
        self._pool = pool
        self._queries = queries
        self._ttl = ttl
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}

    def forget_tenant(self, tenant_id: int) -> None:
        """Drop cached principals of one tenant (its settings changed)."""
        self._cache = {k: v for k, v in self._cache.items() if v[1] is None or v[1].tenant_id != tenant_id}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an `Authorization: Bearer sk_...` header, or NotAuthenticated."""
        if not authorization:
            raise NotAuthenticated()
        scheme, _, api_key = authorization.partition(" ")
        api_key = api_key.strip()
        if scheme.lower() != "bearer" or len(api_key) != _KEY_LENGTH or not api_key.startswith(KEY_PREFIX):
            raise NotAuthenticated()
        key_hash = hash_api_key(api_key)
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            row = await self._pool.fetchrow(self._queries.authenticate_api_key, key_hash)
            principal = None if row is None else _principal(row)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_hash] = (now + self._ttl, principal)
        if principal is None:
            raise NotAuthenticated("the API key is unknown or revoked")
        return principal


def _principal(row: asyncpg.Record) -> Principal:
    return Principal(
        key_id=row["key_id"],
        scopes=frozenset(row["scopes"]),
        tenant_id=row["tenant_id"],
        tenant_name=row["tenant_name"],
        default_region=row["default_region"],
        soft_bounce_suppress_days=row["soft_bounce_suppress_days"],
        require_notice_version=row["require_notice_version"],
        consent_validity_days=row["consent_validity_days"],
        policy=tenant_policy(row),
    )


Rate = Annotated[float, Meta(ge=0, le=1)]
# A line a rate is compared against with >=: zero would flag every campaign.
AlertLine = Annotated[float, Meta(gt=0, le=1)]
Days = Annotated[int, Meta(ge=1, le=3650)]
Region = Annotated[
    str, Meta(pattern=r"^[A-Z]{2}$", description="a country code of two capital letters, such as NO")
]
BlockingReason = SuppressionReason
DisplayName = Annotated[str, Meta(min_length=1, max_length=200)]


class NoticeText(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the person is told when they say yes on the preference page, and its version."""

    text: Annotated[str, Meta(min_length=1, max_length=2000)]
    version: Annotated[str, Meta(min_length=1, max_length=100)]


class ConsentNotice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The consent notice of the preference page, in both of its languages (the page may be either)."""

    nb: NoticeText
    en: NoticeText


class TenantSettings(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's policy settings (POLICY.md, "Tenant settings")."""

    default_region: Region
    relationship_window_days: Days
    soft_opt_in_without_topic: bool
    transactional_blocked_by: list[BlockingReason]
    soft_bounce_threshold: Annotated[int, Meta(ge=1, le=100)]
    soft_bounce_window_days: Days
    soft_bounce_suppress_days: Days
    complaint_alert_rate: Rate
    complaint_stop_rate: Rate
    unsubscribe_alert_rate: AlertLine
    require_notice_version: bool
    consent_validity_days: Days | None
    #: how the recipient's pages name the sender (null: the tenant's name)
    display_name: DisplayName | None = None
    #: set: the preference page offers topics the person has no basis for, as a consent under this
    #: notice (its version recorded); null: the page offers opt-outs only
    consent_notice: ConsentNotice | None = None


class TenantSettingsPatch(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """PATCH /v1/settings: the fields to change; leave out the rest (null clears consent_validity_days,
    display_name and consent_notice)."""

    default_region: Region | msgspec.UnsetType = msgspec.UNSET
    relationship_window_days: Days | msgspec.UnsetType = msgspec.UNSET
    soft_opt_in_without_topic: bool | msgspec.UnsetType = msgspec.UNSET
    transactional_blocked_by: list[BlockingReason] | msgspec.UnsetType = msgspec.UNSET
    soft_bounce_threshold: Annotated[int, Meta(ge=1, le=100)] | msgspec.UnsetType = msgspec.UNSET
    soft_bounce_window_days: Days | msgspec.UnsetType = msgspec.UNSET
    soft_bounce_suppress_days: Days | msgspec.UnsetType = msgspec.UNSET
    complaint_alert_rate: Rate | msgspec.UnsetType = msgspec.UNSET
    complaint_stop_rate: Rate | msgspec.UnsetType = msgspec.UNSET
    unsubscribe_alert_rate: AlertLine | msgspec.UnsetType = msgspec.UNSET
    require_notice_version: bool | msgspec.UnsetType = msgspec.UNSET
    consent_validity_days: Days | msgspec.UnsetType | None = msgspec.UNSET
    display_name: DisplayName | msgspec.UnsetType | None = msgspec.UNSET
    consent_notice: ConsentNotice | msgspec.UnsetType | None = msgspec.UNSET


async def tenant_settings(pool: asyncpg.Pool, queries: Queries, tenant_id: int) -> TenantSettings:
    """The tenant's current settings."""
    row = await pool.fetchrow(queries.tenant_settings, tenant_id)
    if row is None:
        raise NotFound(f"no tenant with id {tenant_id}")
    values = dict(row.items())
    values.pop("name")
    return msgspec.convert(values, TenantSettings, strict=False)


async def update_tenant_settings(
    pool: asyncpg.Pool, queries: Queries, tenant_id: int, patch: TenantSettingsPatch
) -> TenantSettings:
    """Merge `patch` into the settings and store them; takes effect for new requests at once."""
    current = msgspec.to_builtins(await tenant_settings(pool, queries, tenant_id))
    changes = {k: v for k, v in msgspec.structs.asdict(patch).items() if v is not msgspec.UNSET}
    merged = msgspec.convert({**current, **changes}, TenantSettings)
    if merged.complaint_alert_rate > merged.complaint_stop_rate:
        raise InvalidInput("complaint_alert_rate must not be above complaint_stop_rate")
    await pool.execute(
        queries.update_tenant_settings,
        tenant_id,
        merged.default_region,
        merged.relationship_window_days,
        merged.soft_opt_in_without_topic,
        merged.transactional_blocked_by,
        merged.soft_bounce_threshold,
        merged.soft_bounce_window_days,
        merged.soft_bounce_suppress_days,
        merged.complaint_alert_rate,
        merged.complaint_stop_rate,
        merged.require_notice_version,
        merged.consent_validity_days,
        merged.unsubscribe_alert_rate,
        merged.display_name,
        None if merged.consent_notice is None else msgspec.to_builtins(merged.consent_notice),
    )
    return merged
