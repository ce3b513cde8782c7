"""The sealer in the worker: every second, close each tenant's unsealed events into a checkpoint
and enqueue the checkpoint's webhook deliveries (the redelivery cron catches a lost enqueue)."""

from __future__ import annotations

import logging
from typing import Any

from suppress.ledger import ledger_key
from suppress.sealer import seal_all
from workers.webhooks import enqueue_delivery

log = logging.getLogger(__name__)


def open_ledger(ctx: dict[str, Any]) -> None:
    """Put the checkpoint key into ctx (worker start-up)."""
    ctx["ledger_key"] = ledger_key(ctx["settings"].require_secret())


async def seal_ledgers(ctx: dict[str, Any]) -> int:
    """Seal every tenant's unsealed events; returns how many checkpoints were made. Safe to run
    twice at once: a tenant being sealed by one run is skipped by the other."""
    made = await seal_all(ctx["pool"], ctx["queries"], ctx["ledger_key"])
    for sealed in made:
        for delivery_id in sealed.deliveries:
            await enqueue_delivery(ctx, sealed.checkpoint.tenant, delivery_id)
    if made:
        log.debug("sealed %d checkpoint(s)", len(made))
    return len(made)
