"""Benchmark of list-health reads against a bare SELECT 1 endpoint, at 1 000 000 and 10 000 000
ledger events across 100 campaigns.

What one run does (a fresh database, `suppress_bench_health` on the local server unless told
otherwise; never the `test` database):

1. migrates it, makes one tenant with a `read` key, two topics and 100 campaigns, and 30 days of
   per-campaign check counts (`check_counts`, as the pre-send check leaves them);
2. for each stage (1M, then 10M events in all):
   - appends events with `generate_series` (unsubscribes with their campaign and request time,
     complaints, bounces, consents given and withdrawn, customer events, lifts; recorded over the
     past 365 days), with triggers off, so the ledger's hash chain and the effects queue are
     skipped (the chain columns get placeholders): the point is a big `events` table;
   - grows the recipient projection to one row per 10 events (mixed states);
   - builds the rollups by running the counting statement the effect runs
     (`rollups.count_events`, batches of 50 000 event ids: the same SQL, many events per call)
     and one `rollups.refresh_tenant`, timing both;
   - starts `python -m bench.health_server` (the app `suppress serve` runs, plus
     GET /bench/select-1: the same Bearer auth, then `SELECT 1`) and measures, one request at a
     time on a keep-alive connection, GET /bench/select-1, GET /v1/health (30 days),
     GET /v1/health?days=366 and GET /dashboard: `--runs` runs of `--requests` requests each,
     endpoints interleaved; the figure is the median over runs of each run's median latency;
   - records EXPLAIN (ANALYZE, BUFFERS) of the four reads a report makes.

    uv run python bench/health.py            # the full run (about 10-15 minutes on 2 cores)
    uv run python bench/health.py --quick    # smoke run: 100 000 and 300 000 events

The markdown table is printed and written to bench/results/health-<time>.md (raw numbers: .json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from suppress.db import create_pool
from suppress.health import PENDING_COUNT_LIMIT
from suppress.migrate import migrate
from suppress.rollups import count_events, refresh_tenant
from suppress.sql import Queries, load_queries
from suppress.tenants import create_api_key, create_tenant

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SECRET = "suppress-bench-only-secret-0123456789abcdef0123456789abcdef"
CAMPAIGNS = 100
EVENTS_PER_RECIPIENT = 10
COUNT_BATCH = 50_000
GENERATE_BATCH = 1_000_000
# Free disk wanted per million events (table, indexes, rollups, WAL headroom), in bytes.
DISK_PER_MILLION = 900 * 1024 * 1024
READS = ("health_overview", "health_daily_counts", "health_latency_counts", "health_campaign_rows")
ENDPOINTS = {
    "select_1": "/bench/select-1",
    "health": "/v1/health",
    "health_366": "/v1/health?days=366",
    "dashboard": "/dashboard",
}

# Placeholders for the ledger's chain columns (migration 0004) while triggers are off.
CHAIN_FILLS = {
    "lane": "0",
    "seq": "g",
    "personal_hash": "'\\x00'::bytea",
    "prev_hash": "'\\x00'::bytea",
    "hash": "'\\x00'::bytea",
}

# g -> one event. r spreads kinds: 40 % consents given, 15 % unsubscribes (one-click, with the
# campaign and the request time; half of them end a consent), 0.3 % complaints (with the
# campaign), 6.7 % bounces, 5 % withdrawals, 15 % purchases, 8 % agreements, 7 % lifts.
EVENTS_SQL = """
INSERT INTO events (tenant_id, channel, address_hash, kind, campaign_id, source, actor, occurred_at,
                    recorded_at, data{extra_columns})
SELECT $1, CASE WHEN g % 10 = 0 THEN 'sms' ELSE 'email' END, sha256(int8send(g % $4)), k.kind,
       CASE WHEN k.kind = 'unsubscribed' OR k.reason = 'complained'
            THEN ($5::bigint[])[1 + g % {campaigns}] END,
       CASE WHEN k.kind = 'unsubscribed' THEN 'one_click' ELSE 'api' END, 'bench',
       t.at - t.latency, t.at,
       CASE WHEN k.kind = 'unsubscribed' THEN jsonb_build_object(
                'reason', 'unsubscribed', 'requested_at', t.at - t.latency,
                'consents_ended', CASE WHEN g % 2 = 0 THEN '[0]'::jsonb ELSE '[]'::jsonb END)
            WHEN k.reason IS NOT NULL THEN jsonb_build_object('reason', k.reason)
            ELSE '{{}}'::jsonb END{extra_values}
