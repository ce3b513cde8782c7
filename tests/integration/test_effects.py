"""Every ledger event gets pending effects; the drain job applies them in batches; the sweeper
enqueues the drain of what is left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from arq import create_pool as create_arq_pool
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.effects import drain_effects, sweep_pending_effects

from suppress.config import Settings
from suppress.db import create_pool
from suppress.effects import EffectBatch, LedgerEvent, drain_job_id, load_event
from suppress.queue import redis_settings
from suppress.sql import Queries
from tests.conftest import Tenant
from tests.support import consent, suppress

Client = AsyncTestClient[Litestar]


async def pending(db: asyncpg.Connection, tenant: Tenant) -> list[int]:
    rows = await db.fetch(
        "SELECT event_id FROM pending_effects WHERE tenant_id = $1 ORDER BY event_id", tenant.id
    )
    return [r["event_id"] for r in rows]


async def test_every_event_leaves_pending_effects(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await consent(client, tenant, "fx@example.no")
    await suppress(client, tenant, "fx@example.no", "manual")
    ids = [
        r["id"] for r in await db.fetch("SELECT id FROM events WHERE tenant_id = $1 ORDER BY id", tenant.id)
    ]
    assert await pending(db, tenant) == ids and len(ids) == 2


async def test_writes_enqueue_the_effects_job(
    client: Client, tenant: Tenant, db: asyncpg.Connection, settings: Settings
) -> None:
    await consent(client, tenant, "queued@example.no")
    assert len(await pending(db, tenant)) == 1
    arq = await create_arq_pool(redis_settings(settings.require_redis_url()))
    try:
        job_ids = {job.job_id for job in await arq.queued_jobs()}
    finally:
        await arq.aclose()
    assert drain_job_id(tenant.id) in job_ids


async def test_effects_job_runs_each_effect_and_clears_the_event(
    db: asyncpg.Connection, client: Client, tenant: Tenant, settings: Settings, queries: Queries
) -> None:
    await suppress(client, tenant, "once@example.no", "complained", campaign="autumn", note="fbl")
    assert len(await pending(db, tenant)) == 1
    seen: list[LedgerEvent] = []

    async def record(ctx: dict[str, Any], conn: asyncpg.Connection, batch: EffectBatch) -> None:
        for batch_event_id in batch.event_ids:
            event = await load_event(conn, queries, batch.tenant_id, batch_event_id)
            assert event is not None
            seen.append(event)

    pool = await create_pool(settings.require_database_url(), size=1)
    try:
        ctx = {"pool": pool, "queries": queries, "effects": [record]}
        assert await drain_effects(ctx, tenant.id) == 1
        assert await drain_effects(ctx, tenant.id) == 0  # nothing left
    finally:
        await pool.close()
    assert await pending(db, tenant) == []
    [event] = seen
    assert (event.kind, event.address, event.campaign, event.data["reason"]) == (
        "suppression_added",
        "once@example.no",
        "autumn",
        "complained",
    )


async def test_a_failing_effect_keeps_the_event_pending(
    db: asyncpg.Connection, client: Client, tenant: Tenant, settings: Settings, queries: Queries
) -> None:
    await suppress(client, tenant, "fail@example.no", "manual")
    [event_id] = await pending(db, tenant)

    async def broken(ctx: dict[str, Any], conn: asyncpg.Connection, batch: EffectBatch) -> None:
        raise RuntimeError("receiver down")

    pool = await create_pool(settings.require_database_url(), size=1)
    try:
        with pytest.raises(RuntimeError):
            await drain_effects({"pool": pool, "queries": queries, "effects": [broken]}, tenant.id)
    finally:
        await pool.close()
    assert await pending(db, tenant) == [event_id]


async def test_sweeper_re_enqueues_stale_pending_effects(
    db: asyncpg.Connection, client: Client, tenant: Tenant, settings: Settings, queries: Queries
) -> None:
    await suppress(client, tenant, "lost@example.no", "manual")
    assert len(await pending(db, tenant)) == 1
    arq = await create_arq_pool(redis_settings(settings.require_redis_url()))
    pool = await create_pool(settings.require_database_url(), size=1)
    try:
        await arq.delete(f"arq:job:{drain_job_id(tenant.id)}")  # the API's enqueue got lost
        await arq.zrem("arq:queue", drain_job_id(tenant.id))
        ctx = {"pool": pool, "queries": queries, "redis": arq}
        await sweep_pending_effects(ctx)  # ours is too young: the API's own enqueue may still land
        assert drain_job_id(tenant.id) not in {j.job_id for j in await arq.queued_jobs()}
        await db.execute(
            "UPDATE pending_effects SET created_at = $2 WHERE tenant_id = $1",
            tenant.id,
            datetime.now(UTC) - timedelta(minutes=5),
        )
        assert await sweep_pending_effects(ctx) >= 1
        assert drain_job_id(tenant.id) in {j.job_id for j in await arq.queued_jobs()}
        assert await sweep_pending_effects(ctx) == 0  # already queued: not enqueued twice
    finally:
        await pool.close()
        await arq.aclose()


async def test_write_succeeds_when_redis_is_down(
    db: asyncpg.Connection, tenant: Tenant, settings: Settings, queries: Queries, app: Litestar
) -> None:
    from arq import ArqRedis

    from suppress.devstack.embedded import free_port
    from suppress.recipients import Recipients, SuppressionIn
    from suppress.tenants import Authenticator

    pool = await create_pool(settings.require_database_url(), size=1)
    dead = ArqRedis(host="127.0.0.1", port=free_port())
    try:
        principal = await Authenticator(pool, queries).authenticate(f"Bearer {tenant.keys['write']}")
        service = Recipients(pool, queries, app.state.recipients._hasher, dead)
        result = await service.suppress(
            principal,
            SuppressionIn(channel="email", address="norelay@example.no", reason="manual"),
            datetime.now(UTC),
        )
        assert result.event_id > 0
    finally:
        await dead.aclose()
        await pool.close()
    assert await pending(db, tenant) == [result.event_id]
