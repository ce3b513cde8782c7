"""Benchmark of the effects drain: N ledger events pending, applied by a real arq worker process.

Per run, on this machine:

1. a fresh tenant in a bench database (`suppress_bench_effects` unless told otherwise: never a
   database tests or people use) with a campaign and a few webhooks (`--webhook`, repeatable: a
   comma-separated list of event kinds, or `all`);
2. N events appended with plain SQL INSERTs of 100 000 rows each (the pending_effects trigger makes
   their rows): mostly consents given, some suppressions, unsubscribes with a campaign,
   withdrawals and purchases. The write rate is printed, not judged;
3. a worker process (arq, burst mode, the service's own start-up and `drain_effects` job with
   workers.settings.EFFECTS, on a queue of its own) drains them: the time from the job's start to
   its end, when a claim found nothing pending. The delivery jobs it enqueues go to a second queue
   that no worker reads (sending webhooks is not what is measured here) and are counted;
4. checks the result: no event pending, every event counted once, one delivery per matching
   (webhook, event), one delivery job per delivery.

    uv run python bench/effects.py                          # 200 000 and 1 000 000 events, 3 runs
    uv run python bench/effects.py --events 200000 --runs 1
    uv run python bench/effects.py --webhook all            # one webhook that takes every kind

Medians over --runs are printed as a markdown table and written to bench/results/ with the raw
numbers (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from suppress.config import Settings
from suppress.migrate import migrate
from suppress.sql import load_queries
from suppress.tenants import create_tenant
from suppress.webhooks import SecretBox

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SECRET = "suppress-bench-only-secret-0123456789abcdef0123456789abcdef"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/suppress_bench_effects"
DEFAULT_REDIS = "redis://127.0.0.1:6379/9"
QUEUE = "suppress:bench:effects"
DELIVERY_QUEUE = "suppress:bench:effects:deliveries"
INSERT_ROWS = 100_000
DEFAULT_WEBHOOKS = ("suppression_added,unsubscribed", "suppression_added", "consent_withdrawn")

SUPPLIED = ("tenant_id", "channel", "address_hash", "kind", "campaign_id", "source", "occurred_at", "data")
# Event i's kind by i % 20: 16 in 20 consents, then one each of the rest.
INSERT_EVENTS = """
INSERT INTO events (tenant_id, channel, address_hash, kind, campaign_id, source, occurred_at, data)
SELECT $1::integer, 'email', sha256(convert_to($1::integer || ':' || i, 'UTF8')),
       CASE i % 20 WHEN 16 THEN 'suppression_added' WHEN 17 THEN 'unsubscribed'
                   WHEN 18 THEN 'consent_withdrawn' WHEN 19 THEN 'customer_purchase'
                   ELSE 'consent_given' END,
       CASE WHEN i % 20 IN (16, 17) THEN $4::bigint END,
       'bench', now() - interval '5 seconds',
       CASE i % 20
           WHEN 16 THEN jsonb_build_object('reason',
                (ARRAY['unsubscribed', 'hard_bounced', 'complained', 'manual'])[(i / 20) % 4 + 1])
           WHEN 17 THEN jsonb_build_object('reason', 'unsubscribed',
                                           'requested_at', now() - interval '2 seconds')
           WHEN 18 THEN jsonb_build_object('reason', 'unsubscribed')
           ELSE '{}'::jsonb END
