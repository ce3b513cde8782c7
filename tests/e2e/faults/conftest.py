"""End-to-end fault tests: one-click unsubscribes against a real `suppress serve` process and a real
`suppress worker` (arq) process, on a throwaway embedded PostgreSQL and Redis of this module's own
(never the machine's servers, whatever SUPPRESS_TEST_* say), while a) the worker is SIGKILLed,
b) Redis is flushed, c) PostgreSQL is stopped, or d) every link is POSTed twice at the same moment.

Each scenario makes a fresh tenant with the CLI, a topic and a consent for each of N recipients,
gets every recipient's unsubscribe link from POST /v1/checks, and registers a webhook that points
at a small HTTP receiver on 127.0.0.1 (a thread here) that checks every request's signature and
records its `Suppress-Event-Id`. Then N one-click POSTs go out at a steady pace from concurrent
keep-alive clients while the fault strikes, and once everything has settled (polled with a
deadline, never a blind sleep) every scenario proves:

- every unsubscribe that got a 2xx is in the database: an `unsubscribed` suppression row and exactly
  one `unsubscribed` ledger event for the recipient (and no recipient has two);
- a POST /v1/checks denies every acknowledged recipient (reason `unsubscribed`);
- every such event has exactly one webhook delivery row, delivered, and the receiver got its id;
- no `pending_effects` row and no pending delivery is left;
- duplicate receipts (the same event id twice): 0, unless a delivery attempt was cut off after its
  POST left but before its outcome was written (a SIGKILLed worker, PostgreSQL going away between
  the claim and the record). Delivery is at least once (docs/webhooks.md): the service cannot know
  whether a cut-off attempt reached the receiver, so it sends again once the attempt's 60 s lease
  runs out. Such attempts keep a row with no outcome (`duration_ms IS NULL`) in `webhook_attempts`;
  the test asserts duplicates <= those rows.

The counts are printed (`uv run pytest tests/e2e/faults -s` shows them); the module takes
about 2-3 minutes.

About time: recovery is bounded by the worker's crons (sweeper every 30 s with a 15 s grace, webhook
redelivery every 30 s with a 15 s grace) and by the delivery lease (60 s: a cut-off attempt is sent
again only after it). The tests only poll, with deadlines. Two shortcuts, both stated here:

- While settling, the test runs the sweeper's and the redelivery cron's job functions itself every
  5 s (the worker's own crons run too), so no scenario waits up to 30 s for the next cron tick.
  `SUPPRESS_FAULTS_REAL_CRONS=1` turns that off and leaves recovery to the worker alone (slower,
  same results).
- SIGKILL: arq marks a running job with an `arq:in-progress:<job>` key that lives for the longest
  job timeout + 10 s (610 s with today's workers.settings, where some jobs have timeout=600).
  While it lives, neither a new worker nor the sweeper can run that job again (the sweeper's
  enqueue is a no-op: the job id is still taken), so whatever the killed worker held waits that
  long. After the kill, with no worker alive, the test checks that the keys would expire by
  themselves and deletes them, which is what waiting out their TTL would do.

Regressions: three bugs these scenarios once found, since fixed, are asserted outright, each with
a message naming it when it comes back (STALE_RESULT, DOUBLE_CLICK, INTERNAL_CLIENT_ERROR below):
effects held up for an hour by stale arq result ids, two ledger events for one double-clicked
unsubscribe, and a 500 when asyncpg raises InternalClientError while PostgreSQL shuts down.

`SUPPRESS_FAULTS_KEEP=1` keeps the data folder (servers' data and the server and worker logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from arq import create_pool as create_arq_pool
from workers.effects import sweep_pending_effects
from workers.settings import WorkerSettings
from workers.webhooks import redeliver_due_webhooks

from suppress.config import ENV_VARS
from suppress.db import DATABASE_DOWN
from suppress.db import create_pool as create_db_pool
from suppress.devstack.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from suppress.effects import drain_again_job_id, drain_job_id
from suppress.queue import redis_settings
from suppress.sql import load_queries
from suppress.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify_signature

N = 250  # recipients (and one-click POSTs) per scenario
TOPIC = "news"
SECRET = "fault-test-secret-" + "f" * 40
SETTLE_TIMEOUT = 150.0  # seconds to settle after the fault (seen: 15-75 s)
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"content-type": "application/x-www-form-urlencoded", "accept-language": "en"}
IN_PROGRESS = "arq:in-progress:"
QUEUE = "arq:queue"
# Everything pending after this long that only a stale result key holds up is the STALE_RESULT
# regression (nothing else can run it: no job holds its id, and nothing can enqueue it again).
STALE_RESULT_AFTER = 20.0
# While settling, the test also runs the sweeper's and the redelivery cron's job functions itself
# every few seconds (besides the worker's own crons), so a scenario does not wait up to 30 s for
# the next cron tick; SUPPRESS_FAULTS_REAL_CRONS=1 leaves recovery to the worker's crons alone.
NUDGE_EVERY = 5.0
STALE_RESULT = (
    "Regression (workers/settings.py, queue.py): when arq fails a job before running it ('job "
    "expired': its job key vanished, e.g. Redis flushed between the pick and the run; or 'max "
    "retries exceeded'), it stores a result under the job id for the Worker-wide keep_result, not "
    "the function's keep_result=0. The id stays taken, so the sweeper and the redelivery cron cannot "
    "enqueue drain_effects / deliver_webhook for it again. The worker's keep_result must be 0."
)
DOUBLE_CLICK = (
    "Regression (writes.Writer, unsubscribe.apply_order): two first-time unsubscribes of one "
    "recipient at the same moment must give one `unsubscribed` event, not one each (per-recipient "
    "serialisation, or the suppression row deciding whether the event is new)."
)
INTERNAL_CLIENT_ERROR_SIGNATURE = "asyncpg.exceptions._base.InternalClientError"
INTERNAL_CLIENT_ERROR = (
    "Regression (src/suppress/db.py): while PostgreSQL shuts down, asyncpg can raise "
    "InternalClientError ('cannot switch to state 12; another operation (2) is in progress'); it "
    "must count as the database being down (spool the unsubscribe, or 503), never a 500."
)


def in_progress_ttl_ms() -> int:
    """How long arq keeps a running job's in-progress key: the longest job timeout + 10 s. A killed
    worker's jobs stay locked that long."""
    default = float(WorkerSettings.job_timeout)
    timeouts = [getattr(f, "timeout_s", None) or default for f in WorkerSettings.functions]
    return int((max(timeouts) + 10) * 1000)


