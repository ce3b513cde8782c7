"""Webhooks reach the public internet only: refused at registration, and again at delivery time
against the address actually connected to (DNS rebinding included); errors shown to tenants do not
tell internal ports apart.

Every connection these tests let through goes to a listener on 127.0.0.1 that the test started;
host names are answered by resolvers the tests inject, never by DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from arq import Retry, create_pool
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.webhooks import close_webhooks, deliver_webhook, open_webhooks

from suppress.app import create_app
from suppress.config import Settings
from suppress.db import create_pool as create_db_pool
from suppress.providers.certificates import FetchUnavailable, HttpsFetcher
from suppress.queue import redis_settings
from suppress.sql import Queries
from suppress.webhooks import SecretBox, new_secret
from tests.conftest import TEST_SECRET, Tenant
from tests.integration.test_webhooks import (
    Receiver,
    deliveries_of,
    register,
    run_fan_out,
    write_suppression,
)

Client = AsyncTestClient[Litestar]
PUBLIC = "93.184.215.14"  # answers of the injected resolvers; never connected to

# What the injected resolver answers: names a tenant could point at internal addresses.
ANSWERS: dict[str, list[str]] = {
    "public.example.test": [PUBLIC],
    "internal.example.test": ["10.0.0.1"],
    "loopback.example.test": ["127.0.0.1"],
    "mixed.example.test": [PUBLIC, "127.0.0.1"],
    "mapped.example.test": ["::ffff:127.0.0.1"],
}


def resolver_of(answers: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """A resolver answering from `answers` (an unknown name fails like NXDOMAIN); counts lookups."""

    async def resolve(host: str, port: int) -> list[str]:
        resolve.lookups.append(host)  # type: ignore[attr-defined]
        if host in answers:
            return answers[host]
        try:  # literals (127.0.0.1, 0x7f000001, ...) as the system reads them, without DNS
            return [socket.inet_ntop(socket.AF_INET, socket.inet_aton(host))]
        except OSError:
            pass
        try:
            socket.inet_pton(socket.AF_INET6, host)
            return [host]
        except OSError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    resolve.lookups = []  # type: ignore[attr-defined]
    return resolve


@pytest.fixture(scope="module")
async def resolving_client(settings: Settings) -> AsyncIterator[Client]:
    """The app with the filter on (the default) and the injected resolver."""
    app = create_app(
        msgspec.structs.replace(settings, allow_http_webhooks=True), resolver=resolver_of(ANSWERS)
    )
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def worker_ctx(
    settings: Settings, queries: Queries
) -> AsyncIterator[Callable[..., Awaitable[dict[str, Any]]]]:
    """Makes a worker ctx with the given resolver answers and private-target setting."""
    opened: list[dict[str, Any]] = []

    async def make(
        answers: dict[str, list[str]] | None = None, *, allow_private: bool = False
    ) -> dict[str, Any]:
        pool = await create_db_pool(settings.require_database_url(), size=2)
        redis = await create_pool(
            redis_settings(settings.require_redis_url()),
            default_queue_name=f"test-targets-{secrets.token_hex(4)}",
        )
        worker_settings = settings
        if allow_private:
            worker_settings = msgspec.structs.replace(settings, webhook_allow_private_targets=True)
        context: dict[str, Any] = {
            "pool": pool,
            "queries": queries,
            "settings": worker_settings,
            "redis": redis,
        }
        if answers is not None:
            context["resolver"] = resolver_of(answers)
        open_webhooks(context)
        opened.append(context)
        return context

    yield make
    for context in opened:
        await close_webhooks(context)
        await context["redis"].delete(context["redis"].default_queue_name)
        await context["redis"].aclose()
        await context["pool"].close()


@pytest.fixture(autouse=True)
async def _disable_webhooks_afterwards(db: asyncpg.Connection) -> AsyncIterator[None]:
    yield
    await db.execute(
        """WITH w AS (UPDATE webhooks SET disabled_at = now() WHERE disabled_at IS NULL
                     RETURNING tenant_id, id)
           UPDATE webhook_deliveries d SET status = 'cancelled', next_attempt_at = NULL, finished_at = now()
           FROM w WHERE d.tenant_id = w.tenant_id AND d.webhook_id = w.id AND d.status = 'pending'"""
    )


async def stored_webhook(db: asyncpg.Connection, tenant: Tenant, url: str) -> int:
    """A webhook row as one registered before the address rules (or under a rebinding name) is."""
    box = SecretBox.from_secret(TEST_SECRET)
    webhook_id: int = await db.fetchval(
        "INSERT INTO webhooks (tenant_id, url, events, secret_box) VALUES ($1, $2, NULL, $3) RETURNING id",
        tenant.id,
        url,
        box.seal(tenant.id, new_secret()),
    )
    return webhook_id


async def one_attempt(
    ctx: dict[str, Any], client: Client, tenant: Tenant, db: asyncpg.Connection, address: str
) -> dict[int, str | None]:
    """Write an event, fan it out and make one attempt at each delivery: webhook id -> error."""
    await run_fan_out(ctx, tenant, await write_suppression(client, tenant, address))
    errors: dict[int, str | None] = {}
    for delivery in await deliveries_of(db, tenant):
        if delivery["status"] != "pending" or delivery["attempts"]:
            continue
        with contextlib.suppress(Retry):  # a failed attempt is rescheduled
            await deliver_webhook(ctx, tenant.id, delivery["id"])
        row = await db.fetchrow(
            "SELECT a.error, d.webhook_id FROM webhook_attempts a JOIN webhook_deliveries d"
            " ON d.tenant_id = a.tenant_id AND d.id = a.delivery_id WHERE a.tenant_id = $1 AND a.delivery_id = $2",
            tenant.id,
            delivery["id"],
        )
        assert row is not None
        errors[row["webhook_id"]] = row["error"]
    return errors


# -- registration --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost:8443/hook",
        "https://LOCALHOST./hook",
        "https://api.localhost/hook",
        "https://127.0.0.1:1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/",
        "https://10.255.255.255/",
        "https://172.16.0.1/",
        "https://192.168.1.1/",
        "https://100.64.0.1/",  # CGNAT
        "https://224.0.0.1/",  # multicast
        "https://240.0.0.1/",  # reserved
        "https://255.255.255.255/",
        "https://0.0.0.0/",
        "https://[::1]/",
        "https://[::]/",
        "https://[fe80::1]/",
        "https://[fd00::1]/",
        "https://[ff02::1]/",
        "https://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "https://[::ffff:a9fe:a9fe]/",  # mapped 169.254.169.254, in hex
        "https://[::127.0.0.1]/",  # IPv4-compatible
        "https://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "https://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "https://0x7f000001/",
        "https://2130706433/",
        "https://0177.0.0.1/",
        "https://127.1/",
        "https://127.0.1/",
        "https://0x7f.1/",
        "https://017700000001/",
        "https://0/",
        "https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",  # full-width "localhost"
        "https://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/",  # full-width 127.0.0.1
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://printer.local/",
        "https://router.home.arpa/",
        "https://redis/",  # a single label: an internal name
        "https://internal.example.test/hook",  # resolves to 10.0.0.1
        "https://loopback.example.test/hook",
        "https://mixed.example.test/hook",  # one answer public, one not
        "https://mapped.example.test/hook",
        "http://127.0.0.1:8080/",  # http allowed here, the address still not
    ],
)
async def test_non_public_targets_are_refused_at_registration(
    resolving_client: Client, tenant: Tenant, db: asyncpg.Connection, url: str
) -> None:
    response = await resolving_client.post("/v1/webhooks", json={"url": url}, headers=tenant.auth("admin"))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "non_public_url"
    assert "public internet only" in problem["detail"]
    assert await db.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1", tenant.id) == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://public.example.test/hook",
        "https://unknown.example.test/hook",  # does not resolve now: checked again at each delivery
        f"https://{PUBLIC}/hook",
        "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook",
        "https://8.8.8.8:8443/hook",
    ],
)
async def test_public_targets_are_registered(resolving_client: Client, tenant: Tenant, url: str) -> None:
    assert (await register(resolving_client, tenant, url))["url"] == url


async def test_the_setting_lets_private_targets_register(settings: Settings, tenant: Tenant) -> None:
    app = create_app(
        msgspec.structs.replace(settings, webhook_allow_private_targets=True), resolver=resolver_of(ANSWERS)
    )
    async with AsyncTestClient(app=app) as test_client:
        made = await register(test_client, tenant, "https://127.0.0.1:1/")
        assert made["url"] == "https://127.0.0.1:1/"


def test_the_setting_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).webhook_allow_private_targets is False
    assert Settings.from_env({"SUPPRESS_WEBHOOK_ALLOW_PRIVATE_TARGETS": "1"}).webhook_allow_private_targets
    assert not Settings.from_env(
        {"SUPPRESS_WEBHOOK_ALLOW_PRIVATE_TARGETS": "0"}
    ).webhook_allow_private_targets


# -- delivery ---------------------------------------------------------------------------------------------


async def test_a_loopback_webhook_gets_no_connection_and_ports_read_alike(
    client: Client, tenant: Tenant, db: asyncpg.Connection, worker_ctx: Any, receiver: Receiver
) -> None:
    """Stored loopback webhooks (registered before the rules): the open port gets no connection,
    and its error reads exactly like a closed port's."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    open_hook = await stored_webhook(db, tenant, receiver.url())
    closed_hook = await stored_webhook(db, tenant, f"http://127.0.0.1:{closed}/hook")
    ctx = await worker_ctx()  # the default: filter on, the system resolver
    errors = await one_attempt(ctx, client, tenant, db, "probe@example.no")
    assert receiver.connections == 0 and receiver.requests == []
    assert errors[open_hook] == errors[closed_hook] == "could not connect to the host"


