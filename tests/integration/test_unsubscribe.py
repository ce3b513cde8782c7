"""The recipient's endpoints through the HTTP app: the page, one-click, forms, undo, spooling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
from arq import ArqRedis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.unsubscribe import apply_spooled_unsubscribe

from suppress.api.pages import recipient_page
from suppress.config import Settings
from suppress.db import create_pool
from suppress.devstack.embedded import free_port
from suppress.errors import Unavailable
from suppress.queue import connect as connect_queue
from suppress.sql import Queries
from suppress.tokens import TokenClaims
from suppress.unsubscribe import Evidence, Unsubscriber, mask_address
from tests.conftest import Tenant
from tests.support import ONE_CLICK, consent, decision, flush_check_counts, link, topic

Client = AsyncTestClient[Litestar]


async def events(db: asyncpg.Connection, tenant: Tenant) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT kind, source, actor, campaign_id, topic_id, occurred_at,"
        " data || coalesce(personal, '{}') AS data FROM events"
        " WHERE tenant_id = $1 ORDER BY id",
        tenant.id,
    )


async def test_page_shows_tenant_masked_address_and_choices(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", False)
    await topic(client, tenant, "offers", False)
    await consent(client, tenant, "ola.nordmann@example.no")
    path = await link(client, tenant, "ola.nordmann@example.no", topic="news")
    page = await client.get(path, headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert tenant.name in page.text and "o•••n@example.no" in page.text
    assert "ola.nordmann" not in page.text
    assert "Unsubscribe me from “news”" in page.text and 'value="offers"' in page.text
    assert "<script" not in page.text and page.headers["referrer-policy"] == "no-referrer"
    norsk = await client.get(path, headers={"Accept-Language": "nb-NO,nb;q=0.9,en;q=0.5"})
    assert 'lang="nb"' in norsk.text and "Meld meg av «news»" in norsk.text


async def test_bad_token_gets_a_friendly_page(client: Client) -> None:
    for path in ("/u/not-a-token", "/u/" + "A" * 95):
        page = await client.get(path)
        assert page.status_code == 400 and "not valid" in page.text
        posted = await client.post(path, data=ONE_CLICK)
        assert posted.status_code == 400


async def test_one_click_unsubscribes_durably_and_only_once(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await consent(client, tenant, "click@example.no")
    path = await link(client, tenant, "click@example.no", campaign="spring")
    response = await client.post(path, data=ONE_CLICK, headers={"User-Agent": "MailClient/1.0"})
    assert response.status_code == 200 and "location" not in response.headers
    assert await decision(client, tenant, "click@example.no") == (False, None, "unsubscribed")
    again = await client.post(path, data=ONE_CLICK)
    assert again.status_code == 200 and "already" in again.text
    rows = [r for r in await events(db, tenant) if r["kind"] == "unsubscribed"]
    assert len(rows) == 1
    data = msgspec.json.decode(rows[0]["data"]) if isinstance(rows[0]["data"], str) else rows[0]["data"]
    assert rows[0]["source"] == "one_click" and rows[0]["actor"] == "recipient"
    assert rows[0]["campaign_id"] is not None and data["user_agent"] == "MailClient/1.0"
    assert "token_issued_at" in data and data["ip"]
    assert await db.fetchval("SELECT count(*) FROM consents WHERE tenant_id = $1", tenant.id) == 0


async def test_one_click_as_multipart(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "multi@example.no")
    path = await link(client, tenant, "multi@example.no")
    response = await client.post(path, files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert await decision(client, tenant, "multi@example.no") == (False, None, "unsubscribed")


async def test_one_click_from_a_topic_link_leaves_other_topics(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", False)
    await topic(client, tenant, "offers", False)
    await consent(client, tenant, "topical@example.no")
    path = await link(client, tenant, "topical@example.no", topic="news")
    await client.post(path, data=ONE_CLICK)
    assert await decision(client, tenant, "topical@example.no", topic="news") == (False, None, "unsubscribed")
    assert await decision(client, tenant, "topical@example.no", topic="offers") == (True, "consent", None)


async def test_head_and_get_change_nothing(db: asyncpg.Connection, client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "scanner@example.no")
    path = await link(client, tenant, "scanner@example.no")
    before = await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id)
    head = await client.head(path)
    assert head.status_code == 200 and head.content == b""
    for _ in range(3):
        assert (await client.get(path)).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id) == before
    assert await decision(client, tenant, "scanner@example.no") == (True, "consent", None)


_WATCHED_TABLES = (
    "events",
    "recipients",
    "suppressions",
    "consents",
    "customers",
    "customer_addresses",
    "topics",
    "campaigns",
    "check_counts",
    "api_keys",
    "tenants",
    "pending_effects",
)


@pytest.fixture
async def row_writes(db: asyncpg.Connection) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """How many rows of the watched tables were inserted, updated or deleted so far (row triggers:
    constant time, where hashing the session's ever-growing tables took minutes)."""
    await db.execute(
        """
        CREATE TABLE test_row_writes (n bigint NOT NULL);
        INSERT INTO test_row_writes VALUES (0);
        CREATE FUNCTION test_count_row_write() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN UPDATE test_row_writes SET n = n + 1; RETURN NULL; END $$;
        """
    )
    for table in _WATCHED_TABLES:
        await db.execute(
            f"CREATE TRIGGER test_count_row_write AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION test_count_row_write()"
        )

    async def writes() -> int:
        n: int = await db.fetchval("SELECT n FROM test_row_writes")
        return n

    try:
        yield writes
    finally:
        for table in _WATCHED_TABLES:
            await db.execute(f"DROP TRIGGER test_count_row_write ON {table}")
        await db.execute("DROP FUNCTION test_count_row_write(); DROP TABLE test_row_writes")


_PATHS = st.sampled_from(
    [
        "/u/{token}",
        "/v1/recipients/email/{addr}",
        "/v1/suppressions",
        "/v1/topics",
        "/healthz",
        "/readyz",
        "/metrics",
        "/schema/openapi.json",
        "/v1/checks",
        "/u/{token}?action=all",
        "/v1/recipients/sms/{addr}",
    ]
)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=_PATHS, token=st.text(alphabet="ABCDEFabcdef0123456789-_", max_size=100), addr=st.emails())
async def test_no_get_or_head_on_any_url_changes_any_row(
    row_writes: Callable[[], Awaitable[int]],
    client: Client,
    tenant: Tenant,
    valid_link: str,
    method: str,
    path: str,
    token: str,
    addr: str,
) -> None:
    await flush_check_counts(client)  # the link's check is counted by the next flush, not by a GET
    before = await row_writes()
    url = path.format(token=token or valid_link.rsplit("/", 1)[1], addr=addr)
    for headers in (tenant.auth("admin"), {}):
        await client.request(method, url, headers=headers)
    await client.request(method, valid_link)
    assert await row_writes() == before