# -- the servers of this module: embedded PostgreSQL and Redis in a throwaway folder ---------------


class PinnedPostgres(EmbeddedPostgres):
    """Embedded PostgreSQL that comes back on the port of its first start.

    embedded.py picks a new free port at every start(); a restarted database on a new port would
    need a restarted server and worker. Here the running processes reconnect by themselves, as
    they would to a production database that restarts. (This overrides the private spawn step.)
    """

    pinned_port: int | None = None

    def _spawn_until_ready(self, user: pwd.struct_passwd | None, deadline: float) -> None:
        if self.pinned_port is None:
            super()._spawn_until_ready(user, deadline)
            self.pinned_port = self._port
        else:
            self._spawn(user, self.pinned_port, deadline)


@dataclass
class Stores:
    root: Path
    pg: PinnedPostgres
    redis: EmbeddedRedis
    database_url: str
    redis_url: str


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "suppress.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"suppress {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def service_env(stores: Stores, public_url: str = "http://127.0.0.1") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(
        SUPPRESS_DATABASE_URL=stores.database_url,
        SUPPRESS_REDIS_URL=stores.redis_url,
        SUPPRESS_SECRET=SECRET,
        SUPPRESS_PUBLIC_URL=public_url,
        SUPPRESS_ALLOW_HTTP_WEBHOOKS="1",
        SUPPRESS_WEBHOOK_ALLOW_PRIVATE_TARGETS="1",  # the receivers listen on 127.0.0.1
        SUPPRESS_LOG_LEVEL="INFO",
    )
    return env


@pytest.fixture(scope="module")
def stores() -> Iterator[Stores]:
    # Not pytest's tmp_path (mode 0700): as root, the servers run as their own user, which must be
    # able to traverse the data folder.
    root = Path(tempfile.mkdtemp(prefix="suppress-faults-"))
    root.chmod(0o711)
    pg = PinnedPostgres(root / "pg")
    redis = EmbeddedRedis(root / "redis")
    try:
        database_url = pg.start()
        redis_url = redis.start()
        made = Stores(root=root, pg=pg, redis=redis, database_url=database_url, redis_url=redis_url)
        run_cli("migrate", env=service_env(made))
        yield made
    finally:
        redis.stop()
        pg.stop()
        if os.environ.get("SUPPRESS_FAULTS_KEEP") != "1":  # keep the data and logs to look at
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")


# -- processes ------------------------------------------------------------------------------------


class Proc:
    """A `python -m suppress.cli ...` process with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "suppress.cli", *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int:
        """SIGKILL, reaped; returns the exit status (-9)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=10)
        self.proc = None
        return code

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return f"--- last lines of {self.name} log:\n" + "\n".join(text)


