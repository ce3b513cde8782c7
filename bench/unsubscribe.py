"""Benchmark of the RFC 8058 one-click unsubscribe (POST /u/{token}) against a bare endpoint.

Sustained one-click POSTs (`List-Unsubscribe=One-Click`) from K concurrent keep-alive clients
against a real `suppress serve` process, compared in the same run with a *bare* endpoint: a minimal
Litestar app on the same server stack (uvicorn with uvloop + httptools, started the same way, one
process, a pool from `suppress.db.create_pool` of the same size) whose one POST route parses the
same form body and inserts one row into a bench table. That is the floor an HTTP write can reach on
this machine; the target is one-click ≥ 0.7× of it.

Three rows, each the median of --runs runs (after one warm-up run each), runs interleaved
(bare, first-time, repeat, bare, ...) so that drifting load on the machine hits all three alike:

- bare:        POST /bare/{token} → INSERT one row;
- first-time:  POST /u/{token} for recipients never unsubscribed before: each one a real
               unsubscribe (ledger event, suppression row, consent ended, projection rewritten,
               pending_effects row, the effects job enqueued in Redis), answered with the
               "You are unsubscribed from “news”" page;
- repeat:      POST /u/{token} for recipients already unsubscribed (the statement writes nothing):
               "You were already unsubscribed".

Each answer is checked (status 200 and the expected page), and after the first-time runs the
ledger must hold exactly one `unsubscribed` event per first-time POST.

Data: a dedicated database (`suppress_bench_unsub` on the local PostgreSQL unless told otherwise;
dropped and built again at every run) with one tenant, one topic and (runs + 1) × --requests
recipients, each with a consent to all topics (inserted with SQL; hashes keyed exactly as the server
keys them). The links come from the server's own POST /v1/checks (topic and campaign given, so each
token carries both). The real server's Redis is the machine's, database 12 (flushed at the start);
no worker runs, so the effects jobs just queue up (the bench measures the request path).

The load generator is a minimal HTTP/1.1 keep-alive client on asyncio streams (uvloop), so the
client costs little of the machine's CPU; server and PostgreSQL CPU time per request come from /proc.

    uv run python bench/unsubscribe.py          # full run: 5 runs of 3 000 requests, K = 16
    uv run python bench/unsubscribe.py --quick  # smoke run: 3 runs of 400 requests

The markdown table is printed; a full run also writes it to bench/results/unsubscribe.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import redis.asyncio as aioredis
from litestar import Litestar, Request, Response, get, post
from litestar.enums import MediaType

from suppress.addresses import AddressHasher, normalise
from suppress.config import DerivedKeys, Settings
from suppress.db import create_pool
from suppress.devstack.embedded import free_port
from suppress.migrate import migrate
from suppress.sql import Queries, load_queries
from suppress.tenants import create_tenant
from suppress.unsubscribe import UnsubscribeOrder, apply_order

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
RESULT = ROOT / "bench" / "results" / "unsubscribe.md"
# Fixed on purpose: the stored hashes depend on it, and the server is started with it. Bench use only.
SECRET = "suppress-bench-only-unsubscribe-secret-0123456789abcdef"
PUBLIC_URL = "https://unsub.example.com"
TENANT = "bench-unsubscribe"
TOPIC = "news"
CAMPAIGN = "bench-campaign"
CHECK_CHUNK = 20_000
ONE_CLICK = b"List-Unsubscribe=One-Click"
BARE_TABLE = "bench_bare_inserts"
TARGET = 0.7
# What each kind of request must answer (a substring of the page).
EXPECTED = {
    "bare": b"stored",
    "first-time": b"You are unsubscribed",
    "repeat": b"You were already unsubscribed",
}


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The bare endpoint: its own process, `python bench/unsubscribe.py serve-bare --port P`


def bare_app(dsn: str, pool_size: int) -> Litestar:
    """A minimal Litestar app: POST /bare/{token} inserts one row; GET /healthz."""
    state: dict[str, asyncpg.Pool] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state["pool"] = await create_pool(dsn, size=pool_size)
        try:
            yield
        finally:
            await state["pool"].close()

    @post("/bare/{token:str}", status_code=200)
    async def insert(request: Request[Any, Any, Any], token: str) -> Response[str]:
        form = await request.form()  # the same body the one-click endpoint parses
        if form.get("List-Unsubscribe") != "One-Click":
            return Response("bad form", status_code=400, media_type=MediaType.TEXT)
        await state["pool"].execute(f"INSERT INTO {BARE_TABLE} (token) VALUES ($1)", token)
        return Response("<!doctype html><p>stored</p>", media_type=MediaType.HTML)

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(route_handlers=[insert, healthz], lifespan=[lifespan], debug=False)


def serve_bare(port: int) -> int:
    """The bare server's process: uvicorn as `suppress serve` runs it."""
    import uvicorn

    settings = Settings.from_env()
    app = bare_app(settings.require_database_url(), settings.db_pool_size)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, proxy_headers=True)
    return 0