@pytest.fixture
async def valid_link(client: Client, tenant: Tenant) -> str:
    await consent(client, tenant, "prop@example.no")
    return await link(client, tenant, "prop@example.no")


def _claims(tenant: Tenant, app: Litestar, path: str) -> TokenClaims:
    claims: TokenClaims = app.state.keyring.verify(path.rsplit("/", 1)[1])
    assert claims.tenant_id == tenant.id
    return claims


async def test_spooled_when_the_database_is_down_and_applied_later_with_its_time(
    db: asyncpg.Connection,
    client: Client,
    tenant: Tenant,
    app: Litestar,
    settings: Settings,
    queries: Queries,
) -> None:
    await consent(client, tenant, "outage@example.no")
    claims = _claims(tenant, app, await link(client, tenant, "outage@example.no"))
    dead_pool = await create_pool(settings.require_database_url(), size=1)
    await dead_pool.close()  # every use now fails like a database that went away
    job_queue = await connect_queue(settings.require_redis_url())
    try:
        service = Unsubscriber(dead_pool, queries, app.state.keyring, job_queue)
        asked_at = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
        outcome = await service.unsubscribe(
            claims, topic_id=0, source="one_click", evidence=Evidence(ip="192.0.2.9"), now=asked_at
        )
        assert outcome.status == "spooled"
        assert await decision(client, tenant, "outage@example.no") == (True, "consent", None)
        queued = await job_queue.queued_jobs()
        mine = [
            j
            for j in queued
            if j.function == "apply_spooled_unsubscribe" and j.args[0]["tenant_id"] == tenant.id
        ]
        assert len(mine) == 1
        live_pool = await create_pool(settings.require_database_url(), size=1)
        try:
            ctx = {"pool": live_pool, "queries": queries, "redis": job_queue, "job_try": 1}
            assert await apply_spooled_unsubscribe(ctx, mine[0].args[0]) == "applied"
            assert await apply_spooled_unsubscribe(ctx, mine[0].args[0]) == "already"
        finally:
            await live_pool.close()
    finally:
        await job_queue.aclose()
    assert await decision(client, tenant, "outage@example.no") == (False, None, "unsubscribed")
    [row] = [r for r in await events(db, tenant) if r["kind"] == "unsubscribed"]
    assert row["occurred_at"] == asked_at