# -- the webhook receiver -------------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 (threads) that verifies signatures and records event ids."""

    def __init__(self, delay: float = 0.0) -> None:
        self.secret = ""
        self.delay = delay  # seconds before answering: a slower receiver keeps deliveries in flight
        self.ids: list[str] = []
        self.rejected: list[str] = []
        self.cut: list[str] = []  # requests whose body never arrived whole (a killed sender)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                event_id = self.headers.get(EVENT_ID_HEADER, "")
                if len(body) < length:  # the sender was killed mid-request: nothing was delivered
                    receiver.cut_off(event_id)
                    return
                receiver.record(event_id, self.headers.get(SIGNATURE_HEADER, ""), body)
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a killed worker leaves a broken pipe behind: the request was still recorded

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def record(self, event_id: str, signature: str, body: bytes) -> None:
        ok = verify_signature(self.secret, signature, body, time.time())
        try:
            payload = json.loads(body)
            ok = ok and payload["id"] == event_id and payload["type"] == "unsubscribed"
        except (ValueError, KeyError, TypeError):
            ok = False
        with self._lock:
            (self.ids if ok else self.rejected).append(event_id)

    def cut_off(self, event_id: str) -> None:
        with self._lock:
            self.cut.append(event_id)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.ids)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# -- the server and worker (once per module), and one scenario's tenant, recipients and webhook --


