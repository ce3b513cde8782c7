"""The import job, run in time slices, and the cron that picks up imports nobody is running.

A slice runs batches for at most SLICE_SECONDS, then gives the lease back and enqueues the next
slice under a job id made from the checkpoint (so a repeat at the same point runs once). Short
slices keep the job well inside arq's job timeout, whatever the file's size, and let other jobs run
in between. A killed worker's import is free again when its lease runs out; `resume_imports` then
enqueues it from its checkpoint.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from suppress import queue
from suppress.addresses import AddressHasher
from suppress.config import DerivedKeys
from suppress.effects import drain_soon
from suppress.imports.runs import LEASE, import_job_id
from suppress.imports.runs import run_import as run_import_core

log = logging.getLogger(__name__)

SLICE_SECONDS = 60.0
JOB_TIMEOUT = 300
MAX_TRIES = 20
# Unfinished imports untouched this long (and without a live lease) are enqueued again.
RESUME_GRACE = timedelta(seconds=30)
RESUME_BATCH = 100


def _hasher(ctx: dict[str, Any]) -> AddressHasher:
    hasher: AddressHasher | None = ctx.get("import_hasher")
    if hasher is None:
        hasher = AddressHasher(DerivedKeys.from_settings(ctx["settings"]).address_hash_key)
        ctx["import_hasher"] = hasher
    return hasher


async def run_import(ctx: dict[str, Any], tenant_id: int, import_id: int) -> str:
    """Run one slice of an import from its checkpoint; enqueue the next slice if there is more."""
    with queue.retry_on_outage(ctx, f"import {tenant_id}/{import_id}"):
        result = await run_import_core(
            ctx["pool"],
            ctx["queries"],
            _hasher(ctx),
            tenant_id,
            import_id,
            deadline=time.monotonic() + ctx.get("import_slice_seconds", SLICE_SECONDS),
        )
    # the slice's events wait in pending_effects: start their drain now, not at the sweeper's tick
    await drain_soon(ctx.get("redis"), tenant_id)
    if result.status == "more":
        await queue.enqueue(
            ctx["redis"],
            queue.JOB_RUN_IMPORT,
            tenant_id,
            import_id,
            job_id=import_job_id(tenant_id, import_id, result.bytes_done),
        )
    log.info("import %s/%s: %s after %d batch(es)", tenant_id, import_id, result.status, result.batches)
    return result.status


async def resume_imports(ctx: dict[str, Any]) -> int:
    """Enqueue unfinished imports that no runner holds (lost enqueue, killed worker)."""
    pool, queries = ctx["pool"], ctx["queries"]
    cutoff = datetime.now(UTC) - max(RESUME_GRACE, LEASE / 2)
    rows = await pool.fetch(queries.stalled_imports, cutoff, RESUME_BATCH)
    enqueued = 0
    for row in rows:
        tenant_id, import_id = row["tenant_id"], row["id"]
        if await queue.enqueue(
            ctx["redis"],
            queue.JOB_RUN_IMPORT,
            tenant_id,
            import_id,
            job_id=import_job_id(tenant_id, import_id, row["bytes_done"]),
        ):
            enqueued += 1
    if enqueued:
        log.info("re-enqueued %d unfinished import(s)", enqueued)
    return enqueued
