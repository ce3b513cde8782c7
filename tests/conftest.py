"""Shared fixtures: real PostgreSQL and Redis (the machine's via environment variables, embedded
otherwise), one migrated database per test session, one fresh tenant per test.

- SUPPRESS_TEST_DATABASE_URL: a PostgreSQL DSN with the right to CREATE DATABASE; each session
  creates (and drops) its own database there.
- SUPPRESS_TEST_REDIS_URL: a Redis URL; each session uses its own key prefix-free database number
  given in the URL and flushes it at start.
Without them the session starts embedded servers under a temporary folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.app import create_app
from suppress.config import Settings
from suppress.migrate import migrate
from suppress.sql import Queries, load_queries
from suppress.tenants import create_api_key, create_tenant

pytest_plugins = ["tests.live"]  # a real `suppress serve` and Chromium, for the modules that ask

TEST_SECRET = "test-secret-" + "x" * 40
PUBLIC_URL = "https://unsub.example.test"


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def embedded_root() -> Iterator[Path]:
    """A data folder the embedded servers' service user can reach (not pytest's 0700 tmp)."""
    root = Path(tempfile.mkdtemp(prefix="suppress-test-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def server_database_url(embedded_root: Path) -> Iterator[str]:
    """A PostgreSQL DSN with CREATE DATABASE rights: the machine's, or an embedded server."""
    url = os.environ.get("SUPPRESS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from suppress.devstack.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(embedded_root / "pg")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(embedded_root: Path) -> Iterator[str]:
    """A Redis URL: the machine's, or an embedded server."""
    url = os.environ.get("SUPPRESS_TEST_REDIS_URL")
    if url:
        yield url
        return
    from suppress.devstack.embedded import EmbeddedRedis

    server = EmbeddedRedis(embedded_root / "redis")
    try:
        yield server.start()
    finally:
        server.stop()


@asynccontextmanager
async def migrated_database(server_database_url: str, prefix: str = "suppress_test") -> AsyncIterator[str]:
    """A fresh database on that server, migrated; dropped when the context ends."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(server_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_database(server_database_url, name)
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield url
    finally:
        admin = await asyncpg.connect(server_database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def database_url(server_database_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this session, dropped afterwards."""
    async with migrated_database(server_database_url) as url:
        yield url


@pytest.fixture(scope="session")
async def clean_redis(redis_url: str) -> str:
    client = aioredis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return redis_url


@pytest.fixture(scope="session")
def settings(database_url: str, clean_redis: str) -> Settings:
    return Settings(
        database_url=database_url, redis_url=clean_redis, secret=TEST_SECRET, public_url=PUBLIC_URL
    )


@pytest.fixture(scope="session")
def queries() -> Queries:
    return load_queries()


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the session database, for setup and for looking at rows."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
async def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@dataclass
class Tenant:
    """A fresh tenant with one key per scope."""

    id: int
    name: str
    keys: dict[str, str] = field(default_factory=dict)

    def auth(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


@pytest.fixture
async def tenant(db: asyncpg.Connection, queries: Queries) -> Tenant:
    name = f"tenant-{secrets.token_hex(4)}"
    admin = await create_tenant(db, queries, name)
    made = Tenant(id=admin.tenant_id, name=name, keys={"admin": admin.api_key})
    for scope in ("check", "write", "read"):
        made.keys[scope] = (await create_api_key(db, queries, admin.tenant_id, [scope])).api_key
    return made


async def post_json(
    client: AsyncTestClient[Litestar], tenant: Tenant, path: str, body: Any, scope: str = "admin"
) -> Any:
    """POST and return the parsed JSON, asserting a 2xx."""
    response = await client.post(path, json=body, headers=tenant.auth(scope))
    assert response.status_code < 300, response.text
    return response.json()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in tests/e2e is the end-to-end tier (`-m "not e2e"` is the fast loop)."""
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        if e2e in item.path.parents:
            item.add_marker(pytest.mark.e2e)
