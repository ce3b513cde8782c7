"""Benchmark of the pre-send check (POST /v1/checks) against the raw SQL lookup beneath it.

One run measures, on this machine, for N = 1 000, 10 000, 100 000 and 1 000 000 recipients:

- raw:   the `recipient_states` statement (sql/checks.sql) with an array of N address hashes,
         through asyncpg on a pool made by `suppress.db.create_pool` (same session settings as the
         service); hashes are computed beforehand, so this is the floor the check is built on;
- batch: POST /v1/checks through a real `uv run suppress serve` process started (and stopped) by
         this script, in requests of at most 100 000 recipients, one after another on a keep-alive
         connection (--concurrency to overlap them); the time includes encoding each request and
         decoding the answer's summary (the warm-up run decodes and checks every result);
- one:   one-recipient POST /v1/checks calls from --connections (8) keep-alive connections at
         once, against `suppress serve --workers 1` and `--workers 2`;
- bare:  the same one-recipient bodies against a bare Litestar endpoint (`bench/check.py
         serve-bare`, 1 and 2 processes, uvicorn like `serve`) that decodes the body, normalises
         and hashes the address and runs the same `recipient_states` primary-key lookup on a pool
         made by `suppress.db.create_pool`, with no authentication, policy, token or counting:
         the floor a one-recipient check is compared with;

each as recipients (or requests) per second, the median of --runs runs after one warm-up run
(the one-recipient kinds interleaved run by run, so drifting load hits them alike); the CPU time
per recipient of the server processes, of PostgreSQL's backends and of this client (/proc); and
the servers' resident memory (VmRSS summed over their processes before and after each N, peak
VmHWM over each N).

Each server is a `Target` (a name and the command that serves it); the raw lookup takes the pool
it runs on. A variant served from a read replica is one more target whose environment points the
server's reads there, plus a raw lookup on a pool to the replica (see `targets()` and `run()`).

The database (`suppress_bench` on the local server unless told otherwise) holds one tenant with
--rows recipient rows (default 1 000 000): half suppressed (mixed reasons), a quarter consented,
the rest customers with and without an active relationship and people with no basis. Address
hashes are the service's own (`AddressHasher` keyed from a fixed bench secret the server is started
with), so the server finds them. The database is built once and reused while the layout, the row
count, the secret and the migrations stay the same; --rebuild builds it again.

    uv run python bench/check.py          # full run (the first one also builds the database)
    uv run python bench/check.py --quick  # smoke run: 100 000-row database, N = 1 000 and 10 000

The markdown report is printed and written to bench/results/ (with the raw numbers as JSON).
Method, machine and findings: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import msgspec

from suppress.addresses import AddressHasher, normalise
from suppress.config import DerivedKeys, Settings
from suppress.db import create_pool
from suppress.migrate import migrate
from suppress.sql import Queries, load_queries, sql_dir
from suppress.tenants import create_api_key, create_tenant

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# Fixed on purpose: stored hashes depend on it, and the server is started with it. Bench use only.
SECRET = "suppress-bench-only-secret-0123456789abcdef0123456789abcdef"
PUBLIC_URL = "https://unsub.example.com"
LAYOUT = 2  # bump when the generated data changes, so an old bench database is rebuilt
TENANT = "bench"
TOPIC = "news"
CAMPAIGN = "bench-campaign"
MAX_PER_REQUEST = 100_000
KNOWN_SHARE = 0.8  # of each request; the rest are addresses the service has never seen
SECONDS_PER_REQUEST = 300.0  # no single HTTP request or query may take longer


# --------------------------------------------------------------------------------------------
# The data set


def address(i: int) -> str:
    """The stored address of recipient row i."""
    return f"user{i}@example.com"


def category(i: int) -> int:
    """Which kind of recipient row i is (see BUILD_SQL)."""
    return i % 20


def expected_allowed(i: int) -> bool:
    """Whether row i may get a marketing message on TOPIC (own offer) under the default policy."""
    return 10 <= category(i) <= 17


# c = i % 20:  0-9 suppressed (0-3 unsubscribed, a third of them with an old consent; 4-5 hard
# bounce; 6 complaint; 7 soft bounce expiring in 30 days; 8 manual; 9 unsubscribed + hard bounce),
# 10-14 consented (10, 11 all topics; 12, 13 the topic; 14 all topics and partner offers),
# 15-16 customers who bought in the last 300 days, 17 customers with an open agreement,
# 18 a customer from two years ago who unsubscribed from the topic, 19 nothing (1 in 5 of them
# restricted or erased).
BUILD_SQL = """
INSERT INTO recipients (tenant_id, channel, address_hash, address, suppression_reasons,
                        suppression_expires, unsubscribed_topics, consent_topics,
                        partner_consent_topics, collected_in_sale, agreement_open,
                        last_purchase_at, restricted_at, erased_at)