# --------------------------------------------------------------------------------------------
# Processes


class Server:
    """A server process on a free port of 127.0.0.1, stopped on exit whatever happens."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, *args, "--port", str(self.port)]
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 90.0) -> None:
        log(f"starting the {self.name} server: {' '.join(self.command)}")
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.name} server exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(
            f"the {self.name} server did not answer within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.stop()


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


# --------------------------------------------------------------------------------------------
# The data


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def address(i: int) -> str:
    return f"reader{i}@example.com"


@dataclass
class Data:
    dsn: str
    tenant_id: int
    api_key: str
    recipients: int
    hashes: list[bytes]  # address hash of recipient i


async def build_database(admin_dsn: str, name: str, recipients: int) -> Data:
    """Drop and build the bench database: schema, tenant, consented recipients, the bare table."""
    if name in {"postgres", "test", "template0", "template1"} or not name.startswith("suppress_bench"):
        raise SystemExit(f"refusing to use database {name!r}: the bench database must be suppress_bench*")
    log(f"building database {name} with {recipients:,} consented recipients")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(admin_dsn, name)
    hasher = AddressHasher(DerivedKeys.from_settings(Settings(secret=SECRET)).address_hash_key)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        key = await create_tenant(conn, load_queries(), TENANT)
        rows = []
        for i in range(recipients):
            normalised = normalise("email", address(i), "NO")
            assert normalised is not None
            rows.append((hasher.hash("email", normalised), normalised))
        hashes = [h for h, _ in rows]
        await conn.execute("CREATE TEMP TABLE staged (address_hash bytea, address text)")
        await conn.copy_records_to_table("staged", records=rows, columns=["address_hash", "address"])
        # A consent to all topics (topic 0) for each: the state POST /v1/consents leaves behind.
        await conn.execute(
            """
            INSERT INTO recipients (tenant_id, channel, address_hash, address, consent_topics)
            SELECT $1, 'email', address_hash, address, '{0}' FROM staged;
            """,
            key.tenant_id,
        )
        await conn.execute(
            """
            INSERT INTO consents (tenant_id, channel, address_hash, topic_id, source, granted_at, event_id)
            SELECT $1, 'email', address_hash, 0, 'signup_form', now() - interval '30 days', 0 FROM staged
            """,
            key.tenant_id,
        )
        await conn.execute(
            f"CREATE TABLE {BARE_TABLE} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "token text NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute("VACUUM (ANALYZE) recipients, consents")
    finally:
        await conn.close()
    return Data(dsn=dsn, tenant_id=key.tenant_id, api_key=key.api_key, recipients=recipients, hashes=hashes)


async def fetch_links(server: Server, data: Data, count: int) -> list[str]:
    """The unsubscribe paths of recipients 0..count-1, from the server's own pre-send check."""
    headers = {"Authorization": f"Bearer {data.api_key}"}
    links: list[str] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=300, headers=headers) as client:
        topic = await client.post("/v1/topics", json={"name": TOPIC, "soft_opt_in": False})
        topic.raise_for_status()
        for start in range(0, count, CHECK_CHUNK):
            chunk = [address(i) for i in range(start, min(start + CHECK_CHUNK, count))]
            response = await client.post(
                "/v1/checks",
                json={
                    "channel": "email",
                    "purpose": "marketing",
                    "topic": TOPIC,
                    "campaign": CAMPAIGN,
                    "recipients": chunk,
                },
            )
            response.raise_for_status()
            for result in response.json()["results"]:
                if not result["allowed"]:
                    raise RuntimeError(f"a bench recipient is not allowed: {result}")
                links.append(result["unsubscribe_url"].removeprefix(PUBLIC_URL))
    if not all(link.startswith("/u/") for link in links):
        raise RuntimeError("unexpected unsubscribe URLs")
    return links