FROM generate_series($2::bigint, $3::bigint) AS g
CROSS JOIN LATERAL (SELECT (g * 2654435761) % 1000 AS r) p
CROSS JOIN LATERAL (
    SELECT CASE WHEN p.r < 400 THEN 'consent_given' WHEN p.r < 550 THEN 'unsubscribed'
                WHEN p.r < 620 THEN 'suppression_added' WHEN p.r < 670 THEN 'consent_withdrawn'
                WHEN p.r < 820 THEN 'customer_purchase' WHEN p.r < 880 THEN 'customer_agreement_started'
                WHEN p.r < 900 THEN 'customer_agreement_ended' WHEN p.r < 930 THEN 'suppression_added'
                ELSE 'suppression_lifted' END AS kind,
           CASE WHEN p.r >= 400 AND p.r < 550 THEN 'unsubscribed'
                WHEN p.r >= 550 AND p.r < 553 THEN 'complained'
                WHEN p.r >= 553 AND p.r < 600 THEN 'hard_bounced'
                WHEN p.r >= 600 AND p.r < 620 THEN 'soft_bounced'
                WHEN p.r >= 620 AND p.r < 670 THEN 'unsubscribed'
                WHEN p.r >= 900 AND p.r < 930 THEN 'manual'
           END AS reason
) k
CROSS JOIN LATERAL (
    SELECT $6::timestamptz - make_interval(secs => (g * 7919) % 31536000) AS at,
           CASE WHEN g % 100 = 0 THEN make_interval(hours => (g % 73)::int)
                ELSE make_interval(secs => ((g * 31) % 400) / 1000.0) END AS latency
) t
"""

# i -> one recipient row: c = 0-2 unsubscribed, 3 hard bounce, 4 complaint, 5 soft bounce (expiry
# around now), 6-13 consent to everything (6 also left `news`), 14 consent to `news`, 15 an open
# agreement, 16-18 purchases over the past two years, 19 nothing.
RECIPIENTS_SQL = """
INSERT INTO recipients (tenant_id, channel, address_hash, suppression_reasons, suppression_expires,
                        unsubscribed_topics, consent_topics, collected_in_sale, agreement_open,
                        last_purchase_at)
SELECT $1, CASE WHEN i % 10 = 0 THEN 'sms' ELSE 'email' END, sha256(int8send(i)),
       CASE WHEN c < 3 THEN '{unsubscribed}'::text[] WHEN c = 3 THEN '{hard_bounced}'
            WHEN c = 4 THEN '{complained}' WHEN c = 5 THEN '{soft_bounced}' ELSE '{}' END,
       CASE WHEN c < 5 THEN ARRAY[NULL]::timestamptz[]
            WHEN c = 5 THEN ARRAY[$4::timestamptz + make_interval(days => (i % 40)::int - 10)]
            ELSE '{}' END,
       CASE WHEN c = 6 THEN ARRAY[$5::integer] ELSE '{}' END,
       CASE WHEN c BETWEEN 6 AND 13 THEN '{0}'::integer[] WHEN c = 14 THEN ARRAY[$5::integer] ELSE '{}' END,
       c BETWEEN 15 AND 18, c = 15,
       CASE WHEN c BETWEEN 16 AND 18 THEN $4::timestamptz - make_interval(days => (i % 730)::int) END
FROM generate_series($2::bigint, $3::bigint) AS i
CROSS JOIN LATERAL (SELECT (i * 2654435761) % 20 AS c) k
"""

# Each campaign checked on 4 consecutive days of the last 30, on both channels.
CHECK_COUNTS_SQL = """
INSERT INTO check_counts (tenant_id, day, channel, campaign_id, allowed, outcome, recipients)
SELECT $1, $2::date - (c.n % 27)::int - d, ch, c.id, o.allowed, o.outcome, o.base * (1 + c.n % 5)
FROM unnest($3::bigint[]) WITH ORDINALITY AS c(id, n)
CROSS JOIN generate_series(0, 3) AS d
CROSS JOIN unnest('{email,sms}'::text[]) AS ch
CROSS JOIN (VALUES (true, 'consent', 20000), (true, 'customer_relationship', 5000),
                   (false, 'unsubscribed', 800), (false, 'no_basis', 3000),
                   (false, 'hard_bounced', 200)) AS o(allowed, outcome, base)
