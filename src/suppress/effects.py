"""Side effects of ledger events: what a worker needs to know about one event, and the job names.

Every event inserted into the ledger gets a `pending_effects` row in the same transaction (a
trigger, see migration 0002). The API enqueues `apply_effects` after its write commits; the worker
fans the event out (outbound webhooks, ...) and then deletes the pending row. The sweeper
re-enqueues rows still pending, so an enqueue lost to a Redis outage or a killed worker only delays
the effects. Every effect must therefore be safe to run twice.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from suppress import queue
from suppress.sql import Queries

log = logging.getLogger(__name__)


class LedgerEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One ledger event as effects see it (topic and campaign by name, current address)."""

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


def effects_job_id(tenant_id: int, event_id: int) -> str:
    """The deterministic job id of one event's effects: enqueueing twice runs once."""
    return f"effects:{tenant_id}:{event_id}"


async def load_event(
    conn: asyncpg.Connection | asyncpg.Pool, queries: Queries, tenant_id: int, event_id: int
) -> LedgerEvent | None:
    """The event, or None when it does not exist."""
    row = await conn.fetchrow(queries.ledger_event, tenant_id, event_id)
    return None if row is None else msgspec.convert(dict(row.items()), LedgerEvent)


async def enqueue_effects(job_queue: queue.Queue | None, tenant_id: int, event_ids: list[int]) -> None:
    """Ask a worker to carry out the events' effects; a failure here is logged, never raised,
    because the sweeper will find the events still pending."""
    if job_queue is None:
        return
    for event_id in event_ids:
        try:
            await queue.enqueue(
                job_queue,
                queue.JOB_APPLY_EFFECTS,
                tenant_id,
                event_id,
                job_id=effects_job_id(tenant_id, event_id),
            )
        except Exception as exc:  # Redis down: the sweeper re-enqueues from pending_effects
            log.warning(
                "could not enqueue effects of event %s/%s (%s); the sweeper will",
                tenant_id,
                event_id,
                type(exc).__name__,
            )
            return