# --------------------------------------------------------------------------------------------
# The load: a minimal HTTP/1.1 keep-alive client


class Connection:
    """One keep-alive connection that POSTs the one-click body and reads the whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, path: str) -> tuple[int, bytes]:
        self.writer.write(
            b"POST "
            + path.encode()
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept-Language: en\r\n"
            + b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
            + str(len(ONE_CLICK)).encode()
            + b"\r\n\r\n"
            + ONE_CLICK
        )
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


@dataclass
class Run:
    seconds: float
    latencies: list[float]  # seconds, one per request
    server_cpu: float
    pg_cpu: float

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def load(server: Server, paths: Sequence[str], clients: int, kind: str, database: str) -> Run:
    """POST every path once, from `clients` keep-alive connections at once; checks every answer."""
    expected = EXPECTED[kind]
    connections = [await Connection.open(server.port) for _ in range(clients)]
    latencies: list[float] = []
    failures: list[str] = []
    items = iter(paths)

    async def client(conn: Connection) -> None:
        for path in items:  # one shared iterator: each path is posted once
            began = time.perf_counter()
            status, body = await conn.post(path)
            latencies.append(time.perf_counter() - began)
            if status != 200 or expected not in body:
                failures.append(f"{status}: {body[:300]!r}")

    try:
        server0, pg0 = cpu_seconds(server.pid), postgres_cpu_seconds(database)
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in connections))
        elapsed = time.perf_counter() - started
        server1, pg1 = cpu_seconds(server.pid), postgres_cpu_seconds(database)
    finally:
        for conn in connections:
            await conn.close()
    if failures:
        raise RuntimeError(f"{len(failures)} {kind} answers were not as expected, e.g. {failures[0]}")
    return Run(seconds=elapsed, latencies=latencies, server_cpu=server1 - server0, pg_cpu=pg1 - pg0)


async def raw_load(
    pool: asyncpg.Pool, queries: Queries, orders: Sequence[UnsubscribeOrder], clients: int, database: str
) -> Run:
    """The unsubscribe statement alone: `apply_order` (what POST /u/{token} runs), from `clients`
    tasks at once on a pool like the server's; no HTTP, no token, no Redis."""
    latencies: list[float] = []
    items = iter(orders)
    written = 0

    async def client() -> None:
        nonlocal written
        for order in items:
            began = time.perf_counter()
            event_id = await apply_order(pool, queries, order)
            written += event_id is not None
            latencies.append(time.perf_counter() - began)

    pg0 = postgres_cpu_seconds(database)
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    if written != len(orders):
        raise RuntimeError(f"the statement wrote {written} of {len(orders)} first-time unsubscribes")
    return Run(
        seconds=elapsed, latencies=latencies, server_cpu=0.0, pg_cpu=postgres_cpu_seconds(database) - pg0
    )


# --------------------------------------------------------------------------------------------
# The run and the report


