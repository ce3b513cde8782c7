"""List-health jobs: the effect that counts ledger events (a batch at a time), and the crons that
refresh each tenant's snapshot (at most a minute old) and prune what counting no longer needs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg

from suppress import queue
from suppress.effects import EffectBatch
from suppress.rollups import count_events, prune_counted_events, refresh_tenant

log = logging.getLogger(__name__)


def refresh_job_id(tenant_id: int) -> str:
    """One refresh per tenant queued or running at a time: a slow one is never run twice at once."""
    return f"health-refresh:{tenant_id}"


async def update_health(ctx: dict[str, Any], conn: asyncpg.Connection, batch: EffectBatch) -> None:
    """An effect: add the batch's events to the list-health counters in one statement. Safe to run
    twice, also at once (each event counts once)."""
    await count_events(conn, ctx["queries"], batch.tenant_id, batch.event_ids)


async def schedule_health_refresh(ctx: dict[str, Any]) -> int:
    """Cron: enqueue one refresh per tenant (workers share them); returns how many were enqueued."""
    pool, queries = ctx["pool"], ctx["queries"]
    enqueued = 0
    for row in await pool.fetch(queries.health_tenants):
        tenant_id = row["id"]
        if await queue.enqueue(
            ctx["redis"], queue.JOB_REFRESH_HEALTH, tenant_id, job_id=refresh_job_id(tenant_id)
        ):
            enqueued += 1
    return enqueued


async def refresh_tenant_health(ctx: dict[str, Any], tenant_id: int) -> str:
    """Recompute one tenant's campaign check totals and state snapshot."""
    done = await refresh_tenant(ctx["pool"], ctx["queries"], tenant_id, datetime.now(UTC))
    if done is None:
        return "gone"
    if done.duration_ms > 10_000:
        log.warning(
            "health refresh of tenant %s took %d ms (%d recipients in %d groups)",
            tenant_id,
            done.duration_ms,
            done.recipients,
            done.groups,
        )
    return f"{done.recipients} recipients in {done.groups} groups, {done.duration_ms} ms"


async def prune_health(ctx: dict[str, Any]) -> int:
    """Cron: forget counted events whose effects are long done; returns how many."""
    pruned = await prune_counted_events(ctx["pool"], ctx["queries"], datetime.now(UTC))
    if pruned:
        log.info("forgot %d counted event(s)", pruned)
    return pruned
