"""Every ledger event gets pending effects; the drain job applies them in batches; the sweeper
enqueues the drain of what is left."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from arq import create_pool as create_arq_pool
from arq.jobs import Job
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.effects import drain_effects, sweep_pending_effects

from suppress.config import Settings
from suppress.db import create_pool
from suppress.effects import (
    EffectBatch,
    LedgerEvent,
    drain_again_job_id,
    drain_job_id,
    enqueue_drain,
    enqueue_effects,
    load_event,
)
from suppress.queue import JOB_DELIVER_WEBHOOK, enqueue_many, redis_settings
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
        # earlier tests' leftovers must not turn stale between the two sweeps below
        await db.execute("UPDATE pending_effects SET created_at = now() WHERE tenant_id <> $1", tenant.id)
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
    from suppress.recipients import Recipients
    from suppress.suppressions import SuppressionIn
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


# -- batches ------------------------------------------------------------------------------------

MANY = 1200
BATCH = 100


async def append_events(db: asyncpg.Connection, tenant: Tenant, n: int) -> list[int]:
    """n events straight into the ledger (as an import would), every fourth a complaint."""
    rows = await db.fetch(
        """INSERT INTO events (tenant_id, channel, address_hash, kind, source, occurred_at, data)
           SELECT $1::integer, 'email', sha256(convert_to($1::integer || ':' || i, 'UTF8')),
                  CASE WHEN i % 4 = 0 THEN 'suppression_added' ELSE 'consent_given' END,
                  'test', now(),
                  CASE WHEN i % 4 = 0 THEN '{"reason": "complained"}'::jsonb ELSE '{}' END
           FROM generate_series(1, $2::integer) AS i
           RETURNING id""",
        tenant.id,
        n,
    )
    return sorted(r["id"] for r in rows)


@pytest.fixture
async def batch_ctx(
    db: asyncpg.Connection, tenant: Tenant, settings: Settings, queries: Queries
) -> AsyncIterator[dict[str, Any]]:
    """A worker's ctx with the real effects, small batches, two webhooks of the tenant (one for
    complaints only), and an arq pool whose queue no worker reads."""
    from workers.settings import EFFECTS

    for kinds in (None, ["suppression_added"]):
        await db.execute(
            "INSERT INTO webhooks (tenant_id, url, events, secret_box, created_at)"
            " VALUES ($1, 'https://hooks.example.test/batch', $2, '\\x00', now() - interval '1 hour')",
            tenant.id,
            kinds,
        )
    pool = await create_pool(settings.require_database_url(), size=4)
    redis = await create_arq_pool(
        redis_settings(settings.require_redis_url()),
        default_queue_name=f"test-effects-{secrets.token_hex(4)}",
    )
    yield {"pool": pool, "queries": queries, "redis": redis, "effects": list(EFFECTS), "effects_batch": BATCH}
    jobs = [b"arq:job:" + raw for raw in await redis.zrange(redis.default_queue_name, 0, -1)]
    await redis.delete(redis.default_queue_name, *jobs)
    await redis.aclose()
    await pool.close()
    # no webhook or delivery of this test is left for the redelivery cron of other tests
    await db.execute("UPDATE webhooks SET disabled_at = now() WHERE tenant_id = $1", tenant.id)
    await db.execute(
        "UPDATE webhook_deliveries SET status = 'cancelled', next_attempt_at = NULL, finished_at = now()"
        " WHERE tenant_id = $1 AND status = 'pending'",
        tenant.id,
    )


async def outcome(db: asyncpg.Connection, tenant: Tenant, ctx: dict[str, Any]) -> dict[str, Any]:
    """What the effects left: counters, deliveries per (webhook, event), delivery jobs queued."""
    daily = await db.fetch(
        "SELECT metric, sum(n)::bigint AS n FROM health_daily WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1",
        tenant.id,
    )
    per_pair = await db.fetch(
        "SELECT count(*) AS n FROM webhook_deliveries WHERE tenant_id = $1 GROUP BY webhook_id, event_id",
        tenant.id,
    )
    return {
        "daily": {r["metric"]: r["n"] for r in daily},
        "counted": await db.fetchval(
            "SELECT count(*) FROM health_counted_events WHERE tenant_id = $1", tenant.id
        ),
        "deliveries": len(per_pair),
        "most_per_pair": max((r["n"] for r in per_pair), default=0),
        "jobs": await ctx["redis"].zcard(ctx["redis"].default_queue_name),
        "pending": len(await pending(db, tenant)),
    }


EXPECTED = {
    "daily": {"complained": MANY // 4, "consents_given": MANY - MANY // 4},
    "counted": MANY,
    # every event to the all-kinds webhook, the complaints also to the complaints-only one
    "deliveries": MANY + MANY // 4,
    "most_per_pair": 1,
    "jobs": MANY + MANY // 4,
    "pending": 0,
}


async def test_two_drains_at_once_apply_every_event_once(
    db: asyncpg.Connection, tenant: Tenant, batch_ctx: dict[str, Any]
) -> None:
    await append_events(db, tenant, MANY)
    first, second = await asyncio.gather(
        drain_effects(batch_ctx, tenant.id), drain_effects(batch_ctx, tenant.id)
    )
    assert first + second == MANY and first > 0 and second > 0  # they shared the work
    assert await outcome(db, tenant, batch_ctx) == EXPECTED


async def test_a_rolled_back_drain_leaves_its_batch_pending_and_counts_once_later(
    db: asyncpg.Connection, tenant: Tenant, batch_ctx: dict[str, Any]
) -> None:
    await append_events(db, tenant, MANY)
    batches = 0

    async def dies_in_the_third_batch(
        ctx: dict[str, Any], conn: asyncpg.Connection, batch: EffectBatch
    ) -> None:
        nonlocal batches
        batches += 1
        if batches == 3:  # after the real effects ran on this batch, before its commit
            raise ConnectionResetError("worker lost its database connection")

    with pytest.raises(ConnectionResetError):
        await drain_effects(
            {**batch_ctx, "effects": [*batch_ctx["effects"], dies_in_the_third_batch]}, tenant.id
        )
    half = await outcome(db, tenant, batch_ctx)
    assert (half["pending"], half["counted"], half["deliveries"]) == (
        MANY - 2 * BATCH,
        2 * BATCH,
        half["jobs"],
    )
    assert await drain_effects(batch_ctx, tenant.id) == MANY - 2 * BATCH
    assert await outcome(db, tenant, batch_ctx) == EXPECTED


async def test_a_drain_cancelled_mid_batch_loses_nothing(
    db: asyncpg.Connection, tenant: Tenant, batch_ctx: dict[str, Any]
) -> None:
    await append_events(db, tenant, MANY)
    stuck = asyncio.Event()

    async def hangs(ctx: dict[str, Any], conn: asyncpg.Connection, batch: EffectBatch) -> None:
        stuck.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(
        drain_effects({**batch_ctx, "effects": [*batch_ctx["effects"], hangs]}, tenant.id)
    )
    await stuck.wait()
    task.cancel()  # as arq does at the job timeout; a SIGKILL ends the session, which rolls back too
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(await pending(db, tenant)) == MANY
    assert await drain_effects(batch_ctx, tenant.id) == MANY
    assert await outcome(db, tenant, batch_ctx) == EXPECTED


async def test_a_batch_applied_again_adds_nothing(
    db: asyncpg.Connection, tenant: Tenant, batch_ctx: dict[str, Any]
) -> None:
    ids = await append_events(db, tenant, MANY)
    assert await drain_effects(batch_ctx, tenant.id) == MANY
    # as if a worker died after an effect's outside action but the claim had committed meanwhile
    await db.execute(
        "INSERT INTO pending_effects (tenant_id, event_id) SELECT $1, unnest($2::bigint[])", tenant.id, ids
    )
    assert await drain_effects(batch_ctx, tenant.id) == MANY
    assert await outcome(db, tenant, batch_ctx) == EXPECTED


async def test_a_write_while_the_drain_runs_enqueues_a_follow_up(
    db: asyncpg.Connection, tenant: Tenant, batch_ctx: dict[str, Any]
) -> None:
    redis = batch_ctx["redis"]
    assert await enqueue_drain(redis, tenant.id)
    assert not await enqueue_drain(redis, tenant.id)  # queued: it will see whatever is written next
    await redis.set(f"arq:in-progress:{drain_job_id(tenant.id)}", b"1", px=60_000)  # now it runs
    try:
        await enqueue_effects(redis, tenant.id, [1])
        queued = {raw.decode() for raw in await redis.zrange(redis.default_queue_name, 0, -1)}
        assert queued == {drain_job_id(tenant.id), drain_again_job_id(tenant.id)}
        await enqueue_effects(redis, tenant.id, [2])  # the follow-up is queued: nothing more
        assert await redis.zcard(redis.default_queue_name) == 2
    finally:
        await redis.delete(f"arq:in-progress:{drain_job_id(tenant.id)}")


async def test_enqueue_many_skips_jobs_already_queued(batch_ctx: dict[str, Any]) -> None:
    redis = batch_ctx["redis"]
    jobs = [(f"test-many-{i}", (1, i)) for i in range(2500)]
    assert await enqueue_many(redis, JOB_DELIVER_WEBHOOK, jobs[:10]) == 10
    assert await enqueue_many(redis, JOB_DELIVER_WEBHOOK, jobs) == 2490
    info = await Job("test-many-7", redis).info()
    assert info is not None and (info.function, info.args) == (JOB_DELIVER_WEBHOOK, (1, 7))