@dataclass
class Row:
    kind: str
    runs: list[Run] = field(default_factory=list)

    def median(self, value: str) -> float:
        values = {
            "rate": [r.rate for r in self.runs],
            "p50": [r.percentile(50) * 1000 for r in self.runs],
            "p99": [r.percentile(99) * 1000 for r in self.runs],
            "server_cpu": [r.server_cpu / len(r.latencies) * 1e6 for r in self.runs],
            "pg_cpu": [r.pg_cpu / len(r.latencies) * 1e6 for r in self.runs],
        }[value]
        return statistics.median(values)


@dataclass
class Report:
    started_at: str
    command: str
    machine: dict[str, str]
    requests: int
    runs: int
    clients: int
    recipients: int
    rows: dict[str, Row]
    load: list[float] = field(default_factory=list)
    events_checked: int = 0


def machine_info(pg_version: str) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("litestar", "uvicorn", "uvloop", "httptools", "asyncpg", "arq")
    )
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "packages": versions,
    }


async def run(args: argparse.Namespace) -> Report:
    per_kind = (args.runs + 1) * args.requests  # fresh recipients for the HTTP and the statement runs
    recipients = 2 * per_kind
    data = await build_database(args.admin_dsn, args.database, recipients)
    await flush_queue(args.redis_url)
    conn = await asyncpg.connect(data.dsn)
    try:
        pg_version = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPRESS_")}
    env.update(
        SUPPRESS_DATABASE_URL=data.dsn,
        SUPPRESS_REDIS_URL=args.redis_url,
        SUPPRESS_SECRET=SECRET,
        SUPPRESS_PUBLIC_URL=PUBLIC_URL,
        SUPPRESS_LOG_LEVEL="WARNING",
    )
    logs = Path(tempfile.mkdtemp(prefix="bench-unsubscribe-"))
    real = Server(
        "suppress",
        ["-m", "suppress.cli", "serve", "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"],
        env,
        logs / "suppress.log",
    )
    bare = Server("bare", [str(SCRIPT), "serve-bare"], env, logs / "bare.log")
    report = Report(
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        command=" ".join(["uv run python bench/unsubscribe.py", *sys.argv[1:]]),
        machine=machine_info(pg_version),
        requests=args.requests,
        runs=args.runs,
        clients=args.clients,
        recipients=recipients,
        rows={kind: Row(kind) for kind in ("bare", "first-time", "repeat", "statement")},
    )
    queries = load_queries()  # once, as the server does at start-up
    pool = await create_pool(data.dsn, size=Settings.from_env(env).db_pool_size)
    try:
        with running(real, bare):
            links = await fetch_links(real, data, per_kind)
            log(f"{len(links):,} unsubscribe links from POST /v1/checks; server logs in {logs}")
            orders = await statement_orders(pool, data, range(per_kind, recipients))
            done: list[str] = []  # links already unsubscribed, for the repeat runs
            report.load.append(os.getloadavg()[0])
            for r in range(args.runs + 1):  # run 0 warms every endpoint up and is not counted
                start = r * args.requests
                batch = links[start : start + args.requests]
                bare_paths = [p.replace("/u/", "/bare/", 1) for p in batch]
                repeats = done[-args.requests :]  # the previous run's links, unsubscribed by now
                measured = {}
                measured["bare"] = await load(bare, bare_paths, args.clients, "bare", args.database)
                measured["first-time"] = await load(real, batch, args.clients, "first-time", args.database)
                done += batch
                if repeats:
                    measured["repeat"] = await load(real, repeats, args.clients, "repeat", args.database)
                measured["statement"] = await raw_load(
                    pool, queries, orders[start : start + args.requests], args.clients, args.database
                )
                if r:
                    for kind, result in measured.items():
                        report.rows[kind].runs.append(result)
                log(
                    f"run {r}{' (warm-up)' if not r else ''}: "
                    + ", ".join(f"{k} {v.rate:,.0f}/s" for k, v in measured.items())
                    + f" (load {os.getloadavg()[0]:.1f})"
                )
            report.load.append(os.getloadavg()[0])
    finally:
        await pool.close()
        await flush_queue(args.redis_url)  # the effects jobs no worker ran
    conn = await asyncpg.connect(data.dsn)
    try:
        events = await conn.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND kind = 'unsubscribed'", data.tenant_id
        )
        per_recipient = await conn.fetchval(
            "SELECT count(*) FROM (SELECT address_hash FROM events WHERE tenant_id = $1 AND kind = "
            "'unsubscribed' GROUP BY address_hash HAVING count(*) > 1) x",
            data.tenant_id,
        )
        bare_rows = await conn.fetchval(f"SELECT count(*) FROM {BARE_TABLE}")
    finally:
        await conn.close()
    if events != 2 * len(done) or per_recipient or bare_rows != len(done):
        raise RuntimeError(
            f"{len(done)} first-time unsubscribes by POST and as many by the statement, and "
            f"{len(done)} bare POSTs, but {events} unsubscribed events ({per_recipient} recipients "
            f"with more than one) and {bare_rows} bare rows"
        )
    report.events_checked = events
    shutil.rmtree(logs, ignore_errors=True)  # kept when something failed
    return report


