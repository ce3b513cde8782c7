"""Failure modes of the request path: PostgreSQL or Redis stopped or frozen.

The app under test reaches the session's real PostgreSQL and Redis through FaultProxy instances
(tests/faultproxy.py) that this module stops or freezes; the servers themselves are never touched.
Deadlines are set short here (1 s) so a test waits seconds, not the production defaults.
Every answer must come within its deadline plus a margin: a 503 problem with Retry-After for
checks and writes, a prompt /readyz, the unsubscribe page and one-click as documented (spooled
while only PostgreSQL is away, 503 when Redis cannot take the spool either).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.app import create_app
from suppress.config import Settings
from suppress.queue import WORKER_HEARTBEAT_KEY
from suppress.sql import Queries
from tests.conftest import PUBLIC_URL, TEST_SECRET, Tenant, post_json
from tests.faultproxy import FaultProxy
from tests.support import ONE_CLICK, link

DEADLINE = 1.0  # each of the app's deadlines in this module, seconds
# A request may use a few deadlines in a row (a connection, a statement, the connection's reset);
# anything slower is a hang.
ANSWER_WITHIN = 5 * DEADLINE + 1.5
HANG = 15.0  # what the test waits at most before calling it a hang


def _proxied(url: str, proxy: FaultProxy) -> str:
    parts = urlsplit(url)
    return urlunsplit(
        parts._replace(
            netloc=parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
        )
    )


def _target(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


@pytest.fixture(scope="module")
def pg_proxy(settings: Settings) -> Iterator[FaultProxy]:
    proxy = FaultProxy(*_target(settings.require_database_url(), 5432))
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def redis_proxy(settings: Settings) -> Iterator[FaultProxy]:
    proxy = FaultProxy(*_target(settings.require_redis_url(), 6379))
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
async def faulty(
    settings: Settings, pg_proxy: FaultProxy, redis_proxy: FaultProxy
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app, reaching PostgreSQL and Redis through the proxies, with 1 s deadlines."""
    app = create_app(
        Settings(
            database_url=_proxied(settings.require_database_url(), pg_proxy),
            redis_url=_proxied(settings.require_redis_url(), redis_proxy),
            secret=TEST_SECRET,
            public_url=PUBLIC_URL,
            db_acquire_timeout=DEADLINE,
            db_statement_timeout=DEADLINE,
            redis_timeout=DEADLINE,
        )
    )
    async with AsyncTestClient(app=app, timeout=60) as client:
        yield client


@pytest.fixture(autouse=True)
def healed(pg_proxy: FaultProxy, redis_proxy: FaultProxy) -> Iterator[None]:
    yield
    pg_proxy.set("forward")
    redis_proxy.set("forward")


async def timed(request: Any) -> tuple[httpx.Response, float]:
    """The response and the seconds it took; fails as a hang after HANG seconds."""
    started = time.monotonic()
    try:
        response = await asyncio.wait_for(request, HANG)
    except TimeoutError:
        pytest.fail(f"no answer within {HANG:g} s")
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, took: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "unavailable"
    assert int(response.headers["retry-after"]) > 0
    assert took < ANSWER_WITHIN, f"answered after {took:.1f} s"


CHECK = {"channel": "email", "purpose": "marketing", "recipients": ["ola@example.no"]}
SUPPRESSION = {"channel": "email", "address": "kari@example.no", "reason": "manual"}
CONSENT = {"channel": "email", "address": "per@example.no", "source": "signup_form"}


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
async def test_checks_and_writes_answer_503_with_retry_after_when_postgresql_is_away(
    faulty: AsyncTestClient[Litestar], tenant: Tenant, pg_proxy: FaultProxy, fault: Any
) -> None:
    await post_json(faulty, tenant, "/v1/checks", CHECK, scope="check")  # the key is known (cached)
    with pg_proxy.fault(fault):
        for path, body, scope in (
            ("/v1/checks", CHECK, "check"),
            ("/v1/suppressions", SUPPRESSION, "write"),
            ("/v1/consents", CONSENT, "write"),
        ):
            response, took = await timed(faulty.post(path, json=body, headers=tenant.auth(scope)))
            assert_unavailable(response, took)
    # and back to normal once it returns
    await post_json(faulty, tenant, "/v1/checks", CHECK, scope="check")


async def test_an_unknown_key_while_postgresql_is_away_is_503_not_401_or_500(
    faulty: AsyncTestClient[Litestar], pg_proxy: FaultProxy
) -> None:
    with pg_proxy.fault("stopped"):
        response, took = await timed(
            faulty.post("/v1/checks", json=CHECK, headers={"Authorization": "Bearer sk_" + "A" * 43})
        )
    assert_unavailable(response, took)


