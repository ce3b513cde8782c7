"""`suppress dev`: the whole service on one machine with nothing installed but Python.

Starts embedded PostgreSQL and Redis when SUPPRESS_DATABASE_URL / SUPPRESS_REDIS_URL are unset,
keeps a generated SUPPRESS_SECRET in the data folder, migrates, seeds a demo tenant, and runs the
API and a worker in one process until Ctrl-C. While it runs, its connection settings wait in
``DATA_DIR/dev-settings.json`` for the other `suppress` commands (settings_file.py). The log shows
requests and problems; arq's line per job (tens of thousands an hour) only with ``--verbose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import uvicorn

from suppress import queue
from suppress.addresses import AddressHasher
from suppress.api.access import AccessLog
from suppress.app import create_app
from suppress.config import DerivedKeys, Settings
from suppress.consents import ConsentIn
from suppress.customers import CustomerAddressIn, CustomerEventIn
from suppress.db import create_pool
from suppress.devstack import settings_file
from suppress.devstack.embedded import EmbeddedPostgres, EmbeddedRedis, default_data_dir
from suppress.devstack.secrets_file import read_or_create
from suppress.migrate import migrate
from suppress.models import Channel, CustomerEvent
from suppress.recipients import Recipients
from suppress.sql import load_queries
from suppress.suppressions import SuppressionIn
from suppress.tenants import Authenticator, create_api_key, create_tenant
from suppress.topics import TopicDisplay, TopicIn, TopicText

DEMO_TENANT = "demo"
log = logging.getLogger(__name__)


# What the demo's recipient page shows for its topics.
DEMO_TOPICS = {
    "newsletter": TopicDisplay(
        nb=TopicText(label="Nyhetsbrev", description="Nytt fra oss en gang i måneden."),
        en=TopicText(label="Newsletter", description="News from us once a month."),
    ),
    "offers": TopicDisplay(
        nb=TopicText(label="Tilbud", description="Rabatter og kampanjer."),
        en=TopicText(label="Offers", description="Discounts and sales."),
    ),
}


async def seed_demo(settings: Settings, data_dir: Path) -> str:
    """Create the demo tenant with topics, consents, customers and a suppression; return its key.

    Idempotent: a later run reuses the tenant and the key kept in the data folder.
    """
    key_file = data_dir / "demo-api-key"
    queries = load_queries()
    conn = await asyncpg.connect(settings.require_database_url())
    try:
        tenant_id = await conn.fetchval(queries.tenant_by_name, DEMO_TENANT)
        if tenant_id is not None and key_file.exists():
            return key_file.read_text().strip()
        if tenant_id is None:
            new_key = await create_tenant(conn, queries, DEMO_TENANT)
            fresh = True
        else:
            new_key = await create_api_key(conn, queries, tenant_id, ["admin"], label="demo")
            fresh = False
    finally:
        await conn.close()
    _write_private(key_file, new_key.api_key)
    if fresh:
        await _seed_data(settings, new_key.api_key)
    return new_key.api_key


async def _seed_data(settings: Settings, api_key: str) -> None:
    keys = DerivedKeys.from_settings(settings)
    queries = load_queries()
    pool = await create_pool(settings.require_database_url(), size=2)
    try:
        principal = await Authenticator(pool, queries).authenticate(f"Bearer {api_key}")
        service = Recipients(pool, queries, AddressHasher(keys.address_hash_key))
        now = datetime.now(UTC)
        await service.save_topic(
            principal, TopicIn(name="newsletter", soft_opt_in=True, display=DEMO_TOPICS["newsletter"])
        )
        await service.save_topic(
            principal, TopicIn(name="offers", soft_opt_in=False, display=DEMO_TOPICS["offers"])
        )
        evidence = {"ip": "192.0.2.10", "user_agent": "demo", "form": "signup"}
        for address, topic, partners in (
            ("ola.nordmann@example.no", None, False),
            ("kari@example.no", "newsletter", True),
        ):
            await service.give_consent(
                principal,
                ConsentIn(
                    channel="email",
                    address=address,
                    topic=topic,
                    partners=partners,
                    source="signup_form",
                    notice_version="2026-01",
                    evidence=evidence,
                ),
                now,
            )
        await service.give_consent(
            principal,
            ConsentIn(channel="sms", address="+4791234567", source="checkout", notice_version="2026-01"),
            now,
        )
        customers: list[tuple[str, CustomerEvent, int, list[tuple[Channel, str]]]] = [
            ("C-1001", "purchase", 30, [("email", "per@example.no")]),
            ("C-1002", "agreement_started", 200, [("email", "anne@example.no"), ("sms", "+4798765432")]),
        ]
        for ref, event, days, addresses in customers:
            bought = [CustomerAddressIn(channel=c, address=a, collected_in_sale=True) for c, a in addresses]
            customer = CustomerEventIn(
                customer_ref=ref, event=event, at=now - timedelta(days=days), addresses=bought
            )
            await service.customer_event(principal, customer, now)
        await service.suppress(
            principal,
            SuppressionIn(channel="email", address="nils@example.no", reason="unsubscribed"),
            now,
        )
    finally:
        await pool.close()


def _write_private(path: Path, text: str) -> None:
    path.write_text(text + "\n")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)


async def run_dev(
    *, host: str, port: int, data_dir: Path | None, worker_settings: type, verbose: bool = False
) -> int:
    """Run API + worker (and embedded servers where needed) until interrupted."""
    data_dir = data_dir or default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not verbose:  # arq logs every job start and end at INFO; its warnings and errors still show
        logging.getLogger("arq.worker").setLevel(logging.WARNING)
    settings = Settings.from_env()
    with contextlib.ExitStack() as stack:
        database_url, redis_url = settings.database_url, settings.redis_url
        if database_url is None:
            print(f"starting embedded PostgreSQL in {data_dir / 'postgres'} ...", flush=True)
            postgres = EmbeddedPostgres(data_dir)
            stack.callback(postgres.stop)
            database_url = await asyncio.to_thread(postgres.start)
        if redis_url is None:
            print(f"starting embedded Redis in {data_dir / 'redis'} ...", flush=True)
            redis = EmbeddedRedis(data_dir)
            stack.callback(redis.stop)
            redis_url = await asyncio.to_thread(redis.start)
        secret_file = None if settings.secret else data_dir / "secret"
        settings = msgspec.structs.replace(
            settings,
            database_url=database_url,
            redis_url=redis_url,
            secret=settings.secret or read_or_create(data_dir / "secret"),
            public_url=os.environ.get("SUPPRESS_PUBLIC_URL", f"http://{host}:{port}").rstrip("/"),
        )
        dev = settings_file.DevSettings(
            database_url=database_url,
            redis_url=redis_url,
            secret_file=None if secret_file is None else str(secret_file),
            public_url=settings.public_url,
            pid=os.getpid(),
        )
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        api_key = await seed_demo(settings, data_dir)
        # a Redis restarted with a large dump answers LOADING for a while: wait it out
        await queue.wait_until_loaded(redis_url)
        app = AccessLog(create_app(settings, require_worker=True))
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="info", log_config=None, access_log=False)
        )
        worker_task = asyncio.create_task(supervise_worker(worker_settings, redis_url, settings))
        stack.callback(settings_file.remove, data_dir)
        banner = asyncio.create_task(_banner(server, dev, api_key, data_dir))
        try:
            await server.serve()
        finally:
            banner.cancel()
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker_task
            print("stopped", flush=True)
    return 0


# The in-process worker is restarted after a failure, waiting 1, 2, 4, ... up to 30 s between
# tries; a worker that ran this long before it failed starts again from the shortest wait.
WORKER_BACKOFF_FIRST = 1.0
WORKER_BACKOFF_MAX = 30.0
WORKER_HEALTHY_AFTER = 60.0


async def supervise_worker(worker_settings: type, redis_url: str, settings: Settings) -> None:
    """Run the arq worker until cancelled, starting it again (with backoff, logged) whenever it
    stops: Redis dropped or restarting, still loading its dump, or a crash."""
    backoff = WORKER_BACKOFF_FIRST
    while True:
        worker = queue.build_worker(worker_settings, redis_url, ctx={"settings": settings})
        started = asyncio.get_running_loop().time()
        try:
            await worker.async_run()
            log.warning("the worker stopped; starting it again in %.0f s", backoff)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "the worker failed (%s: %s); starting it again in %.0f s", type(exc).__name__, exc, backoff
            )
        finally:
            try:
                await asyncio.wait_for(worker.close(), 10)
            except Exception:  # Redis gone: close() stopped before on_shutdown released the pool
                if worker.on_shutdown is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(worker.on_shutdown(worker.ctx), 10)
        if asyncio.get_running_loop().time() - started > WORKER_HEALTHY_AFTER:
            backoff = WORKER_BACKOFF_FIRST
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, WORKER_BACKOFF_MAX)


async def _first_heartbeat(redis_url: str, wait: float = 30.0) -> None:
    """Wait (a little) for the worker's first heartbeat, so /readyz is ready once the banner shows."""
    job_queue = await queue.connect(redis_url, command_timeout=5.0)
    try:
        deadline = asyncio.get_running_loop().time() + wait
        while not await queue.worker_alive(job_queue):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("no worker heartbeat yet; /readyz says not ready until there is one")
                return
            await asyncio.sleep(0.1)
    finally:
        await job_queue.aclose()