@dataclass
class Stack:
    stores: Stores
    base: str
    server: Proc
    worker: Proc
    http: httpx.AsyncClient
    receiver: Receiver
    tenant_id: int
    key: str
    topic_id: int
    webhook_id: int
    links: dict[str, str]  # address -> /u/{token}

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def logs(self) -> str:
        return self.server.tail() + "\n" + self.worker.tail()

    async def api(self, path: str, body: Any) -> Any:
        response = await self.http.post(path, json=body, headers=self.auth())
        assert response.status_code < 300, response.text
        return response.json()

    @contextlib.asynccontextmanager
    async def db(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(self.stores.database_url, timeout=10)
        try:
            yield conn
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def redis(self) -> AsyncIterator[aioredis.Redis]:
        client = aioredis.from_url(self.stores.redis_url)
        try:
            yield client
        finally:
            await client.aclose()


async def until(
    predicate: Callable[[], Awaitable[bool]], seconds: float, what: str, stack: Stack | None = None
) -> float:
    """Poll `predicate` until true; returns the seconds it took, fails with `what` after `seconds`."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what}: not within {seconds:g} s\n" + (stack.logs() if stack else ""))
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def wait_ready(proc: Proc, base: str) -> None:
    async with httpx.AsyncClient(timeout=2) as probe:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not proc.alive():
                pytest.fail(f"`suppress serve` exited\n{proc.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await probe.get(f"{base}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    pytest.fail(f"`suppress serve` not ready within 60 s\n{proc.tail()}")


@dataclass
class Services:
    """`suppress serve` and `suppress worker`, once for the module (a scenario may kill the worker)."""

    base: str
    server: Proc
    worker: Proc


@pytest.fixture(scope="module")
async def services(stores: Stores) -> AsyncIterator[Services]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(stores, public_url=base)
    logs = stores.root / "logs"
    logs.mkdir(exist_ok=True)
    server = Proc(
        "server",
        ["serve", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env,
        logs / "server.log",
    )
    worker = Proc("worker", ["worker"], env, logs / "worker.log")
    try:
        server.start()
        worker.start()
        await wait_ready(server, base)
        yield Services(base=base, server=server, worker=worker)
    finally:
        worker.stop()
        server.stop()


@contextlib.asynccontextmanager
async def make_stack(
    stores: Stores, services: Services, name: str, receiver: Receiver
) -> AsyncIterator[Stack]:
    """A fresh tenant with its recipients, links and webhook, on the module's server and worker."""
    made = json.loads(
        run_cli(
            "tenants", "create", f"{name}-{secrets.token_hex(3)}", "--json", env=service_env(stores)
        ).stdout
    )
    if not services.worker.alive():  # a scenario before this one failed between kill and restart
        services.worker.start()
    assert services.server.alive(), services.server.tail()
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=services.base, timeout=30, limits=limits) as http:
        stack = Stack(
            stores=stores,
            base=services.base,
            server=services.server,
            worker=services.worker,
            http=http,
            receiver=receiver,
            tenant_id=made["tenant"],
            key=made["api_key"],
            topic_id=0,
            webhook_id=0,
            links={},
        )
        await setup_recipients(stack)
        yield stack


async def setup_recipients(stack: Stack) -> None:
    """A topic, a consent per recipient, the webhook, every recipient's link; then a quiet queue."""
    await stack.api("/v1/topics", {"name": TOPIC, "soft_opt_in": False})
    async with stack.db() as conn:
        stack.topic_id = await conn.fetchval(
            "SELECT id FROM topics WHERE tenant_id = $1 AND name = $2", stack.tenant_id, TOPIC
        )
    addresses = [f"person{i}@example.no" for i in range(N)]
    gate = asyncio.Semaphore(8)

    async def consent(address: str) -> None:
        async with gate:
            await stack.api("/v1/consents", {"channel": "email", "address": address, "source": "signup_form"})

    await asyncio.gather(*(consent(a) for a in addresses))
    # Registered after the consents: it gets only the unsubscribes (and only that kind anyway).
    hook = await stack.api("/v1/webhooks", {"url": stack.receiver.url, "events": ["unsubscribed"]})
    stack.webhook_id = hook["id"]
    stack.receiver.secret = hook["secret"]
    checked = await stack.api(
        "/v1/checks", {"channel": "email", "purpose": "marketing", "topic": TOPIC, "recipients": addresses}
    )
    for result in checked["results"]:
        assert result["allowed"], result
        url = result["unsubscribe_url"]
        assert url.startswith(f"{stack.base}/u/"), url
        stack.links[result["recipient"]] = url.removeprefix(stack.base)

    async def quiet() -> bool:  # the consents' own effects are done before the fault starts
        async with stack.db() as conn:
            return not await conn.fetchval(
                "SELECT count(*) FROM pending_effects WHERE tenant_id = $1", stack.tenant_id
            )

    await until(quiet, 60, "the consents' effects", stack)


# -- the one-click stream -------------------------------------------------------------------------


@dataclass
class Sent:
    address: str
    sent_at: datetime
    status: int | None
    kind: str  # applied | spooled | already | unavailable | <anything else = unexpected>