SELECT $1, 'email', s.address_hash,
       CASE WHEN s.i % 100 = 39 THEN NULL ELSE 'user' || s.i || '@example.com' END,
       CASE WHEN k.c < 4 THEN '{unsubscribed}'::text[]
            WHEN k.c < 6 THEN '{hard_bounced}'
            WHEN k.c = 6 THEN '{complained}'
            WHEN k.c = 7 THEN '{soft_bounced}'
            WHEN k.c = 8 THEN '{manual}'
            WHEN k.c = 9 THEN '{unsubscribed,hard_bounced}'
            ELSE '{}' END,
       CASE WHEN k.c = 7 THEN ARRAY[now() + interval '30 days']
            WHEN k.c = 9 THEN ARRAY[NULL, NULL]::timestamptz[]
            WHEN k.c < 9 THEN ARRAY[NULL]::timestamptz[]
            ELSE '{}' END,
       CASE WHEN k.c = 18 THEN ARRAY[$2::integer] ELSE '{}' END,
       CASE WHEN k.c IN (10, 11, 14) OR (k.c < 4 AND s.i % 3 = 0) THEN '{0}'::integer[]
            WHEN k.c IN (12, 13) THEN ARRAY[$2::integer]
            ELSE '{}' END,
       CASE WHEN k.c = 14 THEN '{0}'::integer[] ELSE '{}' END,
       k.c BETWEEN 15 AND 18,
       k.c = 17,
       CASE WHEN k.c IN (15, 16) THEN now() - (s.i % 300) * interval '1 day'
            WHEN k.c = 18 THEN now() - interval '2 years' END,
       CASE WHEN s.i % 100 = 19 THEN now() END,
       CASE WHEN s.i % 100 = 39 THEN now() END
FROM bench_addresses s, LATERAL (SELECT s.i % 20 AS c) k
ORDER BY s.i  -- creation order: like a table that grew over time, the heap is not in hash order
"""


def hasher() -> AddressHasher:
    """The service's address hasher, keyed exactly as `suppress serve` keys it from SECRET."""
    return AddressHasher(DerivedKeys.from_settings(Settings(secret=SECRET)).address_hash_key)


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


class Bench(msgspec.Struct, kw_only=True):
    """What a run needs to know about the bench database."""

    dsn: str
    tenant_id: int
    topic_id: int
    rows: int
    api_key: str = ""


async def _meta(dsn: str) -> dict[str, Any] | None:
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        if await conn.fetchval("SELECT to_regclass('bench_meta')") is None:
            return None
        try:
            row = await conn.fetchrow(
                "SELECT layout, rows, probe, tenant_id, topic_id, schema FROM bench_meta"
            )
        except asyncpg.PostgresError:  # made by an older version of this script
            return None
        return dict(row) if row is not None else None
    finally:
        await conn.close()


def schema_fingerprint() -> str:
    """Changes whenever a migration file is added or edited: the bench database is then rebuilt."""
    digest = hashlib.sha256()
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _probe(h: AddressHasher) -> bytes:
    return h.hash("email", address(0))


async def prepare_database(admin_dsn: str, name: str, rows: int, rebuild: bool) -> Bench:
    """Reuse the bench database when it matches (layout, rows, secret); build it otherwise."""
    if name in {"postgres", "test", "template0", "template1"} or not name.startswith("suppress_bench"):
        raise SystemExit(f"refusing to use database {name!r}: the bench database must be suppress_bench*")
    dsn = with_database(admin_dsn, name)
    h = hasher()
    meta = None if rebuild else await _meta(dsn)
    if (
        meta
        and meta["layout"] == LAYOUT
        and meta["rows"] == rows
        and bytes(meta["probe"]) == _probe(h)
        and meta["schema"] == schema_fingerprint()
    ):
        log(f"reusing database {name} ({rows:,} recipients); --rebuild builds it again")
        return Bench(dsn=dsn, tenant_id=meta["tenant_id"], topic_id=meta["topic_id"], rows=rows)

    log(f"building database {name} with {rows:,} recipients")
    started = time.perf_counter()
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        queries = load_queries()
        key = await create_tenant(conn, queries, TENANT)
        topic = await conn.fetchrow(queries.create_topic, key.tenant_id, TOPIC, True, None)
        assert topic is not None
        topic_id: int = topic["id"]
        t = time.perf_counter()
        records = [(i, h.hash("email", normalise("email", address(i), "NO") or "")) for i in range(rows)]
        log(f"  hashed {rows:,} addresses in {time.perf_counter() - t:.1f} s")
        await conn.execute("SET work_mem = '512MB'; SET maintenance_work_mem = '512MB'")
        await conn.execute("CREATE UNLOGGED TABLE bench_addresses (i integer NOT NULL, address_hash bytea)")
        t = time.perf_counter()
        await conn.copy_records_to_table("bench_addresses", records=records, columns=["i", "address_hash"])
        del records
        await conn.execute(BUILD_SQL, key.tenant_id, topic_id)
        await conn.execute("DROP TABLE bench_addresses")
        log(f"  COPY + INSERT ... SELECT in {time.perf_counter() - t:.1f} s")
        await conn.execute("VACUUM (ANALYZE) recipients")
        # Write the pages out now (hint bits, visibility map), not while the lookups are measured.
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
        await conn.execute(
            "CREATE TABLE bench_meta (layout integer, rows integer, probe bytea, tenant_id integer,"
            " topic_id integer, schema text, built_at timestamptz DEFAULT now())"
        )
        await conn.execute(
            "INSERT INTO bench_meta (layout, rows, probe, tenant_id, topic_id, schema)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            LAYOUT,
            rows,
            _probe(h),
            key.tenant_id,
            topic_id,
            schema_fingerprint(),
        )
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('recipients'))")
    finally:
        await conn.close()
    log(f"  built in {time.perf_counter() - started:.1f} s; recipients table + index: {size}")
    return Bench(dsn=dsn, tenant_id=key.tenant_id, topic_id=topic_id, rows=rows)