async def _banner(
    server: uvicorn.Server, dev: settings_file.DevSettings, api_key: str, data_dir: Path
) -> None:
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.05)
    await _first_heartbeat(dev.redis_url)
    written = settings_file.write(data_dir, dev)
    base = dev.public_url
    found = (
        "the other suppress commands read it"
        if data_dir == default_data_dir()
        else "not the default folder: use the export lines"
    )
    lines: list[Any] = [
        "",
        "suppress is running",
        f"  API          {base}  (OpenAPI: {base}/schema)",
        f"  ready?       {base}/readyz",
        f"  demo API key {api_key}",
        f"  data folder  {data_dir}",
        f"  secret       {dev.secret_file or 'from SUPPRESS_SECRET'}",
        f"  settings     {written} ({found})",
        "",
        "to use this server from another shell or tool:",
        *(f"  {line}" for line in dev.export_lines()),
        "",
        "try:",
        f"  curl -s {base}/v1/checks -H 'Authorization: Bearer {api_key}' \\",
        "    -H 'Content-Type: application/json' \\",
        '    -d \'{"channel":"email","purpose":"marketing","topic":"newsletter",'
        '"recipients":["ola.nordmann@example.no","per@example.no","nils@example.no","nobody@example.no"]}\'',
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(str(line) for line in lines), flush=True)
