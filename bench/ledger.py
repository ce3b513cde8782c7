"""Ledger cost under write load: 16 concurrent writers with the sealer running vs not, and how long
an event waits to be sealed, in one run on one database.

    uv run python bench/ledger.py [--quick] [--writers 16] [--seconds 8] [--runs 5] [--tenants 1]
                                  [--backlog 100000]

Each append is the real write (`apply_order`, the one write path: event + suppression +
projection) from `--writers` concurrent connections, for `--seconds` per run. "Sealing on" runs the
sealer the way a worker does (`seal_all` once a second, in a process of its own); "off" runs nothing
else — the baseline, measured in the same run, interleaved with "on" so drift hits both alike. Seal
delay is, per event written while sealing is on, its checkpoint's `created_at` minus its
`recorded_at`. The sealer alone is timed on a backlog of `--backlog` events inserted at once.
Uses its own database `suppress_bench_ledger` on SUPPRESS_BENCH_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/postgres); never `test`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from suppress.addresses import AddressHasher
from suppress.db import create_pool
from suppress.ledger import ledger_key
from suppress.migrate import migrate
from suppress.sealer import seal_all
from suppress.sql import load_queries
from suppress.unsubscribe import UnsubscribeOrder, apply_order

DATABASE = "suppress_bench_ledger"
RESULTS = Path(__file__).resolve().parent / "results" / "ledger.md"
SECRET = "suppress-bench-only-secret-0123456789abcdef0123456789abcdef"


def _dsn(admin: str, database: str) -> str:
    return urlunsplit(urlsplit(admin)._replace(path="/" + database))


async def prepare(admin_dsn: str, tenants: int) -> str:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    dsn = _dsn(admin_dsn, DATABASE)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        for i in range(tenants):
            await conn.execute("INSERT INTO tenants (name) VALUES ($1)", f"bench-{i}")
    finally:
        await conn.close()
    return dsn


async def sealer_loop(dsn: str) -> None:
    """What the worker's cron does: seal every tenant at the start of each second, until killed."""
    pool = await create_pool(dsn, size=1)
    queries, key = load_queries(), ledger_key(SECRET)
    ready = False
    while True:
        await seal_all(pool, queries, key)
        if not ready:  # the backlog of the previous "off" run is sealed: the measured run may start
            print("ready", flush=True)
            ready = True
        await asyncio.sleep(1 - time.time() % 1)


