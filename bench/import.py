"""Benchmark of a bulk import: N rows stored, then imported by a real arq worker process.

One run, on this machine:

1. builds a fresh database (`suppress_bench_import` on the local server unless told otherwise:
   never a database tests or people use) and one tenant;
2. writes an N-row file (default 1 000 000): our CSV layout with mixed reasons and topics, or a
   SendGrid bounces export (--format sendgrid); one row in a thousand is malformed on purpose;
3. stores it through `Imports.create()` (the code behind POST /v1/imports): bytes/s into PostgreSQL;
4. reads it once without a database (the streaming parser alone: rows/s);
5. starts a worker process (arq, burst mode, the service's own `run_import` job and start-up, on a
   queue of its own) and enqueues the import: rows/s from the job's first claim to done, and the
   worker's resident memory (VmRSS after start-up, VmHWM peak) from /proc;
6. checks the database: every good row written exactly once, every bad one reported.

    uv run python bench/import.py                  # 1 000 000 rows
    uv run python bench/import.py --rows 100000    # quicker

The markdown table is printed and written to bench/results/ (with the raw numbers as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from suppress.config import Settings
from suppress.db import create_pool
from suppress.imports.formats import Lines, NeedMore, Reader
from suppress.imports.records import ImportOptions
from suppress.imports.runs import BATCH_ROWS, CHUNK_BYTES
from suppress.imports.uploads import Imports
from suppress.migrate import migrate
from suppress.sql import load_queries
from suppress.tenants import create_tenant

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SECRET = "suppress-bench-only-secret-0123456789abcdef0123456789abcdef"
DEFAULT_DSN = "postgresql://postgres@localhost:5432/suppress_bench_import"
DEFAULT_REDIS = "redis://localhost:6379/9"
QUEUE = "suppress:bench:import"
BAD_EVERY = 1000
REASONS = ("unsubscribed", "hard_bounced", "complained", "manual")


def _server_dsn(dsn: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/postgres"))


def write_file(path: Path, rows: int, fmt: str, kind: str = "suppressions") -> int:
    """The N-row upload; returns how many rows are malformed."""
    bad = 0
    created = 1_700_000_000
    if kind == "consents":
        with path.open("w", encoding="utf-8", newline="") as out:
            out.write("address,topic,source,notice_version,granted_at\n")
            for i in range(rows):
                if i % BAD_EVERY == BAD_EVERY - 1:
                    bad += 1
                    out.write(f"broken-{i},,signup,v1,2024-01-01T00:00:00Z\n")
                else:
                    topic = "news" if i % 3 == 0 else ""
                    out.write(f"user{i}@example.com,{topic},signup_form,v1,2024-01-01T00:00:00Z\n")
        return bad
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,created,reason,status\n" if fmt == "sendgrid" else "address,reason,topic,note,at\n")
        for i in range(rows):
            if i % BAD_EVERY == BAD_EVERY - 1:
                bad += 1
                out.write(f"broken-{i}\n" if fmt == "sendgrid" else f"broken-{i},manual,,,\n")
            elif fmt == "sendgrid":
                status = "4.2.2" if i % 10 == 0 else "5.1.1"
                out.write(f'user{i}@example.com,{created + i},"550 {status} mailbox unavailable",{status}\n')
            else:
                reason = REASONS[i % len(REASONS)]
                topic = "news" if reason == "unsubscribed" and i % 8 == 0 else ""
                note = "imported from legacy CRM" if i % 5 == 0 else ""
                out.write(f"user{i}@example.com,{reason},{topic},{note},2024-01-01T00:00:00Z\n")
    return bad


async def copy_baseline(dsn: str, path: Path) -> float:
    """Seconds to COPY the same file into a plain table (text columns, no index): the floor."""
    conn = await asyncpg.connect(dsn)
    try:
        with path.open("rb") as handle:
            header = handle.readline().decode().strip().split(",")
        columns = ", ".join(f'"{c}" text' for c in header)
        await conn.execute(f"DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy ({columns})")
        start = time.perf_counter()
        await conn.copy_to_table("bench_copy", source=path, format="csv", header=True)
        return time.perf_counter() - start
    finally:
        await conn.execute("DROP TABLE IF EXISTS bench_copy")
        await conn.close()


def parse_only(path: Path, options: ImportOptions) -> tuple[int, float]:
    """Records per second of the streaming parser alone (no database)."""
    reader = Reader(options)
    lines = Lines()
    count = 0
    start = time.perf_counter()
    with path.open("rb") as handle:

        def feed() -> None:
            chunk = handle.read(CHUNK_BYTES)
            lines.feed(chunk, final=not chunk)

        while True:
            try:
                reader.read_layout(lines)
                break
            except NeedMore:
                feed()
        while True:
            try:
                parsed = reader.read(lines)
            except NeedMore:
                feed()
                continue
            if parsed is None:
                break
            count += 1
    return count, time.perf_counter() - start


async def setup(dsn: str, path: Path, options: ImportOptions) -> dict[str, Any]:
    admin = await asyncpg.connect(_server_dsn(dsn))
    name = urlsplit(dsn).path.lstrip("/")
    if name in ("", "postgres", "test", "root"):
        raise SystemExit(f"refusing to use the database {name!r}: give a dedicated one")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    queries = load_queries()
    try:
        await migrate(conn)
        tenant = await create_tenant(conn, queries, "bench-import")
        await conn.execute(
            "INSERT INTO topics (tenant_id, name, soft_opt_in) VALUES ($1, 'news', false)", tenant.tenant_id
        )
    finally:
        await conn.close()
    pool = await create_pool(dsn, size=2)
    try:

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as handle:
                while piece := handle.read(256 * 1024):
                    yield piece

        start = time.perf_counter()
        import_id = await Imports(pool, queries, None).create(tenant.tenant_id, "bench", options, chunks())
        stored = time.perf_counter() - start
    finally:
        await pool.close()
    return {"tenant_id": tenant.tenant_id, "import_id": import_id, "store_seconds": stored}


def _proc_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def worker_main(args: argparse.Namespace) -> None:
    """The worker process: the service's start-up and job, a queue of its own, burst mode."""
    from arq import create_pool as create_arq_pool
    from arq.worker import Worker, func
    from workers.imports import JOB_TIMEOUT, run_import
    from workers.settings import shutdown, startup

    from suppress.queue import JOB_RUN_IMPORT, redis_settings

    settings = Settings(database_url=args.dsn, redis_url=args.redis, secret=SECRET)
    out: dict[str, Any] = {}

    async def on_startup(ctx: dict[str, Any]) -> None:
        await startup(ctx)
        out["rss_after_startup_kib"] = _proc_kib("VmRSS")

    async def main() -> None:
        redis = await create_arq_pool(redis_settings(args.redis), default_queue_name=QUEUE)
        try:
            await redis.delete(QUEUE)
            await redis.enqueue_job(
                JOB_RUN_IMPORT, args.tenant, args.import_id, _job_id=f"bench:{args.import_id}"
            )
        finally:
            await redis.aclose()
        worker = Worker(
            functions=[func(run_import, keep_result=0, timeout=JOB_TIMEOUT, max_tries=20)],
            on_startup=on_startup,
            on_shutdown=shutdown,
            redis_settings=redis_settings(args.redis),
            queue_name=QUEUE,
            ctx={"settings": settings},
            burst=True,
            poll_delay=0.05,
            handle_signals=False,
            max_jobs=1,
        )
        start = time.perf_counter()
        try:
            await worker.main()
        finally:
            await worker.close()
        out["worker_seconds"] = time.perf_counter() - start
        out["jobs"] = worker.jobs_complete
        out["jobs_failed"] = worker.jobs_failed

    asyncio.run(main())
    out["peak_rss_kib"] = _proc_kib("VmHWM")
    print(json.dumps(out))