def classify(response: httpx.Response) -> str:
    if response.status_code == 503:
        return "unavailable"
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    text = response.text
    if "We have received your unsubscribe" in text:
        return "spooled"
    if "You were already unsubscribed" in text:
        return "already"
    if "You are unsubscribed" in text:
        return "applied"
    return "200 with an unknown page"


@dataclass
class Stream:
    """N one-click POSTs at `rate` per second from `concurrency` keep-alive clients."""

    stack: Stack
    rate: float
    concurrency: int = 8
    sent: list[Sent] = field(default_factory=list)

    async def run(self) -> None:
        items = iter(enumerate(self.stack.links.items()))
        started = time.monotonic()

        async def client() -> None:
            for i, (address, path) in items:  # one shared iterator: each link is posted once
                delay = started + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at = datetime.now(UTC)
                try:
                    response = await self.stack.http.post(path, content=ONE_CLICK, headers=FORM)
                    status, kind = response.status_code, classify(response)
                except httpx.TransportError as exc:
                    status, kind = None, f"no answer ({type(exc).__name__})"
                self.sent.append(Sent(address, sent_at, status, kind))

        await asyncio.gather(*(client() for _ in range(self.concurrency)))

    async def wait_for(self, count: int) -> None:
        async def reached() -> bool:
            return len(self.sent) >= count

        await until(reached, 60, f"{count} answered POSTs", self.stack)

    def acknowledged(self) -> list[Sent]:
        return [s for s in self.sent if s.status is not None and 200 <= s.status < 300]

    def counts(self) -> Counter[str]:
        return Counter(s.kind for s in self.sent)


# -- settling and the checks every scenario makes -------------------------------------------------


@dataclass
class State:
    events: dict[str, list[asyncpg.Record]]  # address -> its unsubscribed events
    pending_effects: set[int]  # event ids
    pending_deliveries: dict[int, int]  # delivery id -> event id
    deliveries: Counter[int]  # event id -> delivery rows for the webhook
    delivered: set[int]
    suppressed: set[str]
    cut_off_attempts: int  # attempts without a recorded outcome


async def read_state(stack: Stack) -> State:
    async with stack.db() as conn:
        rows = await conn.fetch(
            """
            SELECT r.address, e.id, e.occurred_at, e.recorded_at,
                   coalesce((e.data ->> 'spooled')::boolean, false) AS spooled
            FROM events e
            JOIN recipients r USING (tenant_id, channel, address_hash)
            WHERE e.tenant_id = $1 AND e.kind = 'unsubscribed'
            """,
            stack.tenant_id,
        )
        events: dict[str, list[asyncpg.Record]] = {}
        for row in rows:
            events.setdefault(row["address"], []).append(row)
        pending = await conn.fetch(
            "SELECT event_id FROM pending_effects WHERE tenant_id = $1", stack.tenant_id
        )
        deliveries = await conn.fetch(
            "SELECT id, event_id, status FROM webhook_deliveries WHERE tenant_id = $1 AND webhook_id = $2",
            stack.tenant_id,
            stack.webhook_id,
        )
        suppressed = await conn.fetch(
            """
            SELECT r.address FROM suppressions s
            JOIN recipients r USING (tenant_id, channel, address_hash)
            WHERE s.tenant_id = $1 AND s.reason = 'unsubscribed' AND s.topic_id = $2
            """,
            stack.tenant_id,
            stack.topic_id,
        )
        cut_off = await conn.fetchval(
            "SELECT count(*) FROM webhook_attempts WHERE tenant_id = $1 AND duration_ms IS NULL",
            stack.tenant_id,
        )
    return State(
        events=events,
        pending_effects={r["event_id"] for r in pending},
        pending_deliveries={d["id"]: d["event_id"] for d in deliveries if d["status"] == "pending"},
        deliveries=Counter(d["event_id"] for d in deliveries),
        delivered={d["event_id"] for d in deliveries if d["status"] == "delivered"},
        suppressed={r["address"] for r in suppressed},
        cut_off_attempts=cut_off,
    )


def event_ref(stack: Stack, event_id: int) -> str:
    return f"{stack.tenant_id}:{event_id}"