FROM generate_series($2::bigint, $3::bigint) AS i
"""


def _server_dsn(dsn: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/postgres"))


async def create_database(dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    if not name.startswith("suppress_bench"):
        raise SystemExit(f"refusing to use the database {name!r}: its name must start with suppress_bench")
    admin = await asyncpg.connect(_server_dsn(dsn))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def prepare(dsn: str, events: int, webhooks: list[str | None], run: int) -> dict[str, Any]:
    """A tenant with a campaign and webhooks, and `events` pending events."""
    conn = await asyncpg.connect(dsn)
    queries = load_queries()
    box = SecretBox.from_secret(SECRET)
    try:
        tenant_id = (
            await create_tenant(conn, queries, f"bench-effects-{events}-{run}-{time.time_ns()}")
        ).tenant_id
        campaign_id = await conn.fetchval(
            "INSERT INTO campaigns (tenant_id, name) VALUES ($1, 'bench') RETURNING id", tenant_id
        )
        for kinds in webhooks:
            await conn.execute(
                "INSERT INTO webhooks (tenant_id, url, events, secret_box, created_at)"
                " VALUES ($1, 'https://127.0.0.1:9/bench', $2, $3, now() - interval '1 minute')",
                tenant_id,
                None if kinds is None else kinds.split(","),
                box.seal(tenant_id, "whsec_bench"),
            )
        started = time.perf_counter()
        for start in range(0, events, INSERT_ROWS):
            end = min(start + INSERT_ROWS, events) - 1
            await conn.execute(INSERT_EVENTS, tenant_id, start, end, campaign_id)
        insert_seconds = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE pending_effects")
        await conn.execute("ANALYZE events")
        pending = await conn.fetchval("SELECT count(*) FROM pending_effects WHERE tenant_id = $1", tenant_id)
        assert pending == events, (pending, events)
        expected = await conn.fetchval(
            "SELECT count(*) FROM events e JOIN webhooks w ON w.tenant_id = e.tenant_id"
            " WHERE e.tenant_id = $1 AND (w.events IS NULL OR e.kind = ANY (w.events))",
            tenant_id,
        )
    finally:
        await conn.close()
    return {"tenant_id": tenant_id, "insert_seconds": insert_seconds, "expected_deliveries": expected}


def worker_main(args: argparse.Namespace) -> None:
    """The worker process: the service's start-up and drain job, burst mode, a queue of its own."""
    from arq import create_pool as create_arq_pool
    from arq.worker import Worker, func
    from workers.effects import drain_effects
    from workers.settings import shutdown, startup

    from suppress.queue import JOB_DRAIN_EFFECTS, redis_settings

    settings = Settings(database_url=args.dsn, redis_url=args.redis, secret=SECRET)
    out: dict[str, Any] = {}

    async def on_startup(ctx: dict[str, Any]) -> None:
        await startup(ctx)
        if args.batch:
            ctx["effects_batch"] = args.batch
        # the drain's delivery jobs go to a queue no worker reads: only enqueueing them is measured
        ctx["redis"] = await create_arq_pool(redis_settings(args.redis), default_queue_name=DELIVERY_QUEUE)

    async def timed_drain(ctx: dict[str, Any], tenant_id: int) -> int:
        start = time.perf_counter()
        applied = await drain_effects(ctx, tenant_id)
        out.setdefault("drains", []).append({"events": applied, "seconds": time.perf_counter() - start})
        return applied

    async def main() -> None:
        redis = await create_arq_pool(redis_settings(args.redis), default_queue_name=QUEUE)
        try:
            await redis.delete(QUEUE, DELIVERY_QUEUE)
            await redis.enqueue_job(JOB_DRAIN_EFFECTS, args.tenant, _job_id=f"bench:effects:{args.tenant}")
        finally:
            await redis.aclose()
        worker = Worker(
            functions=[func(timed_drain, name=JOB_DRAIN_EFFECTS, keep_result=0, timeout=600)],
            on_startup=on_startup,
            on_shutdown=shutdown,
            redis_settings=redis_settings(args.redis),
            queue_name=QUEUE,
            ctx={"settings": settings},
            burst=True,
            poll_delay=0.05,
            handle_signals=False,
        )
        try:
            await worker.main()
        finally:
            delivery_queue = worker.ctx.get("redis")
            if delivery_queue is not None and delivery_queue is not worker.pool:
                out["delivery_jobs"] = await delivery_queue.zcard(DELIVERY_QUEUE)
                for raw in await delivery_queue.zrange(DELIVERY_QUEUE, 0, -1):
                    await delivery_queue.delete(b"arq:job:" + raw)
                await delivery_queue.delete(DELIVERY_QUEUE)
                await delivery_queue.aclose()
            await worker.close()
        out["jobs_failed"] = worker.jobs_failed

    asyncio.run(main())
    print(json.dumps(out))


