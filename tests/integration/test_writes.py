"""The one write path under load: concurrent writers on overlapping recipients never surface a
deadlock, never interleave on one recipient, and leave the state that applying the same intents one
by one would leave; the rules every write keeps (opt-outs never lapse) hold for the API and imports."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.addresses import AddressHasher
from suppress.config import Settings
from suppress.imports.runs import run_import
from suppress.intents import ConsentIntent, Intent, SuppressIntent
from suppress.providers.processing import ProviderEvents
from suppress.sql import Queries
from suppress.tenants import create_tenant
from suppress.writes import PERSONAL_KEYS, Writer
from tests.conftest import Tenant, post_json
from tests.integration.providers.conftest import POSTMARK_BOUNCE, basic, inbound_path
from tests.support import ONE_CLICK, consent, decision, link, topic

Client = AsyncTestClient[Litestar]
T = TypeVar("T")
N = 24  # recipients


def person(i: int) -> str:
    return f"p{i:03d}@example.no"


async def upload(client: Client, tenant: Tenant, body: str, kind: str) -> int:
    response = await client.post(
        "/v1/imports",
        params={"kind": kind, "format": "csv"},
        content=body.encode(),
        headers={**tenant.auth("write"), "Content-Type": "text/csv"},
    )
    assert response.status_code == 202, response.text
    import_id: int = response.json()["id"]
    return import_id


# -- opt-outs never lapse ------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["unsubscribed", "complained"])
async def test_an_opt_out_with_an_expiry_is_refused_and_writes_nothing(
    client: Client, tenant: Tenant, db: asyncpg.Connection, reason: str
) -> None:
    until = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    body = {"channel": "email", "address": "lapse@example.no", "reason": reason, "expires_at": until}
    response = await client.post("/v1/suppressions", json=body, headers=tenant.auth("admin"))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_input" and "never expires" in problem["detail"], problem
    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id) == 0
    assert await db.fetchval("SELECT count(*) FROM recipients WHERE tenant_id = $1", tenant.id) == 0


@pytest.mark.parametrize("reason", ["manual", "soft_bounced", "hard_bounced"])
async def test_other_suppressions_may_carry_an_expiry(client: Client, tenant: Tenant, reason: str) -> None:
    until = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    body = {"channel": "email", "address": "lapse@example.no", "reason": reason, "expires_at": until}
    await post_json(client, tenant, "/v1/suppressions", body)
    assert await decision(client, tenant, "lapse@example.no") == (False, None, reason)


async def test_an_imported_opt_out_with_an_expiry_is_an_error_row(
    client: Client, tenant: Tenant, pool: asyncpg.Pool, queries: Queries, hasher: AddressHasher
) -> None:
    until = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    body = (
        "channel,address,reason,expires_at\n"
        f"email,a@example.no,unsubscribed,{until}\n"
        f"email,b@example.no,complained,{until}\n"
        f"email,c@example.no,manual,{until}\n"
    )
    import_id = await upload(client, tenant, body, "suppressions")
    assert (await run_import(pool, queries, hasher, tenant.id, import_id)).status == "done"
    view = (await client.get(f"/v1/imports/{import_id}", headers=tenant.auth("read"))).json()
    assert (view["done"], view["failed"]) == (1, 2), view
    assert all("never expires" in e["error"] for e in view["errors"]), view["errors"]
    assert await decision(client, tenant, "a@example.no") == (False, None, "no_basis")


# -- concurrency -----------------------------------------------------------------------------------------


async def bounded(limit: int, calls: list[Awaitable[T]]) -> list[T]:
    """Await the calls with at most `limit` in flight, results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return await asyncio.gather(*(one(c) for c in calls))


