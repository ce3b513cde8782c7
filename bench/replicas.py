"""Check throughput reading from a streaming replica against reading from the primary.

Starts its own embedded primary and hot standby (`suppress.devstack.replication`, under a
temporary folder, stopped at the end), loads one tenant with --rows recipient rows (a third
suppressed, a third consented, a third unknown to the check) with plain SQL, and runs the check
service in-process (`CheckService.check`, no HTTP) with its reads routed:

- primary:  `Reads(pool)`, as without SUPPRESS_DATABASE_REPLICA_URLS;
- replica:  a `ReplicaSet` on the standby (the monitor running), no write fence to look up;
- fenced:   the same, plus the caller's write fence read from Redis on every check (--redis-url),
            i.e. what a deployment with replicas does per check.

Each workload is run --runs times per route, the routes interleaved, after one warm-up: checks of
1 recipient (--single calls, one after another) and of 1 000 recipients (--batches calls); the
figure is recipients/s, the median of the runs, with the spread. The outcome counters of a check
are written to the primary in every variant. On one machine the standby competes with the primary
for the same cores: the figure is the cost of the routing, not the gain of a second machine.

    uv run python bench/replicas.py --quick
    uv run python bench/replicas.py --rows 200000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from suppress.addresses import AddressHasher
from suppress.check_counts import CheckCounts
from suppress.checks import CheckRequest, CheckService
from suppress.config import derive_key
from suppress.db import create_pool
from suppress.devstack.replication import ReplicatedPostgres
from suppress.migrate import migrate
from suppress.replicas import Reads, ReplicaSet
from suppress.sql import load_queries
from suppress.tenants import Authenticator, create_tenant
from suppress.tokens import TokenKeyring

SECRET = "bench-replicas-secret-" + "x" * 20


def address(i: int) -> str:
    return f"person{i}@bench.example"


async def seed(dsn: str, rows: int, hasher: AddressHasher) -> str:
    """Migrate, make a tenant and its rows; returns an API key of the tenant."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        queries = load_queries()
        made = await create_tenant(conn, queries, "bench")
        hashes = [hasher.hash("email", address(i)) for i in range(rows)]
        # a third suppressed, a third consented (all topics), a third not present at all
        await conn.execute(
            """
            INSERT INTO recipients (tenant_id, channel, address_hash, address, suppression_reasons,
                                    suppression_expires, consent_topics)
            SELECT $1, 'email', h, 'x', CASE WHEN n % 3 = 0 THEN '{hard_bounced}'::text[] ELSE '{}' END,
                   CASE WHEN n % 3 = 0 THEN ARRAY[NULL]::timestamptz[] ELSE '{}' END,
                   CASE WHEN n % 3 = 1 THEN '{0}'::integer[] ELSE '{}' END
            FROM unnest($2::bytea[]) WITH ORDINALITY AS k (h, n) WHERE n % 3 <> 2
            """,
            made.tenant_id,
            hashes,
        )
        await conn.execute("ANALYZE recipients")
        return made.api_key
    finally:
        await conn.close()


async def timed(calls: int, size: int, check: Callable[[list[str]], Awaitable[object]], rows: int) -> float:
    """Recipients per second over `calls` checks of `size` recipients each."""
    rng = secrets.SystemRandom()
    bodies = [[address(rng.randrange(rows)) for _ in range(size)] for _ in range(calls)]
    began = time.perf_counter()
    for body in bodies:
        await check(body)
    return calls * size / (time.perf_counter() - began)


async def run(args: argparse.Namespace, servers: ReplicatedPostgres) -> str:
    dsn = servers.start_primary()
    hasher = AddressHasher(derive_key(SECRET, "suppress address hash v1"))
    api_key = await seed(dsn, args.rows, hasher)
    replica_dsn = servers.start_standby()
    queries = load_queries()
    pool = await create_pool(dsn, size=4)
    principal = await Authenticator(pool, queries).authenticate(f"Bearer {api_key}")
    keyring = TokenKeyring({1: derive_key(SECRET, "suppress unsubscribe token key 1", 64)}, 1)
    replicas = ReplicaSet(pool, [replica_dsn], max_lag=1.0, pool_size=4)
    await replicas.start()
    fences = aioredis.from_url(args.redis_url) if args.redis_url else None
    routes: dict[str, Reads] = {"primary": Reads(pool), "replica": Reads(pool, replicas)}
    if fences is not None:
        routes["fenced"] = Reads(pool, replicas, fences)  # type: ignore[arg-type]
    services = {
        name: CheckService(
            pool, queries, hasher, keyring, "https://u.example", CheckCounts(pool, queries), reads
        )
        for name, reads in routes.items()
    }
    workloads = {"1 recipient": (args.single, 1), "1 000 recipients": (args.batches, 1000)}
    figures: dict[tuple[str, str], list[float]] = {}
    for run_number in range(args.runs + 1):
        for workload, (calls, size) in workloads.items():
            for name, service in services.items():

                async def check(body: list[str], service: CheckService = service) -> object:
                    request = CheckRequest(channel="email", purpose="marketing", recipients=body)
                    return await service.check(principal, request, datetime.now(UTC))

                before = replicas.replicas[0].up
                rate = await timed(calls, size, check, args.rows)
                assert name == "primary" or before, "the replica was not in use"
                if run_number:  # the first round warms up
                    figures.setdefault((workload, name), []).append(rate)
    load = os.getloadavg()
    lines = [
        f"rows {args.rows}, runs {args.runs}, load average before/after "
        f"{args.load_before[0]:.2f} / {load[0]:.2f}, {os.cpu_count()} CPUs",
        "",
        "| workload | route | recipients/s (median) | min-max | vs primary |",
        "|---|---|---|---|---|",
    ]
    for workload in workloads:
        base = statistics.median(figures[(workload, "primary")])
        for name in services:
            rates = figures[(workload, name)]
            median = statistics.median(rates)
            lines.append(
                f"| {workload} | {name} | {median:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} "
                f"| {median / base:.2f} |"
            )
    await replicas.close()
    await pool.close()
    if fences is not None:
        await fences.aclose()
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--single", type=int, default=1000, help="one-recipient checks per run")
    parser.add_argument("--batches", type=int, default=100, help="1 000-recipient checks per run")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--quick", action="store_true", help="20 000 rows, 3 runs, fewer calls")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.runs, args.single, args.batches = 20_000, 3, 300, 30
    args.load_before = os.getloadavg()
    with ReplicatedPostgres("suppress-bench-replicas-") as servers:
        print(asyncio.run(asyncio.wait_for(run(args, servers), timeout=1800)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
