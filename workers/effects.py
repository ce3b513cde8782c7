"""The drain job that applies effects to pending events in batches, and the sweeper behind it.

An effect is `async def effect(ctx, conn, batch) -> AfterCommit | None`: it acts on the whole
`EffectBatch` with set-based statements on `conn`, inside the transaction that claims the batch, and
may return a coroutine function to run once that transaction has committed (e.g. enqueueing the
jobs for rows it created, which must not run before those rows are visible).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from suppress.effects import EffectBatch, enqueue_drain

log = logging.getLogger(__name__)

AfterCommit = Callable[[], Awaitable[None]]
Effect = Callable[[dict[str, Any], asyncpg.Connection, EffectBatch], Awaitable[AfterCommit | None]]

# Events claimed and applied per transaction.
BATCH = 10_000
# A drain hands over to a fresh job after this long, well inside the job timeout.
DRAIN_SECONDS = 120.0
# Give the API's own enqueue time to land before the sweeper steps in.
SWEEP_GRACE = timedelta(seconds=15)


async def apply_batch(ctx: dict[str, Any], tenant_id: int, limit: int = BATCH) -> int:
    """Claim up to `limit` of the tenant's pending events and apply every effect to them in the
    claiming transaction; returns how many were claimed (0: nothing was pending)."""
    pool, queries = ctx["pool"], ctx["queries"]
    effects: list[Effect] = ctx.get("effects", [])
    after_commit: list[AfterCommit] = []
    async with pool.acquire() as conn, conn.transaction():
        event_ids: list[int] = await conn.fetchval(queries.claim_effects, tenant_id, limit)
        if not event_ids:
            return 0
        batch = EffectBatch(tenant_id=tenant_id, event_ids=event_ids, claimed_at=datetime.now(UTC))
        for effect in effects:
            after = await effect(ctx, conn, batch)
            if after is not None:
                after_commit.append(after)
    for after in after_commit:
        await after()
    return len(event_ids)


async def drain_effects(ctx: dict[str, Any], tenant_id: int) -> int:
    """Apply the effects of the tenant's pending events, batch by batch, until a claim finds none
    (events written meanwhile included); returns how many events were applied. Safe to run twice,
    also at once: concurrent drains claim disjoint batches."""
    deadline = time.monotonic() + ctx.get("effects_drain_seconds", DRAIN_SECONDS)
    limit: int = ctx.get("effects_batch", BATCH)
    applied = 0
    while claimed := await apply_batch(ctx, tenant_id, limit):
        applied += claimed
        if time.monotonic() > deadline:
            await enqueue_drain(ctx["redis"], tenant_id, defer=timedelta(0))
            log.info("drained %d event(s) of tenant %s; a fresh job goes on", applied, tenant_id)
            break
    return applied


async def sweep_pending_effects(ctx: dict[str, Any]) -> int:
    """Enqueue the drain of every tenant with events pending past the grace period (a lost enqueue,
    a killed worker); returns how many drains were enqueued."""
    pool, queries, redis = ctx["pool"], ctx["queries"], ctx["redis"]
    rows = await pool.fetch(queries.tenants_with_stale_effects, datetime.now(UTC) - SWEEP_GRACE)
    enqueued = 0
    for row in rows:
        enqueued += await enqueue_drain(redis, row["tenant_id"])
    if enqueued:
        log.info("sweeper enqueued the effects drain of %d tenant(s)", enqueued)
    return enqueued