async def new_check_key(bench: Bench) -> str:
    """A fresh key with the check scope (plaintext keys are never stored, so each run makes one)."""
    conn = await asyncpg.connect(bench.dsn)
    try:
        key = await create_api_key(conn, load_queries(), bench.tenant_id, ["check"], label="bench")
    finally:
        await conn.close()
    return key.api_key


# --------------------------------------------------------------------------------------------
# Requests


@dataclass
class Sample:
    """One request's recipients (as a sender would write them) and what the bench knows of them."""

    recipients: list[str]
    hashes: list[bytes]  # of the normalised recipients, for the raw lookup
    allowed: int  # how many the policy must allow


def make_sample(rows: int, n: int, seed: int, h: AddressHasher) -> Sample:
    """80 % known recipients (every tenth written with capitals), 20 % unknown, shuffled."""
    rng = random.Random(seed)
    known = rng.sample(range(rows), min(rows, round(n * KNOWN_SHARE)))
    recipients = [f"User{i}@Example.com" if j % 10 == 0 else address(i) for j, i in enumerate(known)]
    recipients += [f"new{seed}.{j}@example.net" for j in range(n - len(known))]
    rng.shuffle(recipients)
    hashes = []
    for raw in recipients:
        normalised = normalise("email", raw, "NO")
        assert normalised is not None
        hashes.append(h.hash("email", normalised))
    return Sample(recipients, hashes, sum(1 for i in known if expected_allowed(i)))


class Result(msgspec.Struct):
    recipient: str
    allowed: bool
    unsubscribe_url: str | None = None
    list_unsubscribe: str | None = None


class Summary(msgspec.Struct):
    allowed: int
    denied: int


class Response(msgspec.Struct):
    """The whole answer, every result decoded (warm-up runs: checks every result)."""

    results: list[Result]
    summary: Summary


class Counts(msgspec.Struct):
    """The answer with its results left undecoded (measured runs: the client stays light, so it
    takes as little CPU as possible from the server on a small machine)."""

    results: msgspec.Raw
    summary: Summary


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Response).decode
_decode_counts = msgspec.json.Decoder(Counts).decode


def check_body(recipients: Sequence[str]) -> bytes:
    return _encode(
        {
            "channel": "email",
            "purpose": "marketing",
            "topic": TOPIC,
            "campaign": CAMPAIGN,
            "recipients": recipients,
        }
    )


