"""The effects job and the sweeper that makes sure no event's effects are forgotten."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from suppress import queue
from suppress.effects import effects_job_id, load_event

log = logging.getLogger(__name__)

# Give the API's own enqueue time to land before the sweeper steps in.
SWEEP_GRACE = timedelta(seconds=15)
SWEEP_BATCH = 5000


async def apply_effects(ctx: dict[str, Any], tenant_id: int, event_id: int) -> str:
    """Carry out one event's effects, then mark them done. Safe to run twice."""
    pool, queries = ctx["pool"], ctx["queries"]
    event = await load_event(pool, queries, tenant_id, event_id)
    if event is None:
        await pool.execute(queries.finish_effects, tenant_id, event_id)
        return "gone"
    for effect in ctx.get("effects", []):
        await effect(ctx, event)
    await pool.execute(queries.finish_effects, tenant_id, event_id)
    return "done"


async def sweep_pending_effects(ctx: dict[str, Any]) -> int:
    """Re-enqueue effects still pending after the grace period; returns how many were enqueued."""
    pool, queries, redis = ctx["pool"], ctx["queries"], ctx["redis"]
    cutoff = datetime.now(UTC) - SWEEP_GRACE
    rows = await pool.fetch(queries.stale_pending_effects, cutoff, SWEEP_BATCH)
    enqueued = 0
    for row in rows:
        tenant_id, event_id = row["tenant_id"], row["event_id"]
        if await queue.enqueue(
            redis, queue.JOB_APPLY_EFFECTS, tenant_id, event_id, job_id=effects_job_id(tenant_id, event_id)
        ):
            enqueued += 1
    if enqueued:
        log.info("sweeper re-enqueued the effects of %d event(s)", enqueued)
    return enqueued
