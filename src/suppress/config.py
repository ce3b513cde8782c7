"""Settings from environment variables, and the keys derived from the master secret.

| variable | meaning | default |
|---|---|---|
| SUPPRESS_DATABASE_URL | PostgreSQL DSN | none (``dev`` starts an embedded server) |
| SUPPRESS_REDIS_URL | Redis URL for the arq queue | none (``dev`` starts an embedded server) |
| SUPPRESS_SECRET | master secret, at least 32 characters; every key is derived from it | none |
| SUPPRESS_PUBLIC_URL | base of unsubscribe links, e.g. https://unsub.example.com | http://127.0.0.1:8000 |
| SUPPRESS_TOKEN_KEY_IDS | unsubscribe-token key ids kept, comma separated; the last one mints | 1 |
| SUPPRESS_DB_POOL_SIZE | connections per process | 10 |
| SUPPRESS_DATABASE_REPLICA_URLS | streaming replicas for reads, comma separated (docs/scaling.md) | none |
| SUPPRESS_REPLICA_MAX_LAG_MS | a replica further behind the primary than this is not read | 1000 |
| SUPPRESS_SMS_SENDER | how SMS replies go out: `log` (logged, not sent) or `http` (docs/sms.md) | log |
| SUPPRESS_SMS_HTTP_URL | the HTTP SMS sender's endpoint (http or https URL); needed by `http` | none |
| SUPPRESS_SMS_HTTP_TOKEN | its bearer token (a secret: never logged); needed by `http` | none |
| SUPPRESS_ALLOW_HTTP_WEBHOOKS | 1 lets webhooks use plain http:// URLs (development, tests) | 0 |
| SUPPRESS_WEBHOOK_ALLOW_PRIVATE_TARGETS | 1 lets webhooks reach non-public addresses (dev, tests) | 0 |
| SUPPRESS_IMPORT_MAX_BYTES | largest accepted import upload, in bytes (docs/imports.md) | 512 MiB |
| SUPPRESS_DB_ACQUIRE_TIMEOUT | seconds the API waits for a database connection (docs/operations.md) | 2 |
| SUPPRESS_DB_STATEMENT_TIMEOUT | seconds one database statement of the API may take | 5 |
| SUPPRESS_REDIS_TIMEOUT | seconds one Redis command of the API may take (and to connect) | 2 |
| SUPPRESS_CHECK_COUNTS_FLUSH_SECONDS | seconds between flushes of a process's check counts | 1 |
| SUPPRESS_DEV_DATA_DIR | data folder of `suppress dev`, where the other commands find it | see devstack |

With no SUPPRESS_DATABASE_URL, the commands other than `serve` and `worker` use the settings a
running `suppress dev` wrote to its data folder (devstack/settings_file.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from suppress.errors import SuppressError

MIN_SECRET_LENGTH = 32
ENV_VARS: tuple[str, ...] = (
    "SUPPRESS_DATABASE_URL",
    "SUPPRESS_REDIS_URL",
    "SUPPRESS_SECRET",
    "SUPPRESS_PUBLIC_URL",
    "SUPPRESS_TOKEN_KEY_IDS",
    "SUPPRESS_DB_POOL_SIZE",
    "SUPPRESS_DATABASE_REPLICA_URLS",
    "SUPPRESS_REPLICA_MAX_LAG_MS",
    "SUPPRESS_SMS_SENDER",
    "SUPPRESS_SMS_HTTP_URL",
    "SUPPRESS_SMS_HTTP_TOKEN",
    "SUPPRESS_ALLOW_HTTP_WEBHOOKS",
    "SUPPRESS_WEBHOOK_ALLOW_PRIVATE_TARGETS",
    "SUPPRESS_IMPORT_MAX_BYTES",
    "SUPPRESS_DB_ACQUIRE_TIMEOUT",
    "SUPPRESS_DB_STATEMENT_TIMEOUT",
    "SUPPRESS_REDIS_TIMEOUT",
    "SUPPRESS_CHECK_COUNTS_FLUSH_SECONDS",
    "SUPPRESS_DEV_DATA_DIR",
)
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_IMPORT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_REPLICA_MAX_LAG_MS = 1000
SMS_SENDERS: tuple[str, ...] = ("log", "http")
# Deadlines of the request path (docs/operations.md): a store that does not answer in time is a 503.
DEFAULT_DB_ACQUIRE_TIMEOUT = 2.0
DEFAULT_DB_STATEMENT_TIMEOUT = 5.0
DEFAULT_REDIS_TIMEOUT = 2.0


class ConfigurationError(SuppressError):
    """The service is not configured correctly."""

    code = "configuration"


class MissingSetting(ConfigurationError):
    """A setting the command needs is not set."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service reads from its environment."""

    database_url: str | None = None
    redis_url: str | None = None
    secret: str | None = msgspec.field(default=None)
    public_url: str = DEFAULT_PUBLIC_URL
    token_key_ids: tuple[int, ...] = (1,)
    db_pool_size: int = 10
    replica_urls: tuple[str, ...] = ()  # DSNs may hold passwords: not in __repr__
    replica_max_lag_ms: int = DEFAULT_REPLICA_MAX_LAG_MS
    sms_sender: str = "log"  # one of SMS_SENDERS
    sms_http_url: str | None = None
    sms_http_token: str | None = None  # a secret: not in __repr__
    allow_http_webhooks: bool = False
    webhook_allow_private_targets: bool = False
    import_max_bytes: int = DEFAULT_IMPORT_MAX_BYTES
    db_acquire_timeout: float = DEFAULT_DB_ACQUIRE_TIMEOUT
    db_statement_timeout: float = DEFAULT_DB_STATEMENT_TIMEOUT
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT
    check_counts_flush_seconds: float = 1.0

    def __repr__(self) -> str:  # never let the secret reach a log line or a traceback
        return (
            f"Settings(database_url={'set' if self.database_url else None}, "
            f"redis_url={'set' if self.redis_url else None}, secret={'***' if self.secret else None}, "
            f"replicas={len(self.replica_urls)}, "
            f"public_url={self.public_url!r}, token_key_ids={self.token_key_ids!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from environment variables (see the module docstring)."""
        env = os.environ if environ is None else environ
        raw_ids = env.get("SUPPRESS_TOKEN_KEY_IDS", "1")
        try:
            key_ids = tuple(int(part) for part in raw_ids.split(",") if part.strip())
            pool_size = int(env.get("SUPPRESS_DB_POOL_SIZE", "10"))
            import_max_bytes = int(env.get("SUPPRESS_IMPORT_MAX_BYTES") or DEFAULT_IMPORT_MAX_BYTES)
            max_lag_ms = int(env.get("SUPPRESS_REPLICA_MAX_LAG_MS") or DEFAULT_REPLICA_MAX_LAG_MS)
            deadlines = {
                name: float(env.get(name) or default)
                for name, default in (
                    ("SUPPRESS_DB_ACQUIRE_TIMEOUT", DEFAULT_DB_ACQUIRE_TIMEOUT),
                    ("SUPPRESS_DB_STATEMENT_TIMEOUT", DEFAULT_DB_STATEMENT_TIMEOUT),
                    ("SUPPRESS_REDIS_TIMEOUT", DEFAULT_REDIS_TIMEOUT),
                )
            }
        except ValueError as exc:
            raise ConfigurationError(f"not a number: {exc}") from None
        try:
            flush_seconds = float(env.get("SUPPRESS_CHECK_COUNTS_FLUSH_SECONDS") or 1.0)
        except ValueError:
            flush_seconds = float("nan")  # refused below, with the variable's name
        if not key_ids or any(not 1 <= k <= 255 for k in key_ids) or len(set(key_ids)) != len(key_ids):
            raise ConfigurationError("SUPPRESS_TOKEN_KEY_IDS must list distinct ids from 1 to 255")
        if pool_size < 1:
            raise ConfigurationError("SUPPRESS_DB_POOL_SIZE must be at least 1")
        if import_max_bytes < 1:
            raise ConfigurationError("SUPPRESS_IMPORT_MAX_BYTES must be at least 1")
        if max_lag_ms < 1:
            raise ConfigurationError("SUPPRESS_REPLICA_MAX_LAG_MS must be at least 1")
        replica_urls = tuple(
            part.strip()
            for part in (env.get("SUPPRESS_DATABASE_REPLICA_URLS") or "").split(",")
            if part.strip()
        )
        for url in replica_urls:
            if urlsplit(url).scheme not in {"postgres", "postgresql"}:
                raise ConfigurationError("SUPPRESS_DATABASE_REPLICA_URLS must list postgresql:// DSNs")
        for name, seconds in deadlines.items():
            if not 0 < seconds <= 3600:
                raise ConfigurationError(f"{name} must be a number of seconds above 0 (at most 3600)")
        if not 0.01 <= flush_seconds <= 3600:  # also refuses nan and inf
            raise ConfigurationError("SUPPRESS_CHECK_COUNTS_FLUSH_SECONDS must be from 0.01 to 3600")
        sms_sender = (env.get("SUPPRESS_SMS_SENDER") or "log").strip().lower()
        sms_http_url = (env.get("SUPPRESS_SMS_HTTP_URL") or "").strip() or None
        sms_http_token = (env.get("SUPPRESS_SMS_HTTP_TOKEN") or "").strip() or None
        _check_sms_sender(sms_sender, sms_http_url, sms_http_token)
        allow_http = _flag(env, "SUPPRESS_ALLOW_HTTP_WEBHOOKS")
        allow_private = _flag(env, "SUPPRESS_WEBHOOK_ALLOW_PRIVATE_TARGETS")
        return cls(
            database_url=env.get("SUPPRESS_DATABASE_URL") or None,
            redis_url=env.get("SUPPRESS_REDIS_URL") or None,
            secret=env.get("SUPPRESS_SECRET") or None,
            public_url=(env.get("SUPPRESS_PUBLIC_URL") or DEFAULT_PUBLIC_URL).rstrip("/"),
            token_key_ids=key_ids,
            db_pool_size=pool_size,
            replica_urls=replica_urls,
            replica_max_lag_ms=max_lag_ms,
            sms_sender=sms_sender,
            sms_http_url=sms_http_url,
            sms_http_token=sms_http_token,
            allow_http_webhooks=allow_http,
            webhook_allow_private_targets=allow_private,
            import_max_bytes=import_max_bytes,
            db_acquire_timeout=deadlines["SUPPRESS_DB_ACQUIRE_TIMEOUT"],
            db_statement_timeout=deadlines["SUPPRESS_DB_STATEMENT_TIMEOUT"],
            redis_timeout=deadlines["SUPPRESS_REDIS_TIMEOUT"],
            check_counts_flush_seconds=flush_seconds,
        )

    def require_secret(self) -> str:
        """The master secret, or a clear error when it is missing or too short."""
        if not self.secret:
            raise MissingSetting("SUPPRESS_SECRET is not set; it keys address hashes and tokens")
        if len(self.secret) < MIN_SECRET_LENGTH:
            raise ConfigurationError(f"SUPPRESS_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        return self.secret

    def require_database_url(self) -> str:
        """The PostgreSQL DSN, or a clear error."""
        if not self.database_url:
            raise MissingSetting("SUPPRESS_DATABASE_URL is not set")
        return self.database_url

    def require_redis_url(self) -> str:
        """The Redis URL, or a clear error."""
        if not self.redis_url:
            raise MissingSetting("SUPPRESS_REDIS_URL is not set")
        return self.redis_url


def _flag(env: Mapping[str, str], name: str) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off (unset = off)."""
    value = env.get(name, "").strip().lower()
    if value not in {"", "0", "1", "false", "true", "no", "yes", "off", "on"}:
        raise ConfigurationError(f"{name} must be 1 or 0")
    return value in {"1", "true", "yes", "on"}


def _check_sms_sender(sender: str, url: str | None, token: str | None) -> None:
    """`log`, or `http` with an http(s) URL and a token."""
    if sender not in SMS_SENDERS:
        raise ConfigurationError(f"SUPPRESS_SMS_SENDER must be one of {', '.join(SMS_SENDERS)}")
    if sender != "http":
        return
    parts = urlsplit(url or "")
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigurationError("SUPPRESS_SMS_SENDER=http needs SUPPRESS_SMS_HTTP_URL, an http(s) URL")
    if not token:
        raise ConfigurationError("SUPPRESS_SMS_SENDER=http needs SUPPRESS_SMS_HTTP_TOKEN")


def derive_key(secret: str, purpose: str, length: int = 32) -> bytes:
    """A key for one purpose, derived from the master secret with HKDF-SHA256."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode())
    return hkdf.derive(secret.encode())


class DerivedKeys(msgspec.Struct, frozen=True, kw_only=True):
    """The keys the service uses, all derived from SUPPRESS_SECRET."""

    address_hash_key: bytes
    token_keys: dict[int, bytes]
    current_token_key_id: int

    def __repr__(self) -> str:
        return f"DerivedKeys(token_key_ids={sorted(self.token_keys)!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> DerivedKeys:
        """Derive every key from the settings' secret."""
        secret = settings.require_secret()
        return cls(
            address_hash_key=derive_key(secret, "suppress address hash v1"),
            # 64 bytes: AES-256-SIV, see tokens.py
            token_keys={
                k: derive_key(secret, f"suppress unsubscribe token key {k}", 64)
                for k in settings.token_key_ids
            },
            current_token_key_id=settings.token_key_ids[-1],
        )
