"""Unsubscribes spooled to Redis while PostgreSQL was down, applied once it is back."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from suppress.effects import enqueue_effects
from suppress.queue import retry_on_outage
from suppress.unsubscribe import UnsubscribeOrder, apply_order

log = logging.getLogger(__name__)


async def apply_spooled_unsubscribe(ctx: dict[str, Any], order: dict[str, Any]) -> str:
    """Apply a spooled unsubscribe with its original time; retry for as long as the database is down."""
    unsubscribe = msgspec.convert(order, UnsubscribeOrder)
    with retry_on_outage(ctx, "spooled unsubscribe"):
        event_id = await apply_order(ctx["pool"], ctx["queries"], unsubscribe)
    if event_id is None:
        return "already"
    await enqueue_effects(ctx.get("redis"), unsubscribe.tenant_id, [event_id])
    return "applied"
