"""Jobs that keep suppressions current."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
        for row in due:
            async with pool.acquire() as conn:
                done = await conn.fetch(
                    queries.delete_suppressions,
                    row["tenant_id"],
                    row["channel"],
                    row["address_hash"],
                    row["topic_id"],
                    [row["reason"]],
                    "expiry",
                    "worker",
                    row["expires_at"],
                    {"cause": "expired"},
                    now,
                )
            lifted += len(done)
        if len(due) < batch:
            return lifted