@pytest.mark.parametrize(
    ("host", "reachable"),
    [
        ("2130706433", True),
        ("0x7f000001", True),
        ("127.1", True),
        ("localhost", True),
        ("0177.0.0.1", False),  # httpx refuses to parse it: never requested at all
        ("[::ffff:127.0.0.1]", False),  # reaching it over IPv6 depends on the host's dual stack
    ],
)
async def test_loopback_in_any_notation_gets_no_connection_at_delivery(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    worker_ctx: Any,
    receiver: Receiver,
    host: str,
    reachable: bool,
) -> None:
    """The system resolver reads these as 127.0.0.1; the filter judges what it answered."""
    hook = await stored_webhook(db, tenant, f"http://{host}:{receiver.port}/hook")
    errors = await one_attempt(await worker_ctx(), client, tenant, db, "notation@example.no")
    assert receiver.connections == 0
    assert errors[hook] in ("could not connect to the host", "the URL cannot be requested")
    if not reachable:
        return
    # the same URL does reach the listener once private targets are allowed: the test can fail
    await db.execute(
        "UPDATE webhook_deliveries SET status = 'cancelled', next_attempt_at = NULL, finished_at = now()"
        " WHERE tenant_id = $1",
        tenant.id,
    )
    allowed = await one_attempt(await worker_ctx(allow_private=True), client, tenant, db, "again@example.no")
    assert allowed[hook] is None and receiver.connections == 1


