"""Check outcome counts: gathered per process with no write on the check path, flushed in bulk."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.check_counts import CheckCounts
from suppress.policy import DENY
from suppress.sql import Queries
from tests.conftest import Tenant
from tests.support import check, flush_check_counts

Client = AsyncTestClient[Litestar]


async def _counts(db: asyncpg.Connection, tenant: Tenant, campaign: str) -> dict[tuple[bool, str], int]:
    rows = await db.fetch(
        """SELECT cc.allowed, cc.outcome, cc.recipients FROM check_counts cc
           JOIN campaigns c ON c.id = cc.campaign_id WHERE cc.tenant_id = $1 AND c.name = $2""",
        tenant.id,
        campaign,
    )
    return {(r["allowed"], r["outcome"]): r["recipients"] for r in rows}


async def test_a_check_does_not_wait_for_a_locked_day_counter(
    db: asyncpg.Connection, database_url: str, client: Client, tenant: Tenant
) -> None:
    """Checks used to update the day's counter row themselves: a check queued behind any other
    transaction holding that row (another check's, or a reader's FOR UPDATE) until it committed."""
    await check(client, tenant, ["a@example.no"], campaign="locked")
    await flush_check_counts(client)
    assert await _counts(db, tenant, "locked") == {(False, "no_basis"): 1}
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT * FROM check_counts WHERE tenant_id = $1 FOR UPDATE", tenant.id)
            # answered while the row stays locked
            results = await asyncio.wait_for(
                check(client, tenant, ["b@example.no", "c@example.no"], campaign="locked"), timeout=10
            )
            assert [r["reason"] for r in results] == ["no_basis", "no_basis"]
    finally:
        await holder.close()
    await flush_check_counts(client)
    assert await _counts(db, tenant, "locked") == {(False, "no_basis"): 3}


async def test_counts_reach_the_table_by_themselves_within_the_interval(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    interval = client.app.state.check_counts.interval
    await check(client, tenant, ["a@example.no", "not-an-address"], campaign="periodic")
    deadline = asyncio.get_running_loop().time() + interval * 10 + 5
    while not (counted := await _counts(db, tenant, "periodic")):
        assert asyncio.get_running_loop().time() < deadline, "the counts were never flushed"
        await asyncio.sleep(0.05)
    assert counted == {(False, "no_basis"): 1, (False, "invalid_address"): 1}


async def test_counts_of_many_checks_add_up_in_one_flush(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await flush_check_counts(client)
    await asyncio.gather(*(check(client, tenant, [f"p{i}@example.no"], campaign="many") for i in range(20)))
    await check(client, tenant, ["p0@example.no", "bad"], campaign="many")
    await flush_check_counts(client)
    assert await _counts(db, tenant, "many") == {(False, "no_basis"): 21, (False, "invalid_address"): 1}


async def test_a_failed_flush_keeps_its_counts_for_the_next(
    database_url: str, db: asyncpg.Connection, queries: Queries, tenant: Tenant
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    counts = CheckCounts(pool, queries, interval=3600)
    today = datetime.now(UTC).date()
    counts.add(tenant.id, today, "email", None, Counter({DENY["no_basis"]: 2}))
    await pool.close()
    try:
        await counts.flush()
    except asyncpg.InterfaceError:
        pass
    else:
        raise AssertionError("a flush on a closed pool must fail")
    assert counts.pending == 2
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        counts = _with_pool(counts, pool)
        counts.add(tenant.id, today, "email", None, Counter({DENY["no_basis"]: 1}))
        await counts.stop()  # the last flush of a graceful shutdown
        assert counts.pending == 0
    finally:
        await pool.close()
    assert (
        await db.fetchval(
            "SELECT recipients FROM check_counts WHERE tenant_id = $1 AND campaign_id = 0 AND outcome = 'no_basis'",
            tenant.id,
        )
        == 3
    )


def _with_pool(counts: CheckCounts, pool: asyncpg.Pool) -> CheckCounts:
    counts._pool = pool  # the same pending counts, through a pool that works again
    return counts
