"""Jobs that keep suppressions current."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from suppress.intents import LiftIntent
from suppress.writes import Writer

BATCH = 500


async def expire_suppressions(ctx: dict[str, Any], batch: int = BATCH) -> int:
    """Lift suppressions whose expiry has passed, with a ledger event each; returns how many.

    The decision already ignores an expired suppression, so this only tidies the projection and
    records the lift. Safe to run twice: a suppression re-armed meanwhile is left alone.
    """
    pool, queries = ctx["pool"], ctx["queries"]
    lifted = 0
    while True:
        now = datetime.now(UTC)
        due = await pool.fetch(queries.expired_suppressions, now, batch)
        by_tenant: dict[int, list[LiftIntent]] = {}
        for row in due:
            by_tenant.setdefault(row["tenant_id"], []).append(
                LiftIntent(
                    channel=row["channel"],
                    address_hash=row["address_hash"],
                    topic_id=row["topic_id"],
                    reason=row["reason"],
                    expired_by=now,
                    source="expiry",
                    actor="worker",
                    occurred_at=row["expires_at"],
                    data={"cause": "expired"},
                )
            )
        writer = Writer(pool, queries, ctx.get("redis"))
        for tenant_id, tenant_intents in by_tenant.items():
            applied = await writer.apply(tenant_id, tenant_intents)
            lifted += len(applied.event_ids)
        if len(due) < batch:
            return lifted