@pytest.mark.e2e  # runs a real server
async def test_one_click_and_undo_on_one_link_at_once_never_fail(
    client: Client, http: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Opposite writes on one recipient at the same moment, through a real server, used to
    deadlock into 500s that neither applied nor spooled the one-click."""
    await topic(client, tenant, "news", False)
    paths = []
    for i in range(N):
        await consent(client, tenant, person(i))
        paths.append(await link(client, tenant, person(i), topic="news"))
    requests = []
    for _ in range(3):
        for path in paths:
            requests.append(http.post(path, data=ONE_CLICK))
            requests.append(http.post(path, data={"action": "undo", "scope": "topic"}))
            requests.append(http.post(path, data={"action": "all"}))
            requests.append(http.post(path, data={"action": "undo", "scope": "all"}))
    responses = await bounded(16, requests)
    assert Counter(r.status_code for r in responses) == {200: len(requests)}


async def replay(
    db: asyncpg.Connection, writer: Writer, source: Tenant, target: Tenant, topics: dict[int, int]
) -> None:
    """Apply the intents behind `source`'s ledger to `target` one by one, in ledger order."""
    rows = await db.fetch("SELECT * FROM events WHERE tenant_id = $1 ORDER BY id", source.id)
    for e in rows:
        data = json.loads(e["data"]) if isinstance(e["data"], str) else e["data"]
        topic_id = topics.get(e["topic_id"] or 0, 0)
        intent: Intent
        recipient = {
            "channel": e["channel"],
            "address_hash": e["address_hash"],
            "address": None,
            "topic_id": topic_id,
            "source": e["source"],
            "actor": e["actor"],
        }
        if e["kind"] == "consent_given":
            intent = ConsentIntent(**recipient, partners=data["partners"], granted_at=e["occurred_at"])
        elif e["kind"] in ("unsubscribed", "suppression_added", "consent_withdrawn", "objected"):
            expires = data.get("expires_at")
            intent = SuppressIntent(
                **recipient,
                reason=data["reason"],
                expires_at=datetime.fromisoformat(expires) if expires else None,
                occurred_at=e["occurred_at"],
                kind=e["kind"],
            )
        elif e["kind"] == "suppression_lifted" and data.get("cause") == "consent":
            continue  # the consent before it lifts it again
        else:
            raise AssertionError(f"no replay for {e['kind']}")
        await writer.apply(target.id, [intent])


async def state(db: asyncpg.Connection, tenant: Tenant) -> dict[bytes, tuple[Any, ...]]:
    """Each recipient's decision columns, topics by name."""
    rows = await db.fetch(
        """SELECT r.address_hash, r.suppression_reasons, r.suppression_expires,
                  ARRAY(SELECT t.name FROM topics t WHERE t.id = ANY(r.unsubscribed_topics) ORDER BY 1) AS unsub,
                  ARRAY(SELECT coalesce(t.name, '*') FROM unnest(r.consent_topics) c
                        LEFT JOIN topics t ON t.id = c ORDER BY 1) AS consents
           FROM recipients r WHERE r.tenant_id = $1""",
        tenant.id,
    )
    return {r["address_hash"]: tuple(r.values())[1:] for r in rows}


@pytest.mark.e2e  # runs a real server
async def test_concurrent_writers_leave_the_state_of_applying_their_intents_one_by_one(
    client: Client,
    http: httpx.AsyncClient,
    tenant: Tenant,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
    settings: Settings,
) -> None:
    """One-clicks, undos, provider events and two imports at once on overlapping recipients: no 500,
    no deadlock surfacing anywhere, every import done, and the final state the same as applying the
    ledger's intents one by one on a fresh tenant."""
    await topic(client, tenant, "news", False)
    paths = []
    for i in range(N):
        await consent(client, tenant, person(i), topic="news")
        paths.append(await link(client, tenant, person(i), topic="news"))
    provider = await post_json(
        client, tenant, "/v1/providers", {"kind": "postmark", "username": "pm", "password": "p" * 20}
    )
    auth = {"Authorization": basic("pm", "p" * 20)}
    for i in range(0, N, 3):
        bounce = {**POSTMARK_BOUNCE, "Email": person(i), "ID": 90000 + i}
        stored = await client.post(inbound_path(provider), content=json.dumps(bounce).encode(), headers=auth)
        assert stored.status_code == 200, stored.text
    earlier = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    suppressions = "channel,address,reason,topic\n" + "".join(
        f"email,{person(i)},unsubscribed,news\n" for i in range(0, N, 2)
    )
    consents = "channel,address,source,granted_at,topic\n" + "".join(
        f"email,{person(i)},form,{earlier},\n" for i in range(1, N, 2)
    )
    imports = [
        await upload(client, tenant, suppressions, "suppressions"),
        await upload(client, tenant, consents, "consents"),
    ]
    provider_events = [
        r["id"] for r in await db.fetch("SELECT id FROM provider_events WHERE tenant_id = $1", tenant.id)
    ]
    processor = ProviderEvents(pool, queries, hasher, None, None)

    async def provider_work() -> list[str]:
        return [
            await processor.process(tenant.id, event_id, datetime.now(UTC)) for event_id in provider_events
        ]

    requests = []
    for path in paths:
        requests.append(http.post(path, data=ONE_CLICK))
        requests.append(http.post(path, data={"action": "undo", "scope": "topic"}))
        requests.append(http.post(path, data={"action": "all"}))
        requests.append(http.post(path, data={"action": "undo", "scope": "all"}))
    responses, processed, *runs = await asyncio.gather(
        bounded(16, requests),
        provider_work(),
        *(run_import(pool, queries, hasher, tenant.id, i, batch_rows=5) for i in imports),
    )
    assert Counter(r.status_code for r in responses) == {200: len(requests)}
    assert set(processed) == {"processed"}
    assert [r.status for r in runs] == ["done", "done"]
    for import_id in imports:
        view = (await client.get(f"/v1/imports/{import_id}", headers=tenant.auth("read"))).json()
        assert view["failed"] == 0, view

    # the same intents, one by one, on a fresh tenant
    fresh = await create_tenant(db, queries, f"{tenant.name}-replay")
    target = Tenant(id=fresh.tenant_id, name=f"{tenant.name}-replay", keys={"admin": fresh.api_key})
    news = await db.fetchval("SELECT id FROM topics WHERE tenant_id = $1 AND name = 'news'", tenant.id)
    await topic(client, target, "news", False)
    news_target = await db.fetchval("SELECT id FROM topics WHERE tenant_id = $1 AND name = 'news'", target.id)
    await replay(db, Writer(pool, queries), tenant, target, {0: 0, news: news_target})
    assert await state(db, target) == await state(db, tenant)


async def test_personal_fields_are_written_outside_the_sealed_data(
    client: Client, tenant: Tenant, db: asyncpg.Connection
) -> None:
    """Every write puts personal fields in `personal` itself, so erasure has one place to scrub and
    the database's safety net (a trigger on `data` holding personal keys) never has to run."""
    assert set(await db.fetchval("SELECT ledger_personal_keys()")) == PERSONAL_KEYS
    # without the safety net, so this shows what the writes themselves put where
    await db.execute("ALTER TABLE events DISABLE TRIGGER events_split_personal")
    try:
        await personal_writes(client, tenant)
    finally:
        await db.execute("ALTER TABLE events ENABLE TRIGGER events_split_personal")
    rows = await db.fetch(
        "SELECT kind, data, personal, data ?| ledger_personal_keys() AS leaked FROM events "
        "WHERE tenant_id = $1 ORDER BY id",
        tenant.id,
    )
    assert not any(r["leaked"] for r in rows)
    personal = {
        r["kind"]: json.loads(r["personal"]) if isinstance(r["personal"], str) else r["personal"]
        for r in rows
    }
    assert personal["consent_given"]["evidence"] == {"form": "signup", "ip": "192.0.2.7"}
    assert personal["unsubscribed"]["user_agent"] == "Mail/1.0"
    assert personal["suppression_added"] == {"note": "asked by phone"}
    assert personal["customer_purchase"] == {"customer_ref": "C-77"}


async def personal_writes(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", False)
    await consent(client, tenant, "own@example.no", evidence={"form": "signup", "ip": "192.0.2.7"})
    path = await link(client, tenant, "own@example.no", topic="news")
    assert (await client.post(path, data=ONE_CLICK, headers={"user-agent": "Mail/1.0"})).status_code == 200
    body = {"channel": "email", "address": "own@example.no", "reason": "manual", "note": "asked by phone"}
    await post_json(client, tenant, "/v1/suppressions", body)
    customer = {
        "customer_ref": "C-77",
        "event": "purchase",
        "addresses": [{"channel": "email", "address": "own@example.no", "collected_in_sale": True}],
    }
    await post_json(client, tenant, "/v1/customers", customer)


async def test_a_deadlock_is_retried_inside_the_write_path(
    pool: asyncpg.Pool, queries: Queries, tenant: Tenant, db: asyncpg.Connection
) -> None:
    """Two writes that meet in opposite order outside the recipients' lock order (here: rows of a
    scratch table) deadlock; PostgreSQL aborts one, and the write path runs it again instead of
    letting it surface."""
    await db.execute("DROP TABLE IF EXISTS deadlock_probe; CREATE TABLE deadlock_probe (id int PRIMARY KEY)")
    await db.execute("INSERT INTO deadlock_probe VALUES (1), (2)")
    writer = Writer(pool, queries)
    both_hold_one = asyncio.Barrier(2)
    attempts: Counter[str] = Counter()

    def body(name: str, first: int, second: int) -> Any:
        async def run(conn: Any) -> str:
            attempts[name] += 1
            await conn.execute("UPDATE deadlock_probe SET id = id WHERE id = $1", first)
            if attempts[name] == 1:
                await both_hold_one.wait()  # each holds its first row: the second updates cross
            await conn.execute("UPDATE deadlock_probe SET id = id WHERE id = $1", second)
            return name

        return run

    keys_a = {("email", b"a" * 32): None}
    keys_b = {("email", b"b" * 32): None}
    try:
        done = await asyncio.wait_for(
            asyncio.gather(
                writer.run(tenant.id, keys_a, body("a", 1, 2)), writer.run(tenant.id, keys_b, body("b", 2, 1))
            ),
            timeout=30,
        )
    finally:
        await db.execute("DROP TABLE deadlock_probe")
    assert sorted(done) == ["a", "b"]
    assert sorted(attempts.values()) == [1, 2]  # one of them was the deadlock's victim, and ran again