@dataclass
class Blocked:
    """Work whose job id is held by a stale `arq:result:<job>` key, so nothing can enqueue it again."""

    effects: set[int] = field(default_factory=set)  # event ids
    deliveries: dict[int, int] = field(default_factory=dict)  # delivery id -> event id

    def events(self) -> set[int]:
        return self.effects | set(self.deliveries.values())

    def __bool__(self) -> bool:
        return bool(self.effects or self.deliveries)


async def stale_results(stack: Stack, state: State) -> Blocked:
    """The pending work no job will pick up before a stale result key expires (STALE_RESULT)."""
    blocked = Blocked()
    async with stack.redis() as redis:

        async def stuck(job: str) -> bool:
            return not await redis.exists(f"arq:job:{job}") and bool(await redis.exists(f"arq:result:{job}"))

        # effects are drained per tenant: pending ones wait for the tenant's drain job (or its follow-up)
        drains = (drain_job_id(stack.tenant_id), drain_again_job_id(stack.tenant_id))
        if state.pending_effects and all([await stuck(job) for job in drains]):
            blocked.effects.update(state.pending_effects)
        for delivery_id, event_id in state.pending_deliveries.items():
            if await stuck(f"webhook:{stack.tenant_id}:{delivery_id}"):
                blocked.deliveries[delivery_id] = event_id
    return blocked