async def write_for(
    pool: asyncpg.Pool, writers: int, seconds: float, tenants: int, run: str
) -> tuple[float, int, int]:
    """Appends per second over `seconds`; also the first and last event id written."""
    queries = load_queries()
    hasher = AddressHasher(b"k" * 32)
    tenant_ids = [r["id"] for r in await pool.fetch("SELECT id FROM tenants ORDER BY id LIMIT $1", tenants)]
    first = await pool.fetchval("SELECT coalesce(max(id), 0) FROM events")
    now = datetime.now(UTC)
    deadline = time.perf_counter() + seconds
    counts = [0] * writers

    async def writer(w: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            address = f"{run}-w{w}-{i}@example.no"
            order = UnsubscribeOrder(
                tenant_id=tenant_ids[(w + i) % len(tenant_ids)],
                channel="email",
                address_hash=hasher.hash("email", address),
                topic_id=0,
                campaign_id=None,
                source="one_click",
                requested_at=now,
                token_issued_at=int(now.timestamp()),
                ip="192.0.2.1",
            )
            await apply_order(pool, queries, order)
            i += 1
        counts[w] = i

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - started
    last = await pool.fetchval("SELECT coalesce(max(id), 0) FROM events")
    return sum(counts) / elapsed, first, last


async def seal_delays(pool: asyncpg.Pool, first: int, last: int) -> list[float]:
    """Seconds from recorded_at to the sealing checkpoint's created_at, per event in (first, last]."""
    for _ in range(30):  # the sealer finishes the run's tail within a second or two
        if not await pool.fetchval(
            "SELECT count(*) FROM events e WHERE id > $1 AND id <= $2 AND NOT EXISTS"
            " (SELECT 1 FROM event_seals s WHERE s.tenant_id = e.tenant_id AND s.event_id = e.id)",
            first,
            last,
        ):
            break
        await asyncio.sleep(0.5)
    rows = await pool.fetch(
        """SELECT extract(epoch FROM c.created_at - e.recorded_at)::float8 AS delay
           FROM events e
           JOIN event_seals s ON s.tenant_id = e.tenant_id AND s.event_id = e.id
           JOIN ledger_checkpoints c ON c.tenant_id = s.tenant_id AND c.seq = s.checkpoint_seq
           WHERE e.id > $1 AND e.id <= $2""",
        first,
        last,
    )
    return [r["delay"] for r in rows]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def backlog_rate(pool: asyncpg.Pool, events: int) -> float:
    """The sealer alone: events/s for `seal_all` over a backlog of `events` unsealed events shaped
    like the ones `apply_order` writes, spread over the tenants (inserted in one statement)."""
    await pool.execute(
        """INSERT INTO events (tenant_id, channel, address_hash, kind, source, actor, occurred_at, data,
                               personal)
           SELECT t.ids[1 + i % cardinality(t.ids)], 'email', sha256(int8send(i)), 'unsubscribed',
                  'one_click', 'recipient', now(),
                  jsonb_build_object('spooled', false, 'requested_at', now(), 'token_issued_at', now()),
                  '{"ip": "192.0.2.1"}'
           FROM generate_series(1, $1::bigint) i, (SELECT array_agg(id ORDER BY id) AS ids FROM tenants) t""",
        events,
    )
    started = time.perf_counter()
    await seal_all(pool, load_queries(), ledger_key(SECRET))
    return events / (time.perf_counter() - started)


async def measure(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    pool = await create_pool(dsn, size=args.writers + 1)
    rates: dict[bool, list[float]] = {True: [], False: []}
    p99s: list[float] = []
    maxima: list[float] = []
    try:
        for run in range(args.runs):
            for sealing in (run % 2 == 0, run % 2 != 0):  # alternate which goes first
                sealer = None
                if sealing:
                    sealer = await asyncio.create_subprocess_exec(
                        sys.executable, __file__, "--sealer", dsn, stdout=asyncio.subprocess.PIPE
                    )
                    # seal the backlog of the previous "off" run first (a fixed wait is too short
                    # when the machine is loaded: starting Python alone can take seconds)
                    assert sealer.stdout is not None
                    await asyncio.wait_for(sealer.stdout.readline(), timeout=120)
                try:
                    rate, first, last = await write_for(
                        pool, args.writers, args.seconds, args.tenants, f"r{run}{'s' if sealing else 'n'}"
                    )
                    rates[sealing].append(rate)
                    if sealing:
                        delays = await seal_delays(pool, first, last)
                        p99s.append(_p(delays, 0.99))
                        maxima.append(max(delays))
                finally:
                    if sealer is not None:
                        sealer.terminate()
                        await sealer.wait()
        seal_rate = await backlog_rate(pool, args.backlog)
    finally:
        await pool.close()
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    return {
        "seal_rate": seal_rate,
        "on": on,
        "off": off,
        "ratio": on / off,
        "p99": statistics.median(p99s),
        "max": max(maxima),
        "rates_on": rates[True],
        "rates_off": rates[False],
        "p99s": p99s,
    }


def render(result: dict[str, Any], args: argparse.Namespace) -> str:
    command = "uv run python bench/ledger.py" + (" --quick" if args.quick else "")
    on, off, ratio = result["on"], result["off"], result["ratio"]
    return "\n".join(
        [
            f"{args.writers} writers, {args.tenants} tenant(s), {args.seconds:g} s per run, median of "
            f"{args.runs} runs each (`{command}`). Each append is a first-time unsubscribe "
            "(event + suppression + projection).",
            "",
            "| sealer | appends/s | ratio | seal delay p99 (median of runs) | worst delay |",
            "|---|---:|---:|---:|---:|",
            f"| off (baseline) | {off:,.0f} | 1.00 | — | — |",
            f"| on, once a second | {on:,.0f} | {ratio:.2f} | {result['p99']:.2f} s "
            f"| {result['max']:.2f} s |",
            "",
            f"One sealer alone seals a backlog of {args.backlog:,} events at "
            f"{result['seal_rate']:,.0f} events/s.",
            f"runs on: {', '.join(f'{r:,.0f}' for r in result['rates_on'])}; "
            f"off: {', '.join(f'{r:,.0f}' for r in result['rates_off'])}; "
            f"p99 per run: {', '.join(f'{d:.2f}' for d in result['p99s'])} s",
        ]
    )


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--sealer":
        asyncio.run(sealer_loop(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--backlog", type=int, default=100_000, help="events for the sealer-alone rate")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.runs = 3.0, 1
    admin = os.environ.get("SUPPRESS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    dsn = asyncio.run(prepare(admin, args.tenants))
    table = render(asyncio.run(measure(dsn, args)), args)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