async def post_check(client: httpx.AsyncClient, key: str, recipients: Sequence[str]) -> bytes:
    r = await client.post(
        "/v1/checks",
        content=check_body(recipients),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    if r.status_code != 200:
        raise RuntimeError(f"POST /v1/checks answered {r.status_code}: {r.text[:500]}")
    return r.content


def verify_all(answer: Response, recipients: Sequence[str]) -> None:
    """One result per recipient in input order, and a one-click link on every allowed one."""
    if [r.recipient for r in answer.results] != list(recipients):
        raise RuntimeError("the answer does not hold one result per recipient in input order")
    links = [r for r in answer.results if r.allowed]
    if len(links) != answer.summary.allowed or any(
        r.unsubscribe_url is None
        or not r.unsubscribe_url.startswith(PUBLIC_URL + "/u/")
        or r.list_unsubscribe != f"<{r.unsubscribe_url}>"
        for r in links
    ):
        raise RuntimeError("an allowed recipient has no proper unsubscribe link")


async def http_batch(
    client: httpx.AsyncClient, key: str, sample: Sample, verify: bool = False, concurrency: int = 1
) -> float:
    """Seconds to check the sample in requests of at most MAX_PER_REQUEST, `concurrency` at a time.

    The summary of every answer is checked against the data set; with `verify`, every result too.
    """
    recipients = sample.recipients
    parts = [recipients[i : i + MAX_PER_REQUEST] for i in range(0, len(recipients), MAX_PER_REQUEST)]
    gate = asyncio.Semaphore(concurrency)

    async def check_part(part: list[str]) -> int:
        async with gate:
            body = await post_check(client, key, part)
        if verify:
            answer = _decode(body)
            verify_all(answer, part)
            summary = answer.summary
        else:
            summary = _decode_counts(body).summary
        if summary.allowed + summary.denied != len(part):
            raise RuntimeError("the summary does not count every recipient")
        return summary.allowed

    started = time.perf_counter()
    allowed = sum(await asyncio.gather(*(check_part(part) for part in parts)))
    elapsed = time.perf_counter() - started
    if allowed != sample.allowed:
        raise RuntimeError(f"server allowed {allowed}, the data set says {sample.allowed}: wrong secret?")
    return elapsed


async def raw_lookup(pool: asyncpg.Pool, queries: Queries, bench: Bench, sample: Sample) -> float:
    """Seconds for the recipient_states statement with all the sample's hashes in one array.

    Planned for these keys every time, as the service plans its large lookups (a cached generic
    plan would probe the index key by key whatever N is).
    """
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        started = time.perf_counter()
        rows = await conn.fetch(
            queries.recipient_states,
            bench.tenant_id,
            "email",
            sample.hashes,
            timeout=SECONDS_PER_REQUEST,
        )
        elapsed = time.perf_counter() - started
    expected = round(len(sample.hashes) * KNOWN_SHARE) if bench.rows >= len(sample.hashes) else None
    if expected is not None and len(rows) != expected:
        raise RuntimeError(f"raw lookup found {len(rows)} rows, expected {expected}")
    return elapsed


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs prepared bodies (lighter than httpx, so the
    load generator takes as little of the small machine's CPU as it can)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def one_requests(path: str, key: str | None, recipients: Sequence[str]) -> list[bytes]:
    """A whole HTTP request per recipient: one-recipient check bodies, encoded beforehand."""
    auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    out = []
    for raw in recipients:
        body = check_body([raw])
        out.append(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
            + auth
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    return out


@dataclass
class OneRun:
    seconds: float
    requests: int
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


async def one_load(server: Server, requests: Sequence[bytes], connections: int, expect: bytes) -> OneRun:
    """Every request once, from `connections` keep-alive connections at once; checks every answer."""
    conns = [await Connection.open(server.port) for _ in range(connections)]
    items = iter(requests)
    failures: list[str] = []

    async def client(conn: Connection) -> None:
        for request in items:  # one shared iterator: each request is sent once
            status, body = await conn.post(request)
            if status != 200 or expect not in body:
                failures.append(f"{status}: {body[:300]!r}")

    try:
        cpu0 = server.cpu()
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in conns))
        elapsed = time.perf_counter() - started
        cpu1 = server.cpu()
    finally:
        for conn in conns:
            await conn.close()
    if failures:
        raise RuntimeError(f"{len(failures)} answers of {server.name} not as expected, e.g. {failures[0]}")
    return OneRun(seconds=elapsed, requests=len(requests), server_cpu=cpu1 - cpu0)


# --------------------------------------------------------------------------------------------
# The bare endpoint: `uv run python -m bench.check serve-bare --port P [--workers N]`


class BareRequest(msgspec.Struct):
    channel: str
    recipients: list[str]


def bare_app() -> Any:
    """A minimal Litestar app: POST /bare/checks looks the one recipient up by primary key."""
    from litestar import Litestar, Request, get, post

    settings = Settings.from_env()
    tenant_id = int(os.environ["BENCH_TENANT_ID"])
    queries = load_queries()
    h = AddressHasher(DerivedKeys.from_settings(settings).address_hash_key)
    state: dict[str, asyncpg.Pool] = {}
    decode = msgspec.json.Decoder(BareRequest).decode

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> Any:
        state["pool"] = await create_pool(settings.require_database_url(), size=settings.db_pool_size)
        try:
            yield
        finally:
            await state["pool"].close()

    @post("/bare/checks", status_code=200)
    async def bare_check(request: Request[Any, Any, Any]) -> dict[str, bool]:
        body = decode(await request.body())
        normalised = normalise(body.channel, body.recipients[0], "NO") or ""
        rows = await state["pool"].fetch(
            queries.recipient_states, tenant_id, body.channel, [h.hash(body.channel, normalised)]
        )
        return {"found": bool(rows)}

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(route_handlers=[bare_check, healthz], lifespan=[lifespan], debug=False)


def serve_bare(argv: Sequence[str]) -> int:
    """The bare server: uvicorn as `suppress serve` runs it, with as many processes."""
    import uvicorn

    p = argparse.ArgumentParser(prog="bench/check.py serve-bare")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": args.port,
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": True,
    }
    if args.workers == 1:
        uvicorn.run(bare_app(), **options)
    else:
        uvicorn.run("bench.check:bare_app", factory=True, workers=args.workers, **options)
    return 0