async def test_a_name_rebound_to_loopback_gets_no_connection(
    client: Client, tenant: Tenant, db: asyncpg.Connection, worker_ctx: Any, receiver: Receiver
) -> None:
    """Registered while its name answered a public address; by delivery it answers 127.0.0.1."""
    hook = await stored_webhook(db, tenant, f"http://rebind.example.test:{receiver.port}/hook")
    ctx = await worker_ctx({"rebind.example.test": ["127.0.0.1"]})
    errors = await one_attempt(ctx, client, tenant, db, "rebind@example.no")
    assert ctx["resolver"].lookups == ["rebind.example.test"]
    assert receiver.connections == 0
    assert errors[hook] == "could not connect to the host"


async def test_a_name_with_one_private_answer_gets_no_connection(
    client: Client, tenant: Tenant, db: asyncpg.Connection, worker_ctx: Any, receiver: Receiver
) -> None:
    hook = await stored_webhook(db, tenant, f"http://mixed.example.test:{receiver.port}/hook")
    ctx = await worker_ctx({"mixed.example.test": [PUBLIC, "127.0.0.1"]})
    errors = await one_attempt(ctx, client, tenant, db, "mixed@example.no")
    assert receiver.connections == 0 and errors[hook] == "could not connect to the host"


async def test_the_checked_address_is_connected_with_the_url_s_host(
    client: Client, tenant: Tenant, db: asyncpg.Connection, worker_ctx: Any, receiver: Receiver
) -> None:
    """With private targets allowed, the name is resolved once by the injected resolver and the
    request goes to that address, still naming the URL's host."""
    await stored_webhook(db, tenant, f"http://hooks.example.test:{receiver.port}/hook")
    ctx = await worker_ctx({"hooks.example.test": ["127.0.0.1"]}, allow_private=True)
    errors = await one_attempt(ctx, client, tenant, db, "named@example.no")
    assert list(errors.values()) == [None]
    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
    assert ctx["resolver"].lookups == ["hooks.example.test"]