async def verify(dsn: str, tenant_id: int, import_id: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT status, rows_done, rows_unchanged, rows_failed, started_at, finished_at, "
            "(SELECT count(*) FROM import_errors WHERE import_id = $2) AS errors, "
            "(SELECT count(*) FROM events WHERE tenant_id = $1) AS events, "
            "(SELECT count(DISTINCT address_hash) FROM events WHERE tenant_id = $1) AS recipients, "
            "(SELECT count(*) FROM pending_effects WHERE tenant_id = $1) AS pending_effects, "
            "(SELECT count(*) FROM import_chunks WHERE import_id = $2) AS chunks_left "
            "FROM imports WHERE tenant_id = $1 AND id = $2",
            tenant_id,
            import_id,
        )
        assert row is not None
        return dict(row.items())
    finally:
        await conn.close()


def drain_effects_after(args: argparse.Namespace, tenant_id: int) -> dict[str, Any]:
    """Seconds from the import's end until none of its events' effects is pending: a worker process
    (bench/effects.py's: the service's start-up and `drain_effects` job, burst mode) starts only
    then, so this is the worst case — no drain ran alongside the import."""
    start = time.perf_counter()
    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "effects.py"), "--worker", "--dsn", args.dsn),
            *("--redis", args.redis, "--tenant", str(tenant_id), "--batch", "0"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SUPPRESS_LOG_LEVEL": "WARNING"},
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"effects worker failed:\n{done.stderr}")

    async def left() -> int:
        conn = await asyncpg.connect(args.dsn)
        try:
            pending: int = await conn.fetchval(
                "SELECT count(*) FROM pending_effects WHERE tenant_id = $1", tenant_id
            )
            return pending
        finally:
            await conn.close()

    return {"seconds": round(seconds, 1), "left": asyncio.run(left())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["csv", "sendgrid"], default="csv")
    parser.add_argument("--kind", choices=["suppressions", "consents"], default="consents")
    parser.add_argument("--dsn", default=os.environ.get("SUPPRESS_BENCH_IMPORT_DSN", DEFAULT_DSN))
    parser.add_argument("--redis", default=os.environ.get("SUPPRESS_BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tenant", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--import-id", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return
    if args.kind == "consents" and args.format != "csv":
        raise SystemExit("--kind consents has only the csv layout")
    options = ImportOptions(kind=args.kind, format=args.format)
    with tempfile.TemporaryDirectory(prefix="suppress-bench-import-") as tmp:
        path = Path(tmp) / f"rows.{args.format}.csv"
        bad = write_file(path, args.rows, args.format, args.kind)
        size = path.stat().st_size
        print(f"{args.rows:,} rows, {size / 1e6:.1f} MB, {bad} malformed", file=sys.stderr)
        parsed, parse_seconds = parse_only(path, options)
        print(f"parse only: {parsed / parse_seconds:,.0f} rows/s", file=sys.stderr)
        made = asyncio.run(setup(args.dsn, path, options))
        print(f"stored in {made['store_seconds']:.1f} s", file=sys.stderr)
        copy_seconds = asyncio.run(copy_baseline(args.dsn, path))
        print(f"COPY into a plain table: {args.rows / copy_seconds:,.0f} rows/s", file=sys.stderr)
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            "--dsn",
            args.dsn,
            "--redis",
            args.redis,
            "--tenant",
            str(made["tenant_id"]),
            "--import-id",
            str(made["import_id"]),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SUPPRESS_LOG_LEVEL": "WARNING"},
    )
    if done.returncode != 0:
        raise SystemExit(f"worker failed:\n{done.stderr}")
    worker = json.loads(done.stdout.strip().splitlines()[-1])
    state = asyncio.run(verify(args.dsn, made["tenant_id"], made["import_id"]))
    effects = drain_effects_after(args, made["tenant_id"])
    job_seconds = (state["finished_at"] - state["started_at"]).total_seconds()
    good = args.rows - bad
    assert state["status"] == "done", state
    assert state["rows_done"] + state["rows_unchanged"] == good and state["rows_failed"] == bad, state
    assert state["errors"] == bad and state["chunks_left"] == 0, state
    assert state["events"] == state["rows_done"] == state["recipients"], state
    end_to_end = made["store_seconds"] + job_seconds
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "rows": args.rows,
        "kind": args.kind,
        "format": args.format,
        "bytes": size,
        "batch_rows": BATCH_ROWS,
        "malformed": bad,
        "parse_rows_per_s": round(parsed / parse_seconds),
        "store_seconds": round(made["store_seconds"], 2),
        "store_mb_per_s": round(size / 1e6 / made["store_seconds"], 1),
        "job_seconds": round(job_seconds, 1),
        "rows_per_s": round(args.rows / job_seconds),
        "end_to_end_seconds": round(end_to_end, 1),
        "end_to_end_rows_per_s": round(args.rows / end_to_end),
        "copy_seconds": round(copy_seconds, 2),
        "copy_rows_per_s": round(args.rows / copy_seconds),
        "vs_copy": round(copy_seconds / end_to_end, 3),
        "worker_seconds": round(worker["worker_seconds"], 1),
        "worker_slices": worker["jobs"],
        "worker_rss_after_startup_mib": round(worker["rss_after_startup_kib"] / 1024, 1),
        "worker_peak_rss_mib": round(worker["peak_rss_kib"] / 1024, 1),
        "events": state["events"],
        "pending_effects_at_done": state["pending_effects"],
        "effects_drained_seconds": effects["seconds"],
        "effects_left": effects["left"],
    }
    table = "\n".join(
        [
            "| rows | file | store | parse only | import (job) | upload to done | COPY into a plain table "
            "| vs COPY | worker peak RSS (after start-up) | effects: done → none pending |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {args.rows:,} {args.kind} ({args.format}, {bad:,} malformed) | {size / 1e6:.0f} MB "
            f"| {result['store_seconds']} s ({result['store_mb_per_s']} MB/s) "
            f"| {result['parse_rows_per_s']:,} rows/s "
            f"| {result['job_seconds']} s = {result['rows_per_s']:,} rows/s ({worker['jobs']} slices) "
            f"| {result['end_to_end_seconds']} s = **{result['end_to_end_rows_per_s']:,} rows/s** "
            f"| {result['copy_rows_per_s']:,} rows/s | **{result['vs_copy']}×** "
            f"| **{result['worker_peak_rss_mib']} MiB** ({result['worker_rss_after_startup_mib']} MiB) "
            f"| **{effects['seconds']} s** ({state['pending_effects']:,} pending at done) |",
        ]
    )
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"import-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"import-{stamp}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