"""


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Stage:
    events: int
    recipients: int
    new_events: int = 0
    generate_seconds: float = 0.0
    count_seconds: float = 0.0
    refresh_ms: int = 0
    refresh_groups: int = 0
    events_table: str = ""
    rollup_tables: str = ""
    latency_ms: dict[str, list[float]] = field(default_factory=dict)  # endpoint -> per-run medians
    p95_ms: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)
    load: list[str] = field(default_factory=list)  # /proc/loadavg before and after measuring

    def median(self, endpoint: str) -> float:
        return statistics.median(self.latency_ms[endpoint])


@dataclass
class Bench:
    dsn: str
    tenant_id: int = 0
    read_key: str = ""
    news_topic: int = 0
    campaign_ids: list[int] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)


# -- the data ------------------------------------------------------------------------------------


async def prepare(admin_dsn: str, name: str, stages: list[int]) -> Bench:
    if name in ("test", "postgres", "template0", "template1"):
        raise SystemExit(f"refusing to use the database {name!r}")
    admin = await asyncpg.connect(admin_dsn)
    try:
        data_dir = await admin.fetchval("SHOW data_directory")
        free = shutil.disk_usage(data_dir if os.path.isdir(data_dir) else "/").free  # noqa: ASYNC240
        need = DISK_PER_MILLION * max(stages) // 1_000_000
        log(
            f"disk: {free / 2**30:.1f} GiB free where PostgreSQL keeps its data, "
            f"{need / 2**30:.1f} GiB wanted"
        )
        if free < need:
            raise SystemExit("not enough free disk for this run; use --quick or free some space")
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    bench = Bench(dsn=with_database(admin_dsn, name))
    conn = await asyncpg.connect(bench.dsn)
    try:
        await migrate(conn)
        queries = load_queries()
        admin_key = await create_tenant(conn, queries, "bench-health")
        bench.tenant_id = admin_key.tenant_id
        bench.read_key = (await create_api_key(conn, queries, bench.tenant_id, ["read"])).api_key
        bench.news_topic = await conn.fetchval(
            "INSERT INTO topics (tenant_id, name, soft_opt_in) VALUES ($1, 'news', false) RETURNING id",
            bench.tenant_id,
        )
        await conn.execute(
            "INSERT INTO topics (tenant_id, name, soft_opt_in) VALUES ($1, 'offers', true)", bench.tenant_id
        )
        rows = await conn.fetch(
            "INSERT INTO campaigns (tenant_id, name)"
            " SELECT $1, 'campaign-' || lpad(n::text, 3, '0') FROM generate_series(0, $2 - 1) n RETURNING id",
            bench.tenant_id,
            CAMPAIGNS,
        )
        bench.campaign_ids = sorted(r["id"] for r in rows)
        await conn.execute(CHECK_COUNTS_SQL, bench.tenant_id, datetime.now(UTC).date(), bench.campaign_ids)
        chain = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'events'"
            " AND is_nullable = 'NO' AND column_default IS NULL AND column_name <> ALL($1::text[])",
            [
                "tenant_id",
                "id",
                "channel",
                "address_hash",
                "kind",
                "source",
                "occurred_at",
                "recorded_at",
                "data",
            ],
        )
        missing = [r["column_name"] for r in chain if r["column_name"] not in CHAIN_FILLS]
        if missing:
            raise SystemExit(f"events has required columns this bench cannot fill: {missing}")
        bench.extra_columns = [r["column_name"] for r in chain]
    finally:
        await conn.close()
    return bench


async def grow(bench: Bench, stage: Stage, first_event: int, first_recipient: int) -> None:
    """Append events first_event..stage.events and recipients up to stage.recipients."""
    extra_columns = "".join(f", {c}" for c in bench.extra_columns)
    extra_values = "".join(f", {CHAIN_FILLS[c]}" for c in bench.extra_columns)
    sql = EVENTS_SQL.format(campaigns=CAMPAIGNS, extra_columns=extra_columns, extra_values=extra_values)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(bench.dsn)
    try:
        # no triggers: no hash chain (placeholders instead) and no effects queued for 10M events
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("SET synchronous_commit = off")
        started = time.perf_counter()
        for low in range(first_event, stage.events + 1, GENERATE_BATCH):
            high = min(low + GENERATE_BATCH - 1, stage.events)
            await conn.execute(sql, bench.tenant_id, low, high, stage.recipients, bench.campaign_ids, now)
            log(f"  events {low:,}..{high:,} ({time.perf_counter() - started:.0f} s)")
        await conn.execute(
            RECIPIENTS_SQL, bench.tenant_id, first_recipient, stage.recipients - 1, now, bench.news_topic
        )
        await conn.execute("ANALYZE events")
        await conn.execute("ANALYZE recipients")
        stage.generate_seconds = time.perf_counter() - started
    finally:
        await conn.close()


async def build_rollups(
    bench: Bench, stage: Stage, pool: asyncpg.Pool, queries: Queries, after_id: int
) -> None:
    """Count the events after `after_id` the way the effect does (the same statement, a batch of
    ids per call), then refresh the tenant's snapshot and campaign check totals once."""
    started = time.perf_counter()
    last_id = await pool.fetchval("SELECT max(id) FROM events WHERE tenant_id = $1", bench.tenant_id)
    counted = 0
    for low in range(after_id + 1, last_id + 1, COUNT_BATCH):
        ids = await pool.fetchval(queries.event_ids_between, bench.tenant_id, low, low + COUNT_BATCH)
        counted += await count_events(pool, queries, bench.tenant_id, ids)
        if counted % 1_000_000 < COUNT_BATCH:
            log(f"  counted {counted:,} events ({time.perf_counter() - started:.0f} s)")
    stage.count_seconds = time.perf_counter() - started
    stage.new_events = counted
    refresh = await refresh_tenant(pool, queries, bench.tenant_id, datetime.now(UTC))
    assert refresh is not None
    stage.refresh_ms, stage.refresh_groups = refresh.duration_ms, refresh.groups
    # Counting in 50 000-event batches rewrites the same counter rows many times over; autovacuum
    # keeps them compact in a running system, VACUUM does it here before the reads are measured.
    for table in ("health_daily", "health_latency", "health_campaigns", "health_snapshots", "check_counts"):
        await pool.execute(f"VACUUM (ANALYZE) {table}")
    stage.events_table = await pool.fetchval("SELECT pg_size_pretty(pg_total_relation_size('events'))")
    stage.rollup_tables = await pool.fetchval(
        "SELECT pg_size_pretty(sum(pg_total_relation_size(c))) FROM unnest("
        "'{health_daily,health_latency,health_campaigns,health_snapshots}'::regclass[]) c"
    )
    log(
        f"  counted {counted:,} events in {stage.count_seconds:.0f} s; refresh {stage.refresh_ms} ms "
        f"({stage.refresh_groups} groups); events table {stage.events_table}, rollups {stage.rollup_tables}"
    )