async def test_redirects_are_not_followed(
    client: Client, tenant: Tenant, db: asyncpg.Connection, worker_ctx: Any, receiver: Receiver
) -> None:
    receiver.statuses = [302]
    hook = await stored_webhook(db, tenant, receiver.url())
    ctx = await worker_ctx(allow_private=True)
    errors = await one_attempt(ctx, client, tenant, db, "redirect@example.no")
    assert errors[hook] == "redirects are not followed" and len(receiver.requests) == 1


# -- TLS: the server name is the URL's host, the connection the checked address --------------------------


def _self_signed(name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


async def test_tls_names_the_url_s_host_to_the_checked_address(
    client: Client, tenant: Tenant, db: asyncpg.Connection, worker_ctx: Any, tmp_path: Any
) -> None:
    cert, key = _self_signed("hooks.example.test")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    seen: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: seen.append(name)  # type: ignore[assignment,misc,func-returns-value]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        hook = await stored_webhook(db, tenant, f"https://hooks.example.test:{port}/hook")
        ctx = await worker_ctx({"hooks.example.test": ["127.0.0.1"]}, allow_private=True)
        errors = await one_attempt(ctx, client, tenant, db, "tls@example.no")
    finally:
        server.close()
    assert seen == ["hooks.example.test"]  # the TLS server name; the connection went to 127.0.0.1
    # the self-signed certificate is not trusted: verification is on
    assert errors[hook] == "the TLS handshake failed (certificate or protocol)"


# -- the other outbound fetch: Amazon SNS certificates and subscription confirmations -----------------


async def test_the_sns_fetcher_does_not_connect_to_loopback(receiver: Receiver) -> None:
    """Its URLs are pinned to SNS hosts before they get here; the address filter is the second line."""
    fetcher = HttpsFetcher()
    try:
        with pytest.raises(FetchUnavailable):
            await fetcher.fetch(f"http://127.0.0.1:{receiver.port}/cert.pem")
    finally:
        await fetcher.aclose()
    assert receiver.connections == 0


async def test_an_underscore_name_is_still_a_name(resolving_client: Client, tenant: Tenant) -> None:
    assert (await register(resolving_client, tenant, "https://my_hooks.example.test/x"))["url"]