# --------------------------------------------------------------------------------------------
# The server process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in task.read_text().split()]
    return found


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux clear_refs 5), so the next peak is this phase's."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def postgres_cpu_seconds(database: str) -> float:
    """CPU time used so far by the PostgreSQL backends connected to `database` (this machine)."""
    total = 0.0
    marker = f" {database} ".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
            if title.startswith(b"postgres: ") and marker in title:
                total += cpu_seconds(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return total


@dataclass(frozen=True)
class Target:
    """A server the bench measures: a name and the command (after `uv run`) that serves it."""

    name: str
    command: tuple[str, ...]
    ready_path: str = "/healthz"


def targets(granian: bool = False) -> dict[str, Target]:
    """Every server of a run. The one-recipient comparisons pair them by name."""
    serve = ("suppress", "serve", "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log")
    bare = ("python", "-m", "bench.check", "serve-bare")
    out = {
        "check-1": Target("check-1", (*serve, "--workers", "1")),
        "check-2": Target("check-2", (*serve, "--workers", "2")),
        "bare-1": Target("bare-1", (*bare, "--workers", "1")),
        "bare-2": Target("bare-2", (*bare, "--workers", "2")),
    }
    if granian:  # the same application under granian instead of uvicorn (not a dependency)
        run = ("--with", "granian", "granian", "--interface", "asgi", "--host", "127.0.0.1")
        for n in (1, 2):
            out[f"granian-{n}"] = Target(
                f"granian-{n}",
                (*run, "--log-level", "warning", "--workers", str(n), "--factory", "suppress.app:create_app"),
            )
    return out


class Server:
    """A target on a free port of 127.0.0.1 (`uv run ...`), stopped on exit whatever happens."""

    def __init__(self, bench: Bench, redis_url: str, log_path: Path, target: Target) -> None:
        self.name = target.name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.ready_path = target.ready_path
        env = dict(os.environ)
        env.update(
            SUPPRESS_DATABASE_URL=bench.dsn,
            SUPPRESS_REDIS_URL=redis_url,
            SUPPRESS_SECRET=SECRET,
            SUPPRESS_PUBLIC_URL=PUBLIC_URL,
            SUPPRESS_LOG_LEVEL="WARNING",
            BENCH_TENANT_ID=str(bench.tenant_id),
        )
        self.command = ["uv", "run", *target.command, "--port", str(self.port)]
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid = 0  # the Python process serving or supervising (a child of `uv run`)

    def start(self, timeout: float = 120.0) -> None:
        log(f"starting {self.name}: {' '.join(self.command)}")
        with self.log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{self.name} did not answer within {timeout:.0f} s:\n{self.log_tail()}")
        family = [self._proc.pid, *_descendants(self._proc.pid)]
        python = [p for p in family if "uv" not in Path(_cmdline(p)[0]).name]
        self.pid = python[0] if python else self._proc.pid
        log(f"{self.name}: pid {self.pid} on {self.url}")

    def processes(self) -> list[int]:
        """The serving process, or the supervisor and its workers."""
        return [self.pid, *_descendants(self.pid)]

    def cpu(self) -> float:
        total = 0.0
        for pid in self.processes():
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += cpu_seconds(pid)
        return total

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM summed over the processes, in KiB."""
        out = {"VmRSS": 0, "VmHWM": 0}
        for pid in self.processes():
            with contextlib.suppress(OSError):
                for key, value in proc_status(pid).items():
                    out[key] += value
        return out

    def reset_peak(self) -> None:
        for pid in self.processes():
            reset_peak(pid)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        everyone = self.processes() if self.pid else []
        targets = [p for p in (self.pid, proc.pid) if p]
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        for pid in everyone:  # anything of it still there, should uv have gone first
            with contextlib.suppress(ProcessLookupError):
                if Path(f"/proc/{pid}").exists():
                    os.kill(pid, signal.SIGKILL)
        log(f"{self.name} stopped")


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.stop()


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class Row:
    n: int
    raw_seconds: list[float] = field(default_factory=list)
    batch_seconds: list[float] = field(default_factory=list)
    # CPU seconds per run: PostgreSQL for the raw lookup; server, PostgreSQL, bench client for batch
    raw_pg_cpu: list[float] = field(default_factory=list)
    batch_server_cpu: list[float] = field(default_factory=list)
    batch_pg_cpu: list[float] = field(default_factory=list)
    batch_client_cpu: list[float] = field(default_factory=list)
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    peak_kib: int = 0

    def rate(self, seconds: list[float]) -> float:
        return self.n / statistics.median(seconds)

    def us_each(self, seconds: list[float]) -> float:
        """CPU microseconds per recipient over all measured runs (/proc counts 10 ms ticks)."""
        return sum(seconds) / (self.n * len(seconds)) * 1e6


@dataclass
class Report:
    started_at: str
    command: str
    machine: dict[str, str]
    server_command: str
    rows: int
    runs: int
    rows_by_n: list[Row]
    concurrency: int = 1
    connections: int = 8
    batch_target: str = "check-2"
    one_calls: int = 0
    # per target name (check-1, check-2, bare-1, bare-2): requests/s and server CPU µs per request,
    # one value per measured run, the runs interleaved across the targets
    one_rates: dict[str, list[float]] = field(default_factory=dict)
    one_cpu_us: dict[str, list[float]] = field(default_factory=dict)
    rss_idle_kib: int = 0
    # 1-minute load average when the measurements start and end: other work on the machine
    # slows the wall-clock rates, not the CPU time per recipient
    load: list[float] = field(default_factory=list)

    def one_rate(self, name: str) -> float:
        rates = self.one_rates.get(name)
        return statistics.median(rates) if rates else 0.0

    def one_ratio(self, name: str, baseline: str) -> float:
        """Median over runs of name's rate / baseline's rate in the same run."""
        pairs = zip(self.one_rates.get(name, []), self.one_rates.get(baseline, []), strict=True)
        ratios = [a / b for a, b in pairs if b]
        return statistics.median(ratios) if ratios else 0.0


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine_info(pg_version: str) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("litestar", "uvicorn", "uvloop", "msgspec", "asyncpg", "httpx")
    )
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "packages": versions,
    }


async def run(args: argparse.Namespace) -> Report:
    bench = await prepare_database(args.admin_dsn, args.database, args.rows, args.rebuild)
    bench.api_key = await new_check_key(bench)
    queries = load_queries()
    # The raw lookup's pool: the primary. A replica variant runs it on a pool to the replica.
    pool = await create_pool(bench.dsn, size=2)
    try:
        pg_version = await pool.fetchval("SHOW server_version")
        h = hasher()
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        servers = {
            name: Server(bench, args.redis_url, RESULTS / f"check-{stamp}.{name}.log", target)
            for name, target in targets(args.granian).items()
        }
        server = servers[args.batch_target]
        report = Report(
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            command=" ".join(["uv run python bench/check.py", *sys.argv[1:]]),
            machine=machine_info(str(pg_version)),
            server_command=" ".join(server.command).replace(str(server.port), "PORT"),
            rows=bench.rows,
            runs=args.runs,
            rows_by_n=[],
            concurrency=args.concurrency,
            connections=args.connections,
            batch_target=args.batch_target,
        )
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        with running(*servers.values()):
            async with httpx.AsyncClient(
                base_url=server.url, timeout=SECONDS_PER_REQUEST, limits=limits
            ) as client:
                # Warm the server up (imports, first connections, statement preparation).
                warm = make_sample(bench.rows, 1000, seed=1, h=h)
                for _ in range(3):
                    await http_batch(client, bench.api_key, warm, verify=True)
                report.rss_idle_kib = server.memory()["VmRSS"]
                report.load.append(os.getloadavg()[0])
                for n in args.sizes:
                    row = Row(n=n, rss_before_kib=server.memory()["VmRSS"])
                    server.reset_peak()
                    for r in range(args.runs + 1):  # run 0 warms up and is not counted
                        sample = make_sample(bench.rows, n, seed=n * 100 + r, h=h)
                        # The table is larger than shared_buffers here: touch the sample's rows first,
                        # so neither measurement pays for bringing them in and the other gets them warm.
                        await raw_lookup(pool, queries, bench, sample)
                        pg0 = postgres_cpu_seconds(args.database)
                        raw = await raw_lookup(pool, queries, bench, sample)
                        pg1 = postgres_cpu_seconds(args.database)
                        server0, client0 = server.cpu(), time.process_time()
                        batch = await http_batch(
                            client, bench.api_key, sample, verify=r == 0, concurrency=args.concurrency
                        )
                        server1, client1 = server.cpu(), time.process_time()
                        pg2 = postgres_cpu_seconds(args.database)
                        if r:
                            row.raw_seconds.append(raw)
                            row.batch_seconds.append(batch)
                            row.raw_pg_cpu.append(pg1 - pg0)
                            row.batch_server_cpu.append(server1 - server0)
                            row.batch_pg_cpu.append(pg2 - pg1)
                            row.batch_client_cpu.append(client1 - client0)
                        log(
                            f"N={n:,} run {r}: raw {n / raw:,.0f}/s, batch {n / batch:,.0f}/s "
                            f"(load {os.getloadavg()[0]:.1f})"
                        )
                        del sample
                    status = server.memory()
                    row.rss_after_kib, row.peak_kib = status["VmRSS"], status["VmHWM"]
                    report.rows_by_n.append(row)
            await one_recipient_runs(args, bench, servers, report, h)
            report.load.append(os.getloadavg()[0])
    finally:
        await pool.close()
    return report


TWO_PROCESS_TARGET = 1.4
BARE_TARGET = 0.7
# The server of the batch measurements: `serve` with one process per core of this 2-core machine.
BATCH_TARGET = "check-2"
# The one-recipient kinds, in the order each run goes through them.
ONE_ORDER = ("bare-1", "check-1", "bare-2", "check-2")


async def one_recipient_runs(
    args: argparse.Namespace, bench: Bench, servers: dict[str, Server], report: Report, h: AddressHasher
) -> None:
    """One-recipient checks and bare lookups, interleaved run by run across the targets."""
    one = make_sample(bench.rows, args.one_calls, seed=7, h=h).recipients
    report.one_calls = len(one)
    checks = one_requests("/v1/checks", bench.api_key, one)
    bare = one_requests("/bare/checks", None, one)
    order = [*ONE_ORDER, *(name for name in servers if name.startswith("granian"))]
    for r in range(args.runs + 1):  # run 0 warms up and is not counted
        for name in order:
            is_bare = name.startswith("bare")
            done = await one_load(
                servers[name],
                bare if is_bare else checks,
                args.connections,
                b'"found"' if is_bare else b'"results"',
            )
            if r:
                report.one_rates.setdefault(name, []).append(done.rate)
                report.one_cpu_us.setdefault(name, []).append(done.server_cpu / done.requests * 1e6)
            log(f"one-recipient run {r}, {name}: {done.rate:,.0f}/s (load {os.getloadavg()[0]:.1f})")


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


def render(report: Report, raw_target: float = 0.6, one_target: float = 40.0) -> str:
    """The markdown report: one table row per N, then the one-recipient rate and the targets."""
    one = report.one_rate(report.batch_target)
    m = report.machine
    lines = [
        f"Check benchmark, {report.started_at}: `{report.command}`",
        "",
        f"- Machine: {m['cpu']}, {m['memory']}; {m['os']}; Python {m['python']}; "
        f"PostgreSQL {m['postgresql']} on the same machine.",
        f"- Packages: {m['packages']}.",
        f"- Data: {report.rows:,} recipient rows of one tenant; each request 80 % known "
        "(half suppressed, a quarter consented, a quarter customers or nothing), 20 % unknown; "
        "marketing, topic and campaign given, so a token is minted for every allowed recipient.",
        f"- Server: `{report.server_command}`.",
        f"- Rates: recipients per second, median of {report.runs} runs after one warm-up run. "
        "Raw = `recipient_states` with all N hashes in one array (hashes computed beforehand). "
        "Batch = POST /v1/checks in requests of at most 100 000 recipients, "
        + ("one after another" if report.concurrency == 1 else f"{report.concurrency} in flight")
        + ", one keep-alive connection each; the time includes encoding the request and decoding "
        "the answer's summary (the warm-up run decodes and checks every result).",
        "",
        "| N | raw SQL lookup /s | HTTP batch /s | batch / raw | batch / one-recipient "
        "| server RSS before → after (MiB) | server peak RSS over N (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts: list[str] = []
    for row in report.rows_by_n:
        raw, batch = row.rate(row.raw_seconds), row.rate(row.batch_seconds)
        vs_one = f"{batch / one:.0f}×" if one else "–"
        rss = f"{mib(row.rss_before_kib)} → {mib(row.rss_after_kib)}"
        lines.append(
            f"| {row.n:,} | {raw:,.0f} | {batch:,.0f} | {batch / raw:.2f} | {vs_one} "
            f"| {rss} | {mib(row.peak_kib)} |"
        )
        ok_raw = "met" if batch >= raw_target * raw else "MISSED"
        ok_one = ("met" if batch >= one_target * one else "MISSED") if one else "n/a"
        verdicts.append(
            f"- N = {row.n:,}: batch/raw {batch / raw:.2f} ({ok_raw}), "
            f"batch/one-recipient {batch / one if one else 0:.0f}× ({ok_one})"
        )
    lines += [
        "",
        "CPU time per recipient (µs, all measured runs), from /proc: where the work goes.",
        "",
        "| N | raw: PostgreSQL | batch: server process | batch: PostgreSQL | batch: bench client |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in report.rows_by_n:
        lines.append(
            f"| {row.n:,} | {row.us_each(row.raw_pg_cpu):.1f} | {row.us_each(row.batch_server_cpu):.1f} "
            f"| {row.us_each(row.batch_pg_cpu):.1f} | {row.us_each(row.batch_client_cpu):.1f} |"
        )
    load = " → ".join(f"{x:.1f}" for x in report.load)
    lines += [
        "",
        f"One-recipient calls: {report.one_calls:,} requests per run from {report.connections} "
        "keep-alive connections at once; median of the runs (interleaved bare-1, check-1, bare-2, "
        "check-2); ratios are medians of the per-run ratios.",
        "",
        "| target | processes | requests/s | server CPU µs per request |",
        "|---|---:|---:|---:|",
    ]
    for name in report.one_rates:
        cpu = statistics.median(report.one_cpu_us[name]) if report.one_cpu_us.get(name) else 0.0
        what = {"check": "POST /v1/checks", "bare": "bare primary-key lookup", "granian": "checks, granian"}[
            name.rsplit("-", 1)[0]
        ]
        lines.append(f"| {what} | {name[-1]} | {report.one_rate(name):,.0f} | {cpu:,.0f} |")
    granian = [
        f"- granian / uvicorn, {n} process{'es' if n > 1 else ''}: "
        f"{report.one_ratio(f'granian-{n}', f'check-{n}'):.2f}"
        for n in (1, 2)
        if f"granian-{n}" in report.one_rates
    ]
    two_vs_one = report.one_ratio("check-2", "check-1")
    vs_bare = {n: report.one_ratio(f"check-{n}", f"bare-{n}") for n in (1, 2)}
    lines += [
        "",
        f"- checks, 2 processes / 1 process: {two_vs_one:.2f} "
        f"({'met' if two_vs_one >= TWO_PROCESS_TARGET else 'MISSED'}, goal ≥ {TWO_PROCESS_TARGET})",
        *(
            f"- checks / bare lookup, {n} process{'es' if n > 1 else ''}: {r:.2f} "
            f"({'met' if r >= BARE_TARGET else 'MISSED'}, goal ≥ {BARE_TARGET})"
            for n, r in vs_bare.items()
        ),
        *granian,
        "",
        f"Batch server RSS warm and idle before the first N: {mib(report.rss_idle_kib)} MiB. "
        f"Load average (1 min) at the start and end of the measurements: {load} "
        f"on {os.cpu_count()} cores.",
        "",
        f"Targets: batch ≥ {raw_target}× raw, ≥ {one_target:.0f}× one-recipient calls, "
        "server memory flat in N.",
        "",
        *verdicts,
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 100 000-row database suppress_bench_quick, N = 1 000 and 10 000, 3 runs",
    )
    p.add_argument("--rebuild", action="store_true", help="build the bench database again")
    p.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL DSN allowed to CREATE DATABASE (env BENCH_ADMIN_DSN)",
    )
    p.add_argument("--database", help="bench database name (default suppress_bench, or suppress_bench_quick)")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        help="Redis the server connects to (the check itself never uses it)",
    )
    p.add_argument("--rows", type=int, help="recipient rows in the bench database (default 1 000 000)")
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        help="comma separated N (default 1000,10000,100000,1000000)",
    )
    p.add_argument("--runs", type=int, help="measured runs per measurement (default 5)")
    p.add_argument("--one-calls", type=int, help="one-recipient requests per run (default 2000)")
    p.add_argument(
        "--connections", type=int, default=8, help="connections of the one-recipient load (default 8)"
    )
    p.add_argument(
        "--granian",
        action="store_true",
        help="also serve the application with granian (1 and 2 processes; `uv run --with granian`)",
    )
    p.add_argument(
        "--batch-target",
        default="check-2",
        help="the server of the batch measurements: check-1, check-2, granian-1, granian-2",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for `suppress serve` (repeatable), e.g. --server-arg=--no-access-log",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="batch requests in flight at a time when N > 100 000 (default 1: one after another)",
    )
    p.add_argument("--output", type=Path, help="also write the markdown table here")
    p.add_argument("--timeout", type=float, default=3600.0, help="stop the whole run after this many seconds")
    args = p.parse_args(argv)
    quick = args.quick
    args.database = args.database or ("suppress_bench_quick" if quick else "suppress_bench")
    args.rows = args.rows or (100_000 if quick else 1_000_000)
    args.sizes = args.sizes or ([1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000])
    args.runs = args.runs or (3 if quick else 5)
    args.one_calls = args.one_calls or (300 if quick else 2_000)
    if any(n < 1 for n in args.sizes) or args.runs < 1:
        p.error("sizes and runs must be positive")
    if args.batch_target not in targets(args.granian) or args.batch_target.startswith("bare"):
        p.error(f"no server {args.batch_target!r} to check batches with (granian ones need --granian)")
    for dsn in (args.admin_dsn, args.redis_url):
        host = urlsplit(dsn).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            p.error(f"the bench only talks to this machine, not {host!r}")
    return args


async def main_async(args: argparse.Namespace) -> int:
    report = await asyncio.wait_for(run(args), timeout=args.timeout)
    table = render(report)
    print(table)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"check-{stamp}{'-quick' if args.quick else ''}"
    (RESULTS / f"{name}.md").write_text(table, encoding="utf-8")
    (RESULTS / f"{name}.json").write_text(json.dumps(asdict(report), indent=1), encoding="utf-8")
    if args.output:
        args.output.write_text(table, encoding="utf-8")
    log(f"wrote {RESULTS / name}.md and .json")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve-bare"]:
        return serve_bare(argv[1:])
    args = parse_args(argv)
    # SIGTERM ends the run like Ctrl-C does, so the server is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