async def test_neither_database_nor_redis_means_503_not_a_lost_2xx(
    client: Client, tenant: Tenant, app: Litestar, settings: Settings, queries: Queries
) -> None:
    await consent(client, tenant, "void@example.no")
    claims = _claims(tenant, app, await link(client, tenant, "void@example.no"))
    dead_pool = await create_pool(settings.require_database_url(), size=1)
    await dead_pool.close()
    dead_queue = ArqRedis(host="127.0.0.1", port=free_port())  # nothing listens there
    try:
        service = Unsubscriber(dead_pool, queries, app.state.keyring, dead_queue)
        with pytest.raises(Unavailable):
            await service.unsubscribe(
                claims, topic_id=0, source="one_click", evidence=Evidence(), now=datetime.now(UTC)
            )
    finally:
        await dead_queue.aclose()


async def test_page_without_the_database_still_offers_the_unsubscribe(
    client: Client, tenant: Tenant, app: Litestar, settings: Settings, queries: Queries
) -> None:
    await consent(client, tenant, "dark@example.no")
    claims = _claims(tenant, app, await link(client, tenant, "dark@example.no"))
    dead_pool = await create_pool(settings.require_database_url(), size=1)
    await dead_pool.close()
    state = await Unsubscriber(dead_pool, queries, app.state.keyring, None).page_state(
        claims, datetime.now(UTC)
    )
    assert not state.available
    page = recipient_page("en", state)
    assert 'value="all"' in page and "Unsubscribe me from all marketing by email" in page


def test_mask_address() -> None:
    assert mask_address("email", "ola.nordmann@example.no") == "o•••n@example.no"
    assert mask_address("email", "ab@example.no") == "a•••@example.no"
    assert mask_address("sms", "+4791234567") == "+47•••••567"
    assert mask_address("email", None) is None


async def test_simultaneous_clicks_write_one_unsubscribe(
    db: asyncpg.Connection,
    client: Client,
    tenant: Tenant,
    app: Litestar,
    settings: Settings,
    queries: Queries,
) -> None:
    pool = await create_pool(settings.require_database_url(), size=12)
    service = Unsubscriber(pool, queries, app.state.keyring, None)
    claims = []
    for i in range(30):
        await consent(client, tenant, f"double{i}@example.no")
        claims.append(_claims(tenant, app, await link(client, tenant, f"double{i}@example.no")))
    now = datetime.now(UTC)
    try:
        outcomes = await asyncio.gather(
            *(
                service.unsubscribe(c, topic_id=0, source="one_click", evidence=Evidence(), now=now)
                for c in claims
                for _ in range(2)
            )
        )
    finally:
        await pool.close()
    assert sorted(o.status for o in outcomes).count("applied") == 30
    counts = await db.fetch(
        "SELECT address_hash, count(*) AS n FROM events WHERE tenant_id = $1 AND kind = 'unsubscribed' GROUP BY 1",
        tenant.id,
    )
    assert len(counts) == 30 and all(row["n"] == 1 for row in counts)