async def flush_queue(redis_url: str) -> None:
    """Empty this bench's own Redis database (the real server's queue)."""
    redis = aioredis.from_url(redis_url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


async def statement_orders(pool: asyncpg.Pool, data: Data, indexes: range) -> list[UnsubscribeOrder]:
    """What POST /u/{token} would hand `apply_order` for these recipients (topic and campaign as in
    the tokens)."""
    topic_id = await pool.fetchval(
        "SELECT id FROM topics WHERE tenant_id = $1 AND name = $2", data.tenant_id, TOPIC
    )
    campaign_id = await pool.fetchval(
        "SELECT id FROM campaigns WHERE tenant_id = $1 AND name = $2", data.tenant_id, CAMPAIGN
    )
    now = datetime.now(UTC)
    return [
        UnsubscribeOrder(
            tenant_id=data.tenant_id,
            channel="email",
            address_hash=data.hashes[i],
            topic_id=topic_id,
            campaign_id=campaign_id,
            source="one_click",
            requested_at=now,
            token_issued_at=int(now.timestamp()),
            ip="127.0.0.1",
            user_agent="bench",
        )
        for i in indexes
    ]


def ratio(report: Report, kind: str) -> float:
    """Median over runs of this kind's rate / the bare rate of the same run."""
    pairs = zip(report.rows[kind].runs, report.rows["bare"].runs, strict=True)
    return statistics.median(run.rate / bare.rate for run, bare in pairs)


def render(report: Report) -> str:
    m = report.machine
    bare = report.rows["bare"].median("rate")
    load = " → ".join(f"{x:.1f}" for x in report.load)
    lines = [
        f"One-click unsubscribe benchmark, {report.started_at}: `{report.command}`",
        "",
        f"- Machine: {m['cpu']}; {m['os']}; Python {m['python']}; PostgreSQL {m['postgresql']} "
        "on the same machine (shared with the server, the bare server and the load generator).",
        f"- Packages: {m['packages']}.",
        f"- Load: {report.clients} concurrent keep-alive connections, {report.requests:,} POSTs per run, "
        f"median of {report.runs} runs after one warm-up run, runs interleaved bare → first-time → "
        f"repeat. Load average (1 min) at the start and end: {load} on {os.cpu_count()} cores.",
        f"- Data: one tenant, {report.recipients:,} recipients with a consent to all topics (half for "
        "the POSTs, half for the statement runs); tokens from the server's POST /v1/checks (topic and "
        "campaign in each). First-time = a real unsubscribe each (checked afterwards: "
        f"{report.events_checked:,} `unsubscribed` events, one per recipient); repeat = recipients "
        "already unsubscribed. The diagnostic row runs the same write as the first-time POST "
        "(`suppress.unsubscribe.apply_order`) from the bench process on a pool of the same size, "
        "to show how much of the gap is the database's.",
        "- Servers: `suppress serve --log-level warning --no-access-log` (pool 10, Redis for the "
        "effects jobs, no worker running) and the bare app (`bench/unsubscribe.py serve-bare`: "
        "uvicorn, same pool, POST parses the form and INSERTs one row).",
        "",
        "| endpoint | requests/s | p50 latency (ms) | p99 latency (ms) | vs bare "
        "| server CPU µs/request | PostgreSQL CPU µs/request |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "bare": "bare: INSERT one row",
        "first-time": "one-click, first-time unsubscribe",
        "repeat": "one-click, repeat (already unsubscribed)",
        "statement": "diagnostic: the unsubscribe statement alone (`apply_order`, no HTTP)",
    }
    for kind, row in report.rows.items():
        rate = row.median("rate")
        server_cpu = "–" if kind == "statement" else f"{row.median('server_cpu'):,.0f}"
        lines.append(
            f"| {labels[kind]} | {rate:,.0f} | {row.median('p50'):.1f} | {row.median('p99'):.1f} "
            f"| {ratio(report, kind):.2f}× | {server_cpu} | {row.median('pg_cpu'):,.0f} |"
        )
    first = ratio(report, "first-time")
    verdict = "met" if first >= TARGET else "MISSED"
    cpu = {
        kind: report.rows[kind].median("server_cpu") + report.rows[kind].median("pg_cpu")
        for kind in ("bare", "first-time")
    }
    lines += [
        "",
        "`vs bare` is the median of the per-run ratios (each run's endpoints ran back to back, so "
        f"the ratio is steadier than the rates when other work shares the machine; the ratio of the "
        f"median rates is {report.rows['first-time'].median('rate') / bare:.2f}× for first-time). "
        f"Server + PostgreSQL CPU per request: bare {cpu['bare']:,.0f} µs, first-time "
        f"{cpu['first-time']:,.0f} µs: a first-time unsubscribe costs {cpu['first-time'] / cpu['bare']:.1f}× "
        f"the CPU of a bare POST, which on a CPU-bound machine caps the ratio near "
        f"{cpu['bare'] / cpu['first-time']:.2f}×.",
        "",
        f"Target: first-time one-click ≥ {TARGET}× bare: {first:.2f}× ({verdict}).",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 3 runs of 400 requests, not written")
    p.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL DSN allowed to CREATE DATABASE (env BENCH_ADMIN_DSN)",
    )
    p.add_argument("--database", default="suppress_bench_unsub", help="bench database (dropped and rebuilt)")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_UNSUB_REDIS_URL", "redis://127.0.0.1:6379/12"),
        help="Redis for the real server's queue; its database is flushed at the start",
    )
    p.add_argument("--requests", type=int, help="POSTs per run and endpoint (default 3000)")
    p.add_argument("--runs", type=int, help="measured runs (default 5)")
    p.add_argument("--clients", type=int, default=16, help="concurrent keep-alive connections (default 16)")
    p.add_argument("--output", type=Path, help="also write the markdown table here")
    p.add_argument("--timeout", type=float, default=1800.0, help="stop the whole run after this many seconds")
    args = p.parse_args(argv)
    args.requests = args.requests or (400 if args.quick else 3000)
    args.runs = args.runs or (3 if args.quick else 5)
    if args.requests < args.clients or args.runs < 1:
        p.error("need at least one request per client and one run")
    for dsn in (args.admin_dsn, args.redis_url):
        host = urlsplit(dsn).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            p.error(f"the bench only talks to this machine, not {host!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve-bare"]:
        return serve_bare(int(argv[argv.index("--port") + 1]))
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends the run like Ctrl-C: servers stopped
    try:
        report = _run_loop(args)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    table = render(report)
    print(table)
    if not args.quick:
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(table, encoding="utf-8")
        log(f"wrote {RESULT}")
    if args.output:
        args.output.write_text(table, encoding="utf-8")
    return 0


def _run_loop(args: argparse.Namespace) -> Report:
    """The run on uvloop (the servers use it too), bounded by --timeout."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(run(args), timeout=args.timeout))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
