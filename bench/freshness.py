"""What reading the worker's backlog adds to a list-health report.

`health_overview` counts the tenant's pending effects (up to `health.PENDING_COUNT_LIMIT`) and
finds the oldest, so that the report can say how fresh it is. This measures a whole report
(`HealthService.report`, the four reads on one connection) with 0 pending effects (the baseline,
measured in the same run) and with 50 000 (a large import not yet counted), 100 000 (the cap) and
1 000 000 pending, and prints the median over `--runs` runs of each run's median latency of
`--requests` reports, and the ratio to the baseline.

    uv run python bench/freshness.py
    uv run python bench/freshness.py --runs 3 --requests 20

Uses its own database, `suppress_bench_freshness`, on the local server (`--admin-dsn`, default
postgresql://postgres@127.0.0.1:5432/postgres), made and dropped by the run. The pending rows are
plain inserts into `pending_effects` (no events behind them: nothing reads them but the count).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime

import asyncpg

from suppress.db import create_pool
from suppress.health import HealthService
from suppress.migrate import migrate
from suppress.sql import load_queries
from suppress.tenants import create_tenant

DATABASE = "suppress_bench_freshness"
BACKLOGS = (0, 50_000, 100_000, 1_000_000)


def _dsn(admin_dsn: str, database: str) -> str:
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{database}"


async def _set_backlog(pool: asyncpg.Pool, tenant_id: int, n: int) -> None:
    await pool.execute("DELETE FROM pending_effects WHERE tenant_id = $1", tenant_id)
    await pool.execute(
        "INSERT INTO pending_effects (tenant_id, event_id, created_at)"
        " SELECT $1, g, now() - interval '10 minutes' FROM generate_series(1, $2::bigint) g",
        tenant_id,
        n,
    )
    await pool.execute("VACUUM (ANALYZE) pending_effects")


async def _run_median_ms(service: HealthService, tenant_id: int, requests: int) -> float:
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        await service.report(tenant_id, datetime.now(UTC))
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()

    admin = await asyncpg.connect(args.admin_dsn)
    await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    await admin.execute(f"CREATE DATABASE {DATABASE}")
    try:
        pool = await create_pool(_dsn(args.admin_dsn, DATABASE), size=2)
        try:
            queries = load_queries()
            async with pool.acquire() as conn:
                await migrate(conn)
                tenant = await create_tenant(conn, queries, "bench")
            service = HealthService(pool, queries)
            medians: dict[int, list[float]] = {n: [] for n in BACKLOGS}
            for n in BACKLOGS:
                await _set_backlog(pool, tenant.tenant_id, n)
                report = await service.report(tenant.tenant_id, datetime.now(UTC))  # warm-up, and a check
                assert report.freshness.pending_effects == min(n, 100_000), report.freshness
                assert report.freshness.behind == (n > 0)
                for _ in range(args.runs):
                    medians[n].append(await _run_median_ms(service, tenant.tenant_id, args.requests))
        finally:
            await pool.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        await admin.close()

    base = statistics.median(medians[0])
    print(f"report latency, median of {args.runs} runs x {args.requests} reports")
    print("| pending effects | report ms | ratio to 0 pending |")
    print("|---:|---:|---:|")
    for n in BACKLOGS:
        ms = statistics.median(medians[n])
        print(f"| {n:,} | {ms:.2f} | {ms / base:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
