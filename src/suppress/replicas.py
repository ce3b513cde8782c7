"""Which database a read uses: a streaming replica within the replay-lag bound, or the primary.

`Reads.run(principal, read)` runs `read(pool)` on a replica when one is fresh enough, else on the
primary; a replica that fails under it is marked down and the read runs again on the primary.

Freshness is measured without comparing clocks across servers. A monitor task samples the
primary's WAL position every `probe_interval` (time taken *before* the query, so every commit
acknowledged before that time lies at or below the position), then asks each replica how far it
has replayed. A replica that has replayed up to a sample's position holds every commit made before
that sample's time: its state is at most `now - that time` old. A read goes to a replica only while
that age is within the bound (SUPPRESS_REPLICA_MAX_LAG_MS). A replica that fails a probe is skipped
and tried again later, with a growing pause.

Read-your-writes: after an API key's acknowledged write, the primary's WAL position (which is past
the write's commit) is stored in Redis as that key's *fence* (`note_write`, with a TTL; shared by
every API process); after a recipient's own unsubscribe (page, one-click) as its tenant's fence
(`note_recipient_write`). A read for a key goes to a replica only when the replica had already
replayed past both fences at its last probe; otherwise it routes around it, to the primary.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import asyncpg

from suppress import metrics
from suppress.db import DATABASE_DOWN, create_pool
from suppress.errors import Unavailable
from suppress.queue import Queue
from suppress.tenants import Principal

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A read that fails on a replica with one of these runs again on the primary. A hot standby
#: cancels a query that conflicts with replay with a serialization failure (40001).
REPLICA_FAILURES: tuple[type[BaseException], ...] = (*DATABASE_DOWN, asyncpg.SerializationError, Unavailable)
#: How long a fence outlives its write: far beyond any lag a replica may have and still be read.
FENCE_TTL_SECONDS = 300
FENCE_KEY = "suppress:fence:key:{key_id}"
# A recipient's own unsubscribe (page, one-click) fences every key of its tenant.
TENANT_FENCE_KEY = "suppress:fence:tenant:{tenant_id}"
PROBE_TIMEOUT = 2.0
#: What a probe of an unreachable or broken server raises.
PROBE_FAILURES: tuple[type[BaseException], ...] = (*DATABASE_DOWN, asyncpg.PostgresError)
RETRY_FIRST = 0.5
RETRY_MAX = 30.0

_PRIMARY_LSN = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"
_REPLICA_LSN = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() - '0/0'::pg_lsn"
# Keep the larger position: two writes of one key may record theirs out of order.
_RAISE_FENCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


class Replica:
    """One streaming replica: its pool (opened lazily), and what the last probe found."""

    def __init__(self, name: str, dsn: str) -> None:
        self.name = name  # "replica1", ...: DSNs may hold passwords and never reach a log
        self.dsn = dsn
        self.pool: asyncpg.Pool | None = None
        self.replay_lsn = -1
        self.fresh_as_of = -math.inf  # monotonic time before which every commit is replayed here
        self.retry_at = 0.0
        self.pause = RETRY_FIRST

    @property
    def up(self) -> bool:
        return self.pool is not None and self.fresh_as_of > -math.inf


class ReplicaSet:
    """The replicas, probed by a background task; `choose()` picks one that is fresh enough."""

    def __init__(
        self,
        primary: asyncpg.Pool,
        dsns: Sequence[str],
        *,
        max_lag: float,
        pool_size: int = 10,
        probe_interval: float | None = None,
    ) -> None:
        self._primary = primary
        self.replicas = [Replica(f"replica{n}", dsn) for n, dsn in enumerate(dsns, 1)]
        self.max_lag = max_lag
        self._pool_size = pool_size
        # A fresh replica stays readable between probes only if they come well within the bound.
        self.probe_interval = probe_interval or min(max(max_lag / 4, 0.05), 1.0)
        # (time, position) of the primary, oldest first; long enough to cover the bound.
        self._samples: deque[tuple[float, int]] = deque()
        self._next = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Probe once (so the first reads may already use a replica), then keep probing."""
        await self.probe()
        self._task = asyncio.create_task(self._monitor(), name="replica-monitor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for replica in self.replicas:
            await self._drop(replica)

    def choose(self, fence: int | None) -> Replica | None:
        """A replica whose state is within the bound and past `fence`, round robin; else None."""
        now = time.monotonic()
        count = len(self.replicas)
        for step in range(count):
            replica = self.replicas[(self._next + step) % count]
            if not replica.up or now - replica.fresh_as_of > self.max_lag:
                continue
            if fence is not None and replica.replay_lsn < fence:
                continue
            self._next = (self._next + step + 1) % count
            return replica
        return None

    async def mark_down(self, replica: Replica, reason: BaseException) -> None:
        """Stop reading `replica` until a later probe finds it well."""
        if replica.pool is None:
            return
        log.warning("%s failed (%s); reading from the primary", replica.name, type(reason).__name__)
        replica.retry_at = time.monotonic() + replica.pause
        replica.pause = min(replica.pause * 2, RETRY_MAX)
        await self._drop(replica)

    async def _drop(self, replica: Replica) -> None:
        replica.fresh_as_of = -math.inf
        metrics.REPLICA_STALENESS.labels(replica.name).set(math.inf)
        pool, replica.pool = replica.pool, None
        if pool is not None:
            pool.terminate()

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            try:
                await self.probe()
            except Exception:  # the monitor must outlive any one failed probe
                log.exception("replica probe failed")

    async def probe(self) -> None:
        """Sample the primary's position, then measure every replica against the samples."""
        taken = time.monotonic()
        try:
            position: int = int(await self._primary.fetchval(_PRIMARY_LSN, timeout=PROBE_TIMEOUT))
        except PROBE_FAILURES:
            return  # without the primary nothing can be measured; replicas keep their last state
        self._samples.append((taken, position))
        horizon = taken - 4 * self.max_lag - 4 * self.probe_interval
        while len(self._samples) > 2 and self._samples[0][0] < horizon:
            self._samples.popleft()
        await asyncio.gather(*(self._probe_replica(r) for r in self.replicas))

    async def _probe_replica(self, replica: Replica) -> None:
        now = time.monotonic()
        if replica.pool is None:
            if now < replica.retry_at:
                return
            try:
                replica.pool = await asyncio.wait_for(
                    create_pool(replica.dsn, size=self._pool_size, min_size=1), PROBE_TIMEOUT
                )
            except (Unavailable, TimeoutError) as exc:
                replica.pool = None
                await self._mark_unreachable(replica, exc)
                return
        assert replica.pool is not None
        try:
            row = await replica.pool.fetchrow(_REPLICA_LSN, timeout=PROBE_TIMEOUT)
        except PROBE_FAILURES as exc:
            await self.mark_down(replica, exc)
            return
        assert row is not None
        if not row[0] or row[1] is None:  # promoted, or not a standby at all: not a replica to read
            await self.mark_down(replica, RuntimeError("not in recovery"))
            return
        replica.replay_lsn = int(row[1])
        # The newest sample at or below the replayed position: every commit before it is here.
        positions = [p for _, p in self._samples]
        at = bisect.bisect_right(positions, replica.replay_lsn)
        replica.fresh_as_of = self._samples[at - 1][0] if at else -math.inf
        replica.pause = RETRY_FIRST
        metrics.REPLICA_STALENESS.labels(replica.name).set(now - replica.fresh_as_of)

    async def _mark_unreachable(self, replica: Replica, reason: BaseException) -> None:
        log.warning("%s cannot be reached (%s); retrying later", replica.name, type(reason).__name__)
        replica.retry_at = time.monotonic() + replica.pause
        replica.pause = min(replica.pause * 2, RETRY_MAX)
        replica.fresh_as_of = -math.inf
        metrics.REPLICA_STALENESS.labels(replica.name).set(math.inf)


class Route:
    """Where one request's reads go; falls back to the primary when the replica fails under it."""

    def __init__(self, primary: asyncpg.Pool, replicas: ReplicaSet | None, replica: Replica | None) -> None:
        self._primary = primary
        self._replicas = replicas
        # the monitor may have dropped the replica's pool since it was chosen
        self.replica = replica if replica is not None and replica.pool is not None else None
        self.pool = self.replica.pool if self.replica is not None and self.replica.pool else primary

    async def run(self, read: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """`read(pool)` on the chosen pool; on the primary again if a replica fails it."""
        if self.replica is None:
            metrics.DB_READS.labels("primary").inc()
            return await read(self.pool)
        try:
            result = await read(self.pool)
        except REPLICA_FAILURES as exc:
            await self.give_up_replica(exc)
            return await self.run(read)
        metrics.DB_READS.labels("replica").inc()
        return result

    async def give_up_replica(self, exc: BaseException) -> None:
        """Read from the primary from now on (the replica is marked down unless it only cancelled
        a query that conflicted with replay)."""
        replica, self.replica, self.pool = self.replica, None, self._primary
        if (
            replica is not None
            and self._replicas is not None
            and not isinstance(exc, asyncpg.SerializationError)
        ):
            await self._replicas.mark_down(replica, exc)


class Reads:
    """The one place that decides which pool a read uses (primary only when no replica is set)."""

    def __init__(
        self, primary: asyncpg.Pool, replicas: ReplicaSet | None = None, fences: Queue | None = None
    ) -> None:
        self.primary = primary
        self.replicas = replicas
        self._fences = fences

    async def route(self, principal: Principal | None) -> Route:
        """Where this caller's reads go now; `None`: a read with no read-your-writes need."""
        if self.replicas is None:
            return Route(self.primary, None, None)
        fence: int | None = None
        if principal is not None:
            try:
                fence = await self._fence(principal)
            except Exception:  # no way to know the caller's last write: only the primary is safe
                log.warning("cannot read the write fence; reading from the primary")
                return Route(self.primary, self.replicas, None)
        return Route(self.primary, self.replicas, self.replicas.choose(fence))

    async def run(self, principal: Principal | None, read: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """`read(pool)` where this caller's reads go (see `route`)."""
        return await (await self.route(principal)).run(read)

    async def _fence(self, principal: Principal) -> int | None:
        """The last write this caller must see: its key's own, or a recipient's in its tenant."""
        if self._fences is None:
            return None
        keys = (
            FENCE_KEY.format(key_id=principal.key_id),
            TENANT_FENCE_KEY.format(tenant_id=principal.tenant_id),
        )
        found = await cast("Awaitable[list[bytes | None]]", self._fences.mget(keys))
        positions = [int(raw) for raw in found if raw is not None]
        return max(positions) if positions else None

    async def note_write(self, principal: Principal) -> None:
        """After an acknowledged write by this key: its later reads must see it."""
        await self._raise_fence(FENCE_KEY.format(key_id=principal.key_id))

    async def note_recipient_write(self, tenant_id: int) -> None:
        """After a recipient's own acknowledged unsubscribe: every key of the tenant must see it."""
        await self._raise_fence(TENANT_FENCE_KEY.format(tenant_id=tenant_id))

    async def _raise_fence(self, key: str) -> None:
        if self.replicas is None or self._fences is None:
            return
        position = int(await self.primary.fetchval(_PRIMARY_LSN))
        await cast(
            "Awaitable[Any]", self._fences.eval(_RAISE_FENCE, 1, key, str(position), str(FENCE_TTL_SECONDS))
        )

    async def close(self) -> None:
        if self.replicas is not None:
            await self.replicas.close()


async def open_reads(
    primary: asyncpg.Pool,
    replica_urls: Sequence[str],
    *,
    max_lag_ms: int,
    pool_size: int,
    fences: Queue | None,
) -> Reads:
    """Reads for the settings: primary only without replicas, else replicas under a monitor."""
    if not replica_urls:
        return Reads(primary)
    replicas = ReplicaSet(primary, replica_urls, max_lag=max_lag_ms / 1000, pool_size=pool_size)
    await replicas.start()
    return Reads(primary, replicas, fences)
