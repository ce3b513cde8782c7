"""Fixtures and helpers of the provider tests: the clock and certificate fetcher doubles, the
worker ctx, and signers written from INTEGRATIONS.md independently of the code under test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from arq import ArqRedis, create_pool
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.providers import process_provider_events

from suppress.app import create_app
from suppress.config import Settings
from suppress.db import create_pool as create_db_pool
from suppress.providers.certificates import FetchFailed
from suppress.queue import redis_settings
from suppress.sql import Queries
from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]

FIXTURES = Path(__file__).parents[2] / "fixtures" / "providers"
SES_ARN = "arn:aws:sns:eu-north-1:123456789012:ses-feedback"
FIXTURE_CERT_URL = (
    "https://sns.eu-north-1.amazonaws.com/SimpleNotificationService-00000000000000000000000000000000.pem"
)


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


# -- test doubles: the clock and the certificate fetcher ----------------------------------------------


class Clock:
    """The inbound path's clock: real time unless a test pins it (to verify old fixtures)."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def __call__(self) -> datetime:
        return self.at or datetime.now(UTC)

    def unix(self, seconds: int | str, plus: float = 0) -> None:
        self.at = datetime.fromtimestamp(int(seconds) + plus, UTC)


class FakeFetcher:
    """Serves documents by URL (certificates, subscription confirmations) and records each fetch."""

    def __init__(self) -> None:
        self.documents: dict[str, bytes] = {}
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url in self.documents:
            return self.documents[url]
        raise FetchFailed("HTTP 404")

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def fetcher() -> FakeFetcher:
    served = FakeFetcher()
    served.documents[FIXTURE_CERT_URL] = fixture("ses_sns_bounce.json")["test_cert_pem"].encode()
    return served


@pytest.fixture(scope="module")
async def pclient(settings: Settings, clock: Clock, fetcher: FakeFetcher) -> AsyncIterator[Client]:
    """The app with the fake fetcher and the test clock injected."""
    app = create_app(settings)
    app.state.sns_fetcher = fetcher
    app.state.provider_clock = clock
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def _real_time(clock: Clock, fetcher: FakeFetcher) -> None:
    clock.at = None
    fetcher.fetched.clear()


@pytest.fixture
async def wctx(settings: Settings, queries: Queries, fetcher: FakeFetcher) -> AsyncIterator[dict[str, Any]]:
    """A worker's ctx; its arq pool enqueues into a queue of its own that no worker reads."""
    pool = await create_db_pool(settings.require_database_url(), size=2)
    redis = await create_pool(
        redis_settings(settings.require_redis_url()),
        default_queue_name=f"test-providers-{secrets.token_hex(4)}",
    )
    yield {"pool": pool, "queries": queries, "settings": settings, "redis": redis, "sns_fetcher": fetcher}
    for raw in await redis.zrange(redis.default_queue_name, 0, -1):
        await redis.delete(f"arq:job:{raw.decode()}")
    await redis.delete(redis.default_queue_name)
    await redis.aclose()
    await pool.close()


async def queued(redis: ArqRedis) -> list[str]:
    return [raw.decode() for raw in await redis.zrange(redis.default_queue_name, 0, -1)]


# -- shared helpers --------------------------------------------------------------------------------------


async def configure(client: Client, tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/providers", json=body, headers=tenant.auth("admin"))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def inbound_path(provider: dict[str, Any]) -> str:
    return urlsplit(provider["inbound_url"]).path


async def events_of(db: asyncpg.Connection, tenant: Tenant) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, event_key, status, outcome FROM provider_events WHERE tenant_id = $1 ORDER BY id",
        tenant.id,
    )


async def apply_pending(wctx: dict[str, Any], db: asyncpg.Connection, tenant: Tenant) -> dict[str, int]:
    """Run the worker job on the tenant's pending provider events."""
    ids = [
        r["id"]
        for r in await db.fetch(
            "SELECT id FROM provider_events WHERE tenant_id = $1 AND status = 'pending' ORDER BY id",
            tenant.id,
        )
    ]
    return await process_provider_events(wctx, tenant.id, ids) if ids else {}


async def ledger(db: asyncpg.Connection, tenant: Tenant) -> list[dict[str, Any]]:
    rows = await db.fetch(
        """SELECT e.kind, e.source, e.actor, e.occurred_at, e.data::text AS data, c.name AS campaign,
                  t.name AS topic, coalesce(e.personal, '{}')::text AS personal
           FROM events e LEFT JOIN campaigns c ON c.id = e.campaign_id LEFT JOIN topics t ON t.id = e.topic_id
           WHERE e.tenant_id = $1 ORDER BY e.id""",
        tenant.id,
    )
    # personal fields (SMS text, ...) are kept apart by the ledger, for erasure; read them as one
    return [{**dict(r.items()), "data": json.loads(r["data"]) | json.loads(r["personal"])} for r in rows]


