"""Dashboard sessions are server-side (signing out or revoking the key ends every copy of the
cookie) and sign-in attempts are limited per client address."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.config import Settings
from suppress.ratelimit import LOGIN_ATTEMPTS, LOGIN_WINDOW_SECONDS, LoginLimiter, client_key
from suppress.sessions import SESSION_SECONDS
from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]
COOKIE = "__Host-suppress_dashboard"  # the test settings' public URL is https
TEST_CLIENT_KEY = "suppress:dashboard-login:testclient"  # the address the test client reports


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.from_url(settings.require_redis_url())
    await connection.delete(TEST_CLIENT_KEY)
    yield connection
    await connection.delete(TEST_CLIENT_KEY)
    await connection.aclose()


async def sign_in(client: Client, key: str) -> tuple[int, str | None]:
    response = await client.post("/dashboard/login", data={"api_key": key}, follow_redirects=False)
    client.cookies.clear()
    value = None
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == COOKIE and rest.split(";")[0]:
            value = rest.split(";")[0]
    return response.status_code, value


async def dashboard(client: Client, cookie: str) -> int:
    response = await client.get(
        "/dashboard", headers={"Cookie": f"{COOKIE}={cookie}"}, follow_redirects=False
    )
    client.cookies.clear()
    return response.status_code


async def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(
    client: Client, tenant: Tenant, db: asyncpg.Connection, redis: aioredis.Redis
) -> None:
    status, cookie = await sign_in(client, tenant.keys["read"])
    assert status == 303 and cookie
    copied = str(cookie)  # e.g. lifted from the browser by someone else
    assert await dashboard(client, cookie) == 200
    assert await dashboard(client, copied) == 200
    response = await client.post(
        "/dashboard/logout", headers={"Cookie": f"{COOKIE}={cookie}"}, follow_redirects=False
    )
    client.cookies.clear()
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"
    assert await dashboard(client, copied) == 303  # the copy no longer works
    assert (
        await db.fetchval(
            "SELECT count(*) FROM dashboard_sessions WHERE id_hash = $1",
            hashlib.sha256(copied.encode()).digest(),
        )
        == 0
    )


async def test_revoking_the_key_ends_its_sessions(
    client: Client, tenant: Tenant, db: asyncpg.Connection, redis: aioredis.Redis
) -> None:
    _, cookie = await sign_in(client, tenant.keys["read"])
    assert cookie and await dashboard(client, cookie) == 200
    await db.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND 'read' = ANY(scopes)", tenant.id
    )
    assert await dashboard(client, cookie) == 303


async def test_the_session_is_stored_hashed_and_names_no_key(
    client: Client, tenant: Tenant, db: asyncpg.Connection, redis: aioredis.Redis
) -> None:
    _, cookie = await sign_in(client, tenant.keys["read"])
    assert cookie and tenant.keys["read"] not in cookie and len(cookie) >= 40
    row = await db.fetchrow(
        "SELECT s.id_hash, s.created_at, s.expires_at, k.scopes FROM dashboard_sessions s"
        " JOIN api_keys k ON k.id = s.key_id WHERE s.tenant_id = $1",
        tenant.id,
    )
    assert row is not None and row["id_hash"] == hashlib.sha256(cookie.encode()).digest()
    assert row["expires_at"] - row["created_at"] == timedelta(seconds=SESSION_SECONDS)
    assert row["scopes"] == ["read"]


@pytest.mark.parametrize("cookie", ["garbage", "", "x" * 500, "v1.eyJ.abc", "A" * 43])
async def test_unknown_sessions_are_refused(client: Client, redis: aioredis.Redis, cookie: str) -> None:
    assert await dashboard(client, cookie) == 303


async def test_an_expired_session_is_refused(
    client: Client, tenant: Tenant, db: asyncpg.Connection, redis: aioredis.Redis
) -> None:
    _, cookie = await sign_in(client, tenant.keys["read"])
    assert cookie
    await db.execute(
        "UPDATE dashboard_sessions SET expires_at = $2 WHERE id_hash = $1",
        hashlib.sha256(cookie.encode()).digest(),
        datetime.now(UTC) - timedelta(seconds=1),
    )
    assert await dashboard(client, cookie) == 303


async def test_sign_in_attempts_are_limited_per_client(
    client: Client, tenant: Tenant, db: asyncpg.Connection, redis: aioredis.Redis
) -> None:
    for _ in range(LOGIN_ATTEMPTS):
        assert (await sign_in(client, "sk_" + "x" * 43))[0] == 401
    response = await client.post(
        "/dashboard/login", data={"api_key": "sk_" + "y" * 43}, follow_redirects=False
    )
    assert response.status_code == 429
    assert 0 < int(response.headers["retry-after"]) <= LOGIN_WINDOW_SECONDS
    assert "Too many sign-in attempts" in response.text
    # the right key does not get through either until the window has passed
    status, cookie = await sign_in(client, tenant.keys["read"])
    assert status == 429 and cookie is None
    assert await db.fetchval("SELECT count(*) FROM dashboard_sessions WHERE tenant_id = $1", tenant.id) == 0


async def test_successful_sign_ins_do_not_use_up_the_allowance(
    client: Client, tenant: Tenant, redis: aioredis.Redis
) -> None:
    for _ in range(LOGIN_ATTEMPTS + 3):
        assert (await sign_in(client, tenant.keys["read"]))[0] == 303


# -- the limiter itself, against the real Redis ------------------------------------------------------


async def test_the_limiter_counts_per_address_and_ipv6_block(redis: aioredis.Redis) -> None:
    limiter = LoginLimiter(redis, attempts=2, window=60)
    hosts = ["192.0.2.7", "2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:3::1"]
    keys = [f"suppress:dashboard-login:{client_key(h)}" for h in hosts]
    await redis.delete(*keys)
    try:
        assert await limiter.take("192.0.2.7") is None and await limiter.take("192.0.2.7") is None
        wait = await limiter.take("192.0.2.7")
        assert wait is not None and 0 < wait <= 60
        assert await limiter.take("192.0.2.8") is None  # another address has its own allowance
        # one /64 shares an allowance; the next /64 does not
        assert await limiter.take("2001:db8:1:2::1") is None
        assert await limiter.take("2001:db8:1:2::ffff") is None
        assert await limiter.take("2001:db8:1:2::1") is not None
        assert await limiter.take("2001:db8:1:3::1") is None
        # a success gives its attempt back
        await limiter.give_back("2001:db8:1:2::1")
        await limiter.give_back("2001:db8:1:2::1")
        assert await limiter.take("2001:db8:1:2::1") is None
    finally:
        await redis.delete(*keys, "suppress:dashboard-login:192.0.2.8")


async def test_the_window_ends(redis: aioredis.Redis) -> None:
    limiter = LoginLimiter(redis, attempts=1, window=1)
    key = f"suppress:dashboard-login:{client_key('198.51.100.9')}"
    await redis.delete(key)
    assert await limiter.take("198.51.100.9") is None
    assert await limiter.take("198.51.100.9") == 1
    await asyncio.sleep(1.2)
    assert await limiter.take("198.51.100.9") is None
    await redis.delete(key)
    await limiter.give_back("198.51.100.9")  # gone meanwhile: nothing is recreated
    assert await redis.exists(key) == 0


async def test_without_redis_attempts_go_through() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    try:
        assert await LoginLimiter(down).take("192.0.2.1") is None
        await LoginLimiter(down).give_back("192.0.2.1")
    finally:
        await down.aclose()


def test_client_keys() -> None:
    assert client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key(None) == "unknown" and client_key("testclient") == "testclient"