async def explain(bench: Bench, stage: Stage, pool: asyncpg.Pool, queries: Queries) -> None:
    today = datetime.now(UTC).date()
    args: dict[str, tuple[Any, ...]] = {
        "health_overview": (bench.tenant_id, PENDING_COUNT_LIMIT),
        "health_daily_counts": (bench.tenant_id, today.replace(day=1)),
        "health_latency_counts": (bench.tenant_id, today.replace(day=1)),
        "health_campaign_rows": (bench.tenant_id, datetime(2000, 1, 1, tzinfo=UTC), 100),
    }
    async with pool.acquire() as conn:
        for name in READS:
            rows = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY ON) " + getattr(queries, name), *args[name]
            )
            stage.plans[name] = "\n".join(r[0] for r in rows)


# -- the server and the measurement ---------------------------------------------------------------


class Server:
    """`python -m bench.health_server` on a free port, stopped on exit whatever happens."""

    def __init__(self, dsn: str, redis_url: str, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "SUPPRESS_DATABASE_URL": dsn,
            "SUPPRESS_REDIS_URL": redis_url,
            "SUPPRESS_SECRET": SECRET,
            "SUPPRESS_PUBLIC_URL": "https://unsub.example.com",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.health_server", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"server not ready:\n{self.log_path.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_path.exists() and self.log_path.stat().st_size == 0:
            self.log_path.unlink()  # the server said nothing: keep only logs worth reading


async def measure(bench: Bench, stage: Stage, url: str, runs: int, requests: int) -> None:
    headers = {"Authorization": f"Bearer {bench.read_key}"}
    samples: dict[str, list[float]] = {name: [] for name in ENDPOINTS}
    stage.latency_ms = {name: [] for name in ENDPOINTS}
    stage.load.append(_loadavg())
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        for name, path in ENDPOINTS.items():  # warm-up: connections, prepared statements, caches
            for _ in range(20):
                response = await client.get(path)
                response.raise_for_status()
            stage.bytes[name] = len(response.content)
        for run in range(runs):
            for name, path in ENDPOINTS.items():
                times = []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    if response.status_code != 200:
                        raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
                stage.latency_ms[name].append(statistics.median(times))
                samples[name] += times
            log(
                f"  run {run + 1}/{runs}: "
                + ", ".join(f"{n} {stage.latency_ms[n][-1]:.2f} ms" for n in ENDPOINTS)
            )
    stage.load.append(_loadavg())
    for name, values in samples.items():
        stage.p95_ms[name] = statistics.quantiles(values, n=20)[-1]


def _loadavg() -> str:
    """The machine's 1-minute load average: other work on a small machine shows in the timings."""
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "?"


# -- the report ---------------------------------------------------------------------------------


def table(stages: list[Stage], runs: int, requests: int) -> str:
    lines = [
        f"Median of {runs} runs (each the median of {requests} sequential requests on one keep-alive "
        "connection), milliseconds; p95 over all requests in brackets.",
        "",
        "| events | recipients | GET /bench/select-1 | GET /v1/health | GET /v1/health?days=366 "
        "| GET /dashboard | health − select-1 | snapshot refresh | counting (effect SQL) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stages:
        cells = [f"{s.median(n):.2f} ({s.p95_ms[n]:.2f})" for n in ENDPOINTS]
        lines.append(
            f"| {s.events:,} | {s.recipients:,} | {' | '.join(cells)} "
            f"| {s.median('health') - s.median('select_1'):.2f} "
            f"| {s.refresh_ms:,} ms ({s.refresh_groups:,} groups) "
            f"| {s.new_events / max(s.count_seconds, 1e-9) / 1000:,.0f}k events/s |"
        )
    lines += ["", "Sizes: " + "; ".join(f"{s.events:,} events: events table {s.events_table}, "
                                        f"rollups {s.rollup_tables}" for s in stages)]  # fmt: skip
    lines += ["", "Load average (1 min) before / after measuring: "
              + "; ".join(f"{s.events:,} events: {' / '.join(s.load)}" for s in stages)]  # fmt: skip
    lines += [
        "",
        f"Machine: {os.cpu_count()} cores. Response sizes (bytes): "
        + ", ".join(f"{n} {b:,}" for n, b in stages[-1].bytes.items()),
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Stage]:
    sizes = [100_000, 300_000] if args.quick else [1_000_000, 10_000_000]
    bench = await prepare(args.admin_dsn, args.database, sizes)
    queries = load_queries()
    stages: list[Stage] = []
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    first_event, first_recipient = 1, 0
    pool = await create_pool(bench.dsn, size=2)
    try:
        for events in sizes:
            stage = Stage(events=events, recipients=events // EVENTS_PER_RECIPIENT)
            log(f"stage {events:,} events: generating")
            last_id = await pool.fetchval("SELECT coalesce(max(id), 0) FROM events")
            await grow(bench, stage, first_event, first_recipient)
            log(f"  generated in {stage.generate_seconds:.0f} s; building the rollups")
            await build_rollups(bench, stage, pool, queries, last_id)
            await explain(bench, stage, pool, queries)
            log("  measuring")
            with Server(bench.dsn, args.redis_url, RESULTS / f"health-{stamp}-{events}.server.log") as server:
                await measure(bench, stage, server.url, args.runs, args.requests)
            stages.append(stage)
            first_event, first_recipient = events + 1, stage.recipients
    finally:
        await pool.close()
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@localhost:5432/postgres"),
    )
    parser.add_argument("--database", default="suppress_bench_health")
    parser.add_argument("--redis-url", default="redis://localhost:6379/12")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="100k and 300k events: a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages = asyncio.run(run(args))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    text = table(stages, args.runs, args.requests)
    plans = "\n\n".join(
        f"### {s.events:,} events: {name}\n\n```\n{plan}\n```"
        for s in stages
        for name, plan in s.plans.items()
    )
    suffix = "-quick" if args.quick else ""
    (RESULTS / f"health-{stamp}{suffix}.md").write_text(
        f"# bench/health.py {stamp}\n\n{text}\n\n## Plans of the report's reads\n\n{plans}\n"
    )
    (RESULTS / f"health-{stamp}{suffix}.json").write_text(json.dumps([asdict(s) for s in stages], indent=2))
    print(text)
    log(f"done in {time.perf_counter() - started:.0f} s; results in bench/results/health-{stamp}{suffix}.md")
    if not args.keep:
        asyncio.run(_drop(args.admin_dsn, args.database))


async def _drop(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


if __name__ == "__main__":
    main()
