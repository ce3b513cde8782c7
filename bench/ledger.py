"""Ledger append cost: concurrent unsubscribes with the hash chain, against the same writes with the
chain trigger switched off, in one run on one database.

    uv run python bench/ledger.py [--quick] [--writers 16] [--appends 4000] [--runs 5]

Each append is the real write (`upsert_suppression`: event + suppression + projection) from
`--writers` concurrent connections. The chain serialises appends *per tenant* (a row lock on its
ledger head), so it is measured for one tenant (worst case: every writer contends) and for many
tenants (writers spread over 16 tenants). Uses its own database `suppress_bench_ledger` on
SUPPRESS_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres); never `test`.
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
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from suppress.addresses import AddressHasher
from suppress.db import create_pool
from suppress.migrate import migrate
from suppress.sql import load_queries

DATABASE = "suppress_bench_ledger"
RESULTS = Path(__file__).resolve().parent / "results" / "ledger.md"


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


async def run_once(pool: asyncpg.Pool, writers: int, appends: int, tenants: int, run: int) -> float:
    """Appends per second for one run; every append is a first-time unsubscribe of a new address."""
    queries = load_queries()
    hasher = AddressHasher(b"k" * 32)
    tenant_ids = [r["id"] for r in await pool.fetch("SELECT id FROM tenants ORDER BY id LIMIT $1", tenants)]
    per_writer = appends // writers
    now = datetime.now(UTC)

    async def writer(w: int) -> None:
        for i in range(per_writer):
            address = f"r{run}-w{w}-{i}@example.no"
            await pool.execute(
                queries.upsert_suppression,
                tenant_ids[(w + i) % len(tenant_ids)],
                "email",
                hasher.hash("email", address),
                address,
                0,
                "unsubscribed",
                None,
                None,
                None,
                "one_click",
                "recipient",
                now,
                {"ip": "192.0.2.1"},
                "unsubscribed",
                True,
            )

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return per_writer * writers / (time.perf_counter() - started)


async def measure(dsn: str, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    rows = []
    pool = await create_pool(dsn, size=args.writers)
    try:
        for tenants in (1, 16):
            rates: dict[bool, list[float]] = {True: [], False: []}
            for run in range(args.runs):
                for chained in (True, False):  # interleaved so drift hits both alike
                    switch = "ENABLE" if chained else "DISABLE"
                    await pool.execute(f"ALTER TABLE events {switch} TRIGGER events_ledger_append")
                    if not chained:  # without the trigger nothing fills the chain columns
                        await pool.execute(
                            "ALTER TABLE events ALTER COLUMN lane DROP NOT NULL, "
                            "ALTER COLUMN seq DROP NOT NULL, "
                            "ALTER COLUMN personal_hash DROP NOT NULL, ALTER COLUMN prev_hash DROP NOT NULL, "
                            "ALTER COLUMN hash DROP NOT NULL"
                        )
                    tag = run * 2 + (0 if chained else 1) + tenants * 1000
                    rates[chained].append(await run_once(pool, args.writers, args.appends, tenants, tag))
            await pool.execute("ALTER TABLE events ENABLE TRIGGER events_ledger_append")
            with_chain, without = statistics.median(rates[True]), statistics.median(rates[False])
            rows.append((f"{tenants} tenant(s), {args.writers} writers", with_chain, without))
    finally:
        await pool.close()
    return rows


def render(rows: list[tuple[str, float, float]], args: argparse.Namespace) -> str:
    lines = [
        f"Median of {args.runs} runs, {args.appends} appends per run (each a first-time unsubscribe: event + "
        "suppression + projection), `uv run python bench/ledger.py"
        + (" --quick" if args.quick else "")
        + "`.",
        "",
        "| load | with hash chain (appends/s) | chain trigger off (appends/s) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for label, with_chain, without in rows:
        lines.append(f"| {label} | {with_chain:,.0f} | {without:,.0f} | {with_chain / without:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--appends", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    if args.quick:
        args.appends, args.runs = 400, 1
    admin = os.environ.get("SUPPRESS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    dsn = asyncio.run(prepare(admin, 16))
    table = render(asyncio.run(measure(dsn, args)), args)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
