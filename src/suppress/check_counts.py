"""The day's check outcome counters, kept in each API process and added to `check_counts` in bulk.

A check never writes: it adds its batch's outcome counts to this process's pending totals (a dict
update, no await). Every `interval` seconds one statement adds all pending totals to
`check_counts`, and the lifespan flushes once more when the process stops gracefully. Before this,
every check wrote the day's row of its tenant, channel and campaign, so concurrent checks queued on
that row's lock and each waited for its own commit to be flushed to disk.

What readers see: `check_counts` (campaign stats, list health) lags the checks by at most one
interval. A process that is killed (SIGKILL, a crash, the machine going away) loses the counts of
its last interval at most; a flush that fails (database down) keeps its counts for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from datetime import date

import asyncpg

from suppress.db import DATABASE_DOWN
from suppress.policy import Decision
from suppress.sql import Queries

log = logging.getLogger("suppress.check_counts")

DEFAULT_INTERVAL = 1.0  # seconds between flushes

# tenant, day, channel, campaign (0 = none), allowed, outcome
CountKey = tuple[int, date, str, int, bool, str]


def outcome(decision: Decision) -> str:
    """The counted label of a decision: its basis when allowed, its reason when denied."""
    return (decision.basis if decision.allowed else decision.reason) or "unknown"


class CheckCounts:
    """This process's check outcome counts not yet in `check_counts`."""

    def __init__(self, pool: asyncpg.Pool, queries: Queries, interval: float = DEFAULT_INTERVAL) -> None:
        self._pool = pool
        self._queries = queries
        self.interval = interval
        self._pending: dict[CountKey, int] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def add(
        self, tenant_id: int, day: date, channel: str, campaign_id: int | None, outcomes: Counter[Decision]
    ) -> None:
        """Count one batch's outcomes (no I/O: the next flush writes them)."""
        pending = self._pending
        campaign = campaign_id or 0
        for decision, n in outcomes.items():
            key = (tenant_id, day, channel, campaign, decision.allowed, outcome(decision))
            pending[key] = pending.get(key, 0) + n

    @property
    def pending(self) -> int:
        """Recipients counted and not yet flushed."""
        return sum(self._pending.values())

    async def flush(self) -> int:
        """Add every pending count to `check_counts` in one statement; returns the counter rows written.

        On failure the counts go back to pending (for the next flush) and the error is raised.
        """
        async with self._lock:
            taken, self._pending = self._pending, {}
            if not taken:
                return 0
            # Key order: two processes flushing at once lock the rows they share in the same order.
            keys = sorted(taken)
            try:
                await self._pool.execute(
                    self._queries.add_check_counts,
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [k[2] for k in keys],
                    [k[3] for k in keys],
                    [k[4] for k in keys],
                    [k[5] for k in keys],
                    [taken[k] for k in keys],
                )
            except BaseException:
                for key, n in taken.items():
                    self._pending[key] = self._pending.get(key, 0) + n
                raise
            return len(keys)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                # Shielded: a stop never cancels a flush whose statement may already have been
                # applied (its counts would be added again); the last flush waits for it instead.
                await asyncio.shield(self.flush())
            except DATABASE_DOWN as exc:
                log.warning("check counts not flushed (kept for the next try): %s", type(exc).__name__)
            except Exception:
                log.exception("check counts not flushed (kept for the next try)")

    def start(self) -> None:
        """Flush every `interval` seconds from now on, in this event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="check-counts-flush")

    async def stop(self) -> None:
        """Stop the periodic flush, then flush what is left (graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("check counts of %d recipient(s) lost at shutdown", self.pending)