async def verify(dsn: str, tenant_id: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM pending_effects WHERE tenant_id = $1) AS pending,"
            " (SELECT count(*) FROM health_counted_events WHERE tenant_id = $1) AS counted,"
            " (SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1) AS deliveries,"
            " (SELECT count(*) FROM (SELECT 1 FROM webhook_deliveries WHERE tenant_id = $1"
            "   GROUP BY webhook_id, event_id HAVING count(*) > 1) d) AS duplicate_deliveries,"
            " (SELECT coalesce(sum(n), 0) FROM health_daily WHERE tenant_id = $1"
            "   AND metric = 'consents_given') AS consents_counted,"
            " (SELECT count(*) FROM events WHERE tenant_id = $1 AND kind = 'consent_given') AS consents",
            tenant_id,
        )
        assert row is not None
        return dict(row.items())
    finally:
        await conn.close()


def run_once(args: argparse.Namespace, events: int, run: int) -> dict[str, Any]:
    webhooks: list[str | None] = [None if w == "all" else w for w in args.webhook or DEFAULT_WEBHOOKS]
    made = asyncio.run(prepare(args.dsn, events, webhooks, run))
    done = subprocess.run(
        [
            *(sys.executable, __file__, "--worker", "--dsn", args.dsn, "--redis", args.redis),
            *("--tenant", str(made["tenant_id"]), "--batch", str(args.batch or 0)),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SUPPRESS_LOG_LEVEL": "WARNING"},
    )
    if done.returncode != 0:
        raise SystemExit(f"worker failed:\n{done.stderr}")
    worker = json.loads(done.stdout.strip().splitlines()[-1])
    state = asyncio.run(verify(args.dsn, made["tenant_id"]))
    problems = []
    if worker["jobs_failed"] or len(worker.get("drains", [])) != 1:
        problems.append(f"worker: {worker}")
    if state["pending"] or state["counted"] != events or state["consents_counted"] != state["consents"]:
        problems.append(f"counting: {state}")
    if state["deliveries"] != made["expected_deliveries"] or state["duplicate_deliveries"]:
        problems.append(f"deliveries: {state} expected {made['expected_deliveries']}")
    if worker.get("delivery_jobs") != state["deliveries"]:
        problems.append(f"delivery jobs: {worker.get('delivery_jobs')} for {state['deliveries']} deliveries")
    if problems:
        raise SystemExit("wrong result: " + "; ".join(problems))
    [drain] = worker["drains"]
    result = {
        "events": events,
        "run": run,
        "insert_events_per_s": round(events / made["insert_seconds"]),
        "drain_seconds": round(drain["seconds"], 2),
        "drain_events_per_s": round(events / drain["seconds"]),
        "deliveries": state["deliveries"],
    }
    print(json.dumps(result), file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, action="append", help="default: 200000 and 1000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--webhook", action="append", help="event kinds, comma-separated, or 'all'")
    parser.add_argument("--batch", type=int, help="events per claim (default: workers.effects.BATCH)")
    parser.add_argument("--dsn", default=os.environ.get("SUPPRESS_BENCH_EFFECTS_DSN", DEFAULT_DSN))
    parser.add_argument("--redis", default=os.environ.get("SUPPRESS_BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tenant", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return
    asyncio.run(create_database(args.dsn))
    sizes = args.events or [200_000, 1_000_000]
    runs = [run_once(args, events, run) for events in sizes for run in range(args.runs)]
    lines = [
        f"webhooks: {', '.join(args.webhook or DEFAULT_WEBHOOKS)}; batch: {args.batch or 'default'}; "
        f"{platform.node()}, {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "| events | runs | deliveries | write (SQL, events/s) | drain (median) | drain rate (median) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for events in sizes:
        mine = [r for r in runs if r["events"] == events]
        seconds = statistics.median(r["drain_seconds"] for r in mine)
        rate = statistics.median(r["drain_events_per_s"] for r in mine)
        lines.append(
            f"| {events:,} | {len(mine)} | {mine[0]['deliveries']:,} "
            f"| {statistics.median(r['insert_events_per_s'] for r in mine):,.0f} "
            f"| {seconds:.1f} s | **{rate:,.0f} events/s** |"
        )
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"effects-{stamp}.md").write_text(table + "\n")
    (RESULTS / f"effects-{stamp}.json").write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