async def test_writes_answer_503_when_redis_is_frozen_too(
    faulty: AsyncTestClient[Litestar], tenant: Tenant, pg_proxy: FaultProxy, redis_proxy: FaultProxy
) -> None:
    await post_json(faulty, tenant, "/v1/checks", CHECK, scope="check")
    with pg_proxy.fault("stopped"), redis_proxy.fault("frozen"):
        response, took = await timed(
            faulty.post("/v1/suppressions", json=SUPPRESSION, headers=tenant.auth("write"))
        )
    assert_unavailable(response, took)


async def test_a_write_while_only_redis_is_frozen_commits_and_answers(
    faulty: AsyncTestClient[Litestar], tenant: Tenant, redis_proxy: FaultProxy, db: asyncpg.Connection
) -> None:
    """Redis only carries the effects' wake-up call (the sweeper finds them later): the write stands."""
    with redis_proxy.fault("frozen"):
        response, took = await timed(
            faulty.post("/v1/suppressions", json=SUPPRESSION, headers=tenant.auth("write"))
        )
    assert response.status_code == 201, response.text
    assert took < ANSWER_WITHIN
    assert await db.fetchval("SELECT count(*) FROM suppressions WHERE tenant_id = $1", tenant.id) == 1


@pytest.mark.parametrize("store", ["postgresql", "redis"])
@pytest.mark.parametrize("fault", ["stopped", "frozen"])
async def test_readyz_answers_within_a_second_either_way(
    faulty: AsyncTestClient[Litestar], pg_proxy: FaultProxy, redis_proxy: FaultProxy, store: str, fault: Any
) -> None:
    response, took = await timed(faulty.get("/readyz"))
    assert response.status_code == 200, response.text
    with (pg_proxy if store == "postgresql" else redis_proxy).fault(fault):
        response, took = await timed(faulty.get("/readyz"))
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "not ready"
    assert body["database" if store == "postgresql" else "redis"].startswith("unavailable")
    # it gives up on a store after 0.8 s (api/ops.py READY_WAIT); the margin is for a busy machine
    assert took < 1.5, f"/readyz took {took:.2f} s"


async def test_unsubscribe_page_and_one_click_while_postgresql_is_frozen(
    faulty: AsyncTestClient[Litestar], client: AsyncTestClient[Litestar], tenant: Tenant, pg_proxy: FaultProxy
) -> None:
    """The page degrades to one without details; one-click is spooled and answered 200."""
    await post_json(client, tenant, "/v1/consents", CONSENT)
    path = await link(client, tenant, CONSENT["address"])
    with pg_proxy.fault("frozen"):
        page, took = await timed(faulty.get(path))
        assert page.status_code == 200
        assert took < ANSWER_WITHIN, f"the page took {took:.1f} s"
        clicked, took = await timed(faulty.post(path, data=ONE_CLICK))
        assert clicked.status_code == 200, clicked.text
        assert took < ANSWER_WITHIN, f"one-click took {took:.1f} s"


async def test_one_click_answers_503_when_postgresql_is_down_and_redis_frozen(
    faulty: AsyncTestClient[Litestar],
    client: AsyncTestClient[Litestar],
    tenant: Tenant,
    pg_proxy: FaultProxy,
    redis_proxy: FaultProxy,
    queries: Queries,
) -> None:
    await post_json(client, tenant, "/v1/consents", CONSENT)
    path = await link(client, tenant, CONSENT["address"])
    with pg_proxy.fault("stopped"), redis_proxy.fault("frozen"):
        clicked, took = await timed(faulty.post(path, data=ONE_CLICK))
    assert clicked.status_code == 503, clicked.text
    assert "text/html" in clicked.headers["content-type"]
    assert int(clicked.headers["retry-after"]) > 0
    assert took < ANSWER_WITHIN, f"one-click took {took:.1f} s"


async def test_readyz_reports_a_dead_worker_when_the_api_runs_its_own(settings: Settings) -> None:
    """The worker's heartbeat key (refreshed from arq's polling loop, with a TTL) decides `worker`;
    under `suppress dev` (require_worker) a missing heartbeat makes the API not ready."""
    redis = aioredis.from_url(settings.require_redis_url())
    try:
        async with AsyncTestClient(app=create_app(settings, require_worker=True)) as own:
            await redis.set(WORKER_HEARTBEAT_KEY, b"alive", px=1500)
            ready = await own.get("/readyz")
            assert (ready.status_code, ready.json()["worker"]) == (200, "ok")
            while await redis.exists(WORKER_HEARTBEAT_KEY):  # noqa: ASYNC110 - the worker stops beating
                await asyncio.sleep(0.1)
            dead = await own.get("/readyz")
            assert dead.status_code == 503, dead.text
            assert dead.json()["worker"] == "not running"
        # `suppress serve` reports it, but its readiness is about its own stores
        async with AsyncTestClient(app=create_app(settings)) as serve:
            answer = await serve.get("/readyz")
            assert (answer.status_code, answer.json()["worker"]) == (200, "not running")
    finally:
        await redis.aclose()
