"""Side effects of ledger events: what effects are given to work on, and how they are asked for.

Every event inserted into the ledger gets a `pending_effects` row in the same transaction (a
trigger, see migration 0002). After a write commits, the API enqueues the tenant's drain job
(`drain_effects`, one job id per tenant, so writes arriving together collapse into one job). The
worker claims pending events in batches and applies every effect to a whole batch with set-based
statements, in the transaction that deletes the batch's pending rows: the effects are done exactly
when the claim commits, and a failed effect or a killed worker leaves the batch pending. The sweeper
enqueues the drain of every tenant with events left pending, so an enqueue lost to a Redis outage
only delays the effects. Every effect must be safe to run twice (a batch may be applied again after
a worker died between an effect's outside action and the commit).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from suppress import queue
from suppress.sql import Queries

log = logging.getLogger(__name__)

# A write that finds its tenant's drain already running enqueues a second one this much later, in
# case the running one has made its last claim before the write committed.
AGAIN_DEFER = timedelta(seconds=1)


class LedgerEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One ledger event as a webhook payload shows it (topic and campaign by name, current address)."""

    tenant_id: int
    id: int
    channel: str
    address_hash: bytes
    kind: str
    topic: str | None
    campaign: str | None
    source: str
    actor: str | None
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    address: str | None


class EffectBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Pending events of one tenant claimed together: what every effect is applied to at once."""

    tenant_id: int
    event_ids: list[int]
    claimed_at: datetime


def drain_job_id(tenant_id: int) -> str:
    """The deterministic job id of a tenant's drain: enqueueing while one is queued adds nothing."""
    return f"effects:{tenant_id}"


def drain_again_job_id(tenant_id: int) -> str:
    """The id of the follow-up drain enqueued while the first one runs."""
    return f"effects:{tenant_id}:again"


async def load_event(
    conn: asyncpg.Connection | asyncpg.Pool, queries: Queries, tenant_id: int, event_id: int
) -> LedgerEvent | None:
    """The event, or None when it does not exist."""
    row = await conn.fetchrow(queries.ledger_event, tenant_id, event_id)
    return None if row is None else msgspec.convert(dict(row.items()), LedgerEvent)


async def enqueue_drain(job_queue: queue.Queue, tenant_id: int, *, defer: timedelta = AGAIN_DEFER) -> bool:
    """Make sure a drain of the tenant's pending effects will start; True when one was enqueued.

    A queued drain will see every event committed so far. A running one may already have made its
    last (empty) claim, so then a follow-up is enqueued `defer` later under a second id."""
    if await queue.enqueue(job_queue, queue.JOB_DRAIN_EFFECTS, tenant_id, job_id=drain_job_id(tenant_id)):
        return True
    if not await queue.is_running(job_queue, drain_job_id(tenant_id)):
        return False
    return await queue.enqueue(
        job_queue, queue.JOB_DRAIN_EFFECTS, tenant_id, job_id=drain_again_job_id(tenant_id), defer=defer
    )


async def enqueue_effects(job_queue: queue.Queue | None, tenant_id: int, event_ids: list[int]) -> None:
    """Ask a worker to carry out the events' effects (by draining the tenant's pending effects)."""
    if event_ids:
        await drain_soon(job_queue, tenant_id)


async def drain_soon(job_queue: queue.Queue | None, tenant_id: int) -> None:
    """Enqueue the tenant's drain; a failure is logged, never raised, because the sweeper will find
    the events still pending."""
    if job_queue is None:
        return
    try:
        await enqueue_drain(job_queue, tenant_id)
    except Exception as exc:  # Redis down: the sweeper enqueues the drain from pending_effects
        log.warning(
            "could not enqueue the effects drain of tenant %s (%s); the sweeper will",
            tenant_id,
            type(exc).__name__,
        )