class Nudger:
    """Runs `sweep_pending_effects` and `redeliver_due_webhooks` (the worker's cron jobs) directly,
    at most every NUDGE_EVERY seconds, with a ctx of its own; counts what they enqueued."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.enabled = os.environ.get("SUPPRESS_FAULTS_REAL_CRONS") != "1"
        self.enqueued = 0
        self._last = 0.0
        self._ctx: dict[str, Any] = {}

    async def __aenter__(self) -> Nudger:
        if self.enabled:
            self._ctx = {
                "pool": await create_db_pool(self.stack.stores.database_url, size=2, min_size=0),
                "queries": load_queries(),
                "redis": await create_arq_pool(redis_settings(self.stack.stores.redis_url)),
            }
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ctx:
            await self._ctx["redis"].aclose()
            await self._ctx["pool"].close()

    async def maybe(self) -> None:
        if not self.enabled or time.monotonic() - self._last < NUDGE_EVERY:
            return
        self._last = time.monotonic()
        with contextlib.suppress(*DATABASE_DOWN, asyncpg.PostgresError):  # PostgreSQL may be starting
            self.enqueued += await sweep_pending_effects(self._ctx)
            self.enqueued += await redeliver_due_webhooks(self._ctx)


async def settle(stack: Stack, acked: set[str], nudger: Nudger) -> tuple[State, float]:
    """Wait until every acknowledged unsubscribe is applied and every effect is done.

    Fails early, naming STALE_RESULT, when after STALE_RESULT_AFTER seconds (the crons have had
    their chance) all that is left is work held up by stale result keys."""
    last: list[str] = []
    started = time.monotonic()

    async def settled() -> State | None:
        try:
            state = await read_state(stack)
        except (OSError, asyncpg.PostgresError) as exc:  # the database may still be starting
            last[:] = [f"database: {type(exc).__name__}"]
            return None
        received = set(stack.receiver.snapshot())
        missing_events = acked - set(state.events)
        expected = {event_ref(stack, e["id"]) for rows in state.events.values() for e in rows}
        last[:] = [
            f"acknowledged without an event: {len(missing_events)}, pending effects: "
            f"{len(state.pending_effects)}, pending deliveries: {len(state.pending_deliveries)}, "
            f"events not received: {len(expected - received)}"
        ]
        if missing_events:
            return None
        if not state.pending_effects and not state.pending_deliveries and expected <= received:
            return state
        if time.monotonic() - started < STALE_RESULT_AFTER:
            return None
        blocked = await stale_results(stack, state)
        held = {event_ref(stack, e) for e in blocked.events()}
        if (
            blocked
            and state.pending_effects == blocked.effects
            and state.pending_deliveries == blocked.deliveries
            and expected - received <= held
        ):
            pytest.fail(
                f"{STALE_RESULT} Held up: the effects of {len(blocked.effects)} event(s) and "
                f"{len(blocked.deliveries)} webhook deliverie(s)."
            )
        return None

    while (done := await settled()) is None:
        await nudger.maybe()
        if time.monotonic() - started > SETTLE_TIMEOUT:
            pytest.fail(f"not settled within {SETTLE_TIMEOUT:g} s: {last[0]}\n{await diagnose(stack)}")
        await asyncio.sleep(0.25)
    return done, time.monotonic() - started


async def diagnose(stack: Stack) -> str:
    """What became of the work still pending: its jobs in Redis and its lines in the worker log."""
    lines: list[str] = []
    async with stack.db() as conn:
        pending = await conn.fetch(
            "SELECT event_id, created_at FROM pending_effects WHERE tenant_id = $1 LIMIT 5", stack.tenant_id
        )
        deliveries = await conn.fetch(
            "SELECT id, event_id, attempts, next_attempt_at FROM webhook_deliveries"
            " WHERE tenant_id = $1 AND status = 'pending' LIMIT 5",
            stack.tenant_id,
        )
    jobs = [drain_job_id(stack.tenant_id), drain_again_job_id(stack.tenant_id)] if pending else []
    jobs += [f"webhook:{stack.tenant_id}:{r['id']}" for r in deliveries]
    lines += [f"pending effect {dict(r)}" for r in pending]
    lines += [f"pending delivery {dict(r)}" for r in deliveries]
    async with stack.redis() as redis:
        for job in jobs:
            keys = {
                kind: await redis.pttl(f"arq:{kind}:{job}")
                for kind in ("job", "result", "in-progress", "retry")
            }
            lines.append(f"{job}: pttl {keys}, queued at {await redis.zscore(QUEUE, job)}")
    log = stack.worker.log_path.read_text(errors="replace").splitlines()
    for job in jobs:
        lines += [f"  {line}" for line in log if f"{job}:" in line or f"{job} " in line][-10:]
    return "\n".join(lines) + "\n" + stack.logs()


@dataclass
class Outcome:
    scenario: str
    posted: int
    acknowledged: int
    applied: int
    spooled: int
    unavailable: int
    errors: int  # 500s
    lost: int
    doubled_events: int
    duplicates: int
    cut_off_attempts: int
    settle_seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.notes.items())
        return (
            f"[{self.scenario}] posted={self.posted} acknowledged={self.acknowledged} "
            f"(applied={self.applied} spooled={self.spooled}) 503={self.unavailable} "
            f"500={self.errors} lost={self.lost} "
            f"doubled_events={self.doubled_events} duplicate_receipts={self.duplicates} "
            f"cut_off_attempts={self.cut_off_attempts} settled_in={self.settle_seconds:.1f}s{extra}"
        )


async def verify(stack: Stack, stream: Stream, scenario: str, **notes: Any) -> Outcome:
    """Settle, then check everything a scenario promises; returns the counts."""
    counts = stream.counts()
    unexpected = {k: v for k, v in counts.items() if k not in {"applied", "spooled", "unavailable"}}
    if INTERNAL_CLIENT_ERROR_SIGNATURE in stack.server.log_path.read_text(errors="replace"):
        pytest.fail(f"{INTERNAL_CLIENT_ERROR} Answers: {counts}")
    assert not unexpected, f"unexpected answers {unexpected}\n{stack.logs()}"
    assert len(stream.sent) == N

    async with Nudger(stack) as nudger:
        state, seconds = await settle(stack, {s.address for s in stream.acknowledged()}, nudger)
    if nudger.enabled:
        notes["enqueued_by_direct_sweeps"] = nudger.enqueued
    acked = stream.acknowledged()
    acked_addresses = {s.address for s in acked}
    # every acknowledged unsubscribe: a suppression row and exactly one ledger event
    lost = sorted(a for a in acked_addresses if len(state.events.get(a, [])) == 0)
    assert not lost, f"{len(lost)} acknowledged unsubscribes lost, e.g. {lost[:5]}"
    assert acked_addresses <= state.suppressed, sorted(acked_addresses - state.suppressed)[:5]
    doubled = {a: len(rows) for a, rows in state.events.items() if len(rows) != 1}
    assert not doubled, f"recipients with more than one unsubscribed event: {doubled}"
    # the ledger keeps the time of the request, also when it was applied late from the spool
    late: list[float] = []
    committed_then_spooled = 0
    for s in acked:
        [event] = state.events[s.address]
        skew = abs((event["occurred_at"] - s.sent_at).total_seconds())
        assert skew <= 1.0, f"{s.address}: occurred_at {event['occurred_at']} vs request at {s.sent_at}"
        # An answered "applied" is never applied from the spool. An answered "spooled" usually is,
        # but when PostgreSQL went away after the commit and before its acknowledgement, the service
        # cannot know the write landed: it spools, and the spooled job finds it applied (no event).
        assert s.kind == "spooled" or not event["spooled"], (s, event)
        if s.kind == "spooled" and event["spooled"]:
            late.append((event["recorded_at"] - event["occurred_at"]).total_seconds())
        elif s.kind == "spooled":
            committed_then_spooled += 1
    # the next check denies every acknowledged recipient
    checked = await stack.api(
        "/v1/checks",
        {
            "channel": "email",
            "purpose": "marketing",
            "topic": TOPIC,
            "recipients": sorted(acked_addresses),
        },
    )
    allowed = [r["recipient"] for r in checked["results"] if r["allowed"] or r["reason"] != "unsubscribed"]
    assert not allowed, f"acknowledged unsubscribes not denied by the check: {allowed[:5]}"
    # effects: one delivery per event for the webhook, delivered, received; nothing pending
    event_ids = {e["id"] for rows in state.events.values() for e in rows}
    assert set(state.deliveries) == event_ids
    assert all(n == 1 for n in state.deliveries.values()), state.deliveries.most_common(3)
    assert state.delivered == event_ids
    assert not state.pending_effects
    received = Counter(stack.receiver.snapshot())
    rejected = stack.receiver.rejected
    assert not rejected, f"requests with a bad signature or body: {rejected[:5]}"
    assert set(received) == {event_ref(stack, e) for e in event_ids}
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= state.cut_off_attempts, (
        f"{duplicates} duplicate receipts but only {state.cut_off_attempts} cut-off attempts"
    )
    if late:
        notes["spooled_applied_after_s"] = f"{min(late):.1f}-{max(late):.1f}"
    if committed_then_spooled:
        notes["spooled_but_already_committed"] = committed_then_spooled
    for kind, label in (("unavailable", "503"), ("HTTP 500", "500")):
        refused = [s.address for s in stream.sent if s.kind == kind]
        if refused:  # the client was not told "done": it may or may not have been applied
            notes[f"{label}_applied_anyway"] = sum(1 for a in refused if a in state.events)
    outcome = Outcome(
        scenario=scenario,
        posted=len(stream.sent),
        acknowledged=len(acked),
        applied=counts["applied"],
        spooled=counts["spooled"],
        unavailable=counts["unavailable"],
        errors=counts["HTTP 500"],
        lost=len(lost),
        doubled_events=len(doubled),
        duplicates=duplicates,
        cut_off_attempts=state.cut_off_attempts,
        settle_seconds=seconds,
        notes=notes,
    )
    print(outcome.line())
    return outcome


# -- the scenarios --------------------------------------------------------------------------------


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    made = Receiver(delay=getattr(request, "param", 0.0))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
async def stack(
    stores: Stores, services: Services, receiver: Receiver, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    name = request.node.name.removeprefix("test_").split("[")[0][:40]
    async with make_stack(stores, services, name, receiver) as made:
        yield made