def refused(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.text


# -- signers (written from INTEGRATIONS.md, independently of the code under test) --------------------


_SNS_NOTIFICATION = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
_SNS_CONFIRMATION = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]


@dataclass
class SnsSigner:
    """A key and self-signed certificate served by the fake fetcher, signing SNS messages."""

    key: rsa.RSAPrivateKey
    cert_url: str

    def sign(
        self, message: dict[str, Any], version: str = "2", key: rsa.RSAPrivateKey | None = None
    ) -> bytes:
        keys = _SNS_NOTIFICATION if message["Type"] == "Notification" else _SNS_CONFIRMATION
        text = "".join(f"{k}\n{message[k]}\n" for k in keys if k in message).encode()
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.key).sign(text, padding.PKCS1v15(), algorithm)
        signed = {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": message.get("SigningCertURL", self.cert_url),
        }
        return json.dumps(signed).encode()


def self_signed(key: rsa.RSAPrivateKey, *, days: int = 365) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test.invalid")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sns(fetcher: FakeFetcher) -> SnsSigner:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    url = "https://sns.eu-north-1.amazonaws.com/SimpleNotificationService-test.pem"
    fetcher.documents[url] = self_signed(key)
    return SnsSigner(key, url)


def sns_notification(
    message: dict[str, Any] | str, *, topic_arn: str = SES_ARN, at: datetime | None = None
) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": secrets.token_hex(16),
        "TopicArn": topic_arn,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }


def ses_bounce(
    address: str,
    bounce_type: str = "Permanent",
    *,
    message_id: str | None = None,
    campaign: str | None = None,
) -> dict[str, Any]:
    tags = {"ses:configuration-set": ["marketing"]} | ({"campaign": [campaign]} if campaign else {})
    return {
        "eventType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": address, "status": "5.1.1"}],
            "timestamp": datetime.now(UTC).isoformat(),
            "feedbackId": secrets.token_hex(8),
        },
        "mail": {"messageId": message_id or secrets.token_hex(12), "destination": [address], "tags": tags},
    }


@dataclass
class SendGridSigner:
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def verification_key(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = str(timestamp if timestamp is not None else int(datetime.now(UTC).timestamp()))
        signature = self.key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Timestamp": ts,
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        }


def mailgun_body(
    key: str, event: dict[str, Any], *, timestamp: int | None = None, token: str | None = None
) -> bytes:
    ts = str(timestamp if timestamp is not None else int(datetime.now(UTC).timestamp()))
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {"signature": {"timestamp": ts, "token": token, "signature": signature}, "event-data": event}
    ).encode()


def twilio_signature(token: str, url: str, params: list[tuple[str, str]]) -> str:
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    data = url + "".join(n + v for n in sorted(values) for v in sorted(values[n]))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def vonage_sig(params: dict[str, str], secret: str, method: str = "sha256") -> str:
    text = "".join(f"&{k}={params[k].replace('&', '_').replace('=', '_')}" for k in sorted(params))
    if method == "md5hash":
        return hashlib.md5(text.encode() + secret.encode(), usedforsecurity=False).hexdigest()
    return hmac.new(secret.encode(), text.encode(), getattr(hashlib, method)).hexdigest()


# -- configuration ---------------------------------------------------------------------------------------

SECRETS = {
    "sendgrid": None,  # a public key: filled per test
    "mailgun": "mg-signing-key-" + "s" * 20,
    "postmark": "pm-password-" + "p" * 20,
    "twilio": "tw-auth-token-" + "t" * 20,
    "vonage": "vn-signature-secret-" + "v" * 10,
}


def every_kind(sendgrid_key: str) -> list[dict[str, Any]]:
    return [
        {"kind": "ses", "topic_arns": [SES_ARN], "label": "SES eu-north-1"},
        {"kind": "sendgrid", "verification_key": sendgrid_key, "topics": {"1234": "newsletter"}},
        {"kind": "mailgun", "signing_key": SECRETS["mailgun"], "topics": {"newsletter": "newsletter"}},
        {"kind": "postmark", "username": "postmark", "password": SECRETS["postmark"]},
        {"kind": "twilio", "auth_token": SECRETS["twilio"], "url": "https://hooks.example.com/sms/twilio"},
        {"kind": "vonage", "signature_secret": SECRETS["vonage"], "signature_method": "sha512"},
    ]


POSTMARK_BOUNCE = {
    "RecordType": "Bounce",
    "MessageStream": "outbound",
    "ID": 4323372036,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Tag": "spring-2026",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Metadata": {"campaign": "spring-2026"},
    "Email": "kari@example.no",
    "BouncedAt": "2026-03-02T10:15:31.4123456Z",
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
