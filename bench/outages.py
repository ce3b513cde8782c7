"""How fast the API answers while PostgreSQL or Redis is stopped or frozen, with the default
deadlines (docs/operations.md).

The app runs in-process (Litestar's test client, no network in front of it) and reaches
PostgreSQL and Redis through TCP proxies on 127.0.0.1 that this script stops or freezes
(tests/faultproxy.py); the servers themselves are never touched. Each line is the median (and the
maximum) of a few requests, with the status codes seen.

    uv run python bench/outages.py [--admin-dsn DSN] [--redis-url URL]

It makes a database named suppress_bench_outages_* and drops it at the end, and removes the one
unsubscribe it spools from the Redis queue it used.
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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient
from tests.faultproxy import FaultProxy

from suppress.app import create_app
from suppress.config import Settings
from suppress.migrate import migrate
from suppress.sql import load_queries
from suppress.tenants import create_tenant

SECRET = "bench-outages-secret-" + "b" * 40


def _with_port(url: str, port: int, path: str | None = None) -> str:
    parts = urlsplit(url)
    return parts._replace(
        netloc=f"{parts.username + '@' if parts.username else ''}127.0.0.1:{port}",
        path=path if path is not None else parts.path,
    ).geturl()


async def run(admin_dsn: str, redis_url: str) -> None:
    name = f"suppress_bench_outages_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    target_pg, target_redis = urlsplit(admin_dsn), urlsplit(redis_url)
    pgp = FaultProxy(target_pg.hostname or "127.0.0.1", target_pg.port or 5432)
    rp = FaultProxy(target_redis.hostname or "127.0.0.1", target_redis.port or 6379)
    queue_before: set[bytes] = set()
    direct = aioredis.from_url(redis_url)
    try:
        conn = await asyncpg.connect(_with_port(admin_dsn, target_pg.port or 5432, "/" + name))
        await migrate(conn)
        key = (await create_tenant(conn, load_queries(), "bench")).api_key
        await conn.close()
        queue_before = set(await direct.zrange("arq:queue", 0, -1))
        settings = Settings(
            database_url=_with_port(admin_dsn, pgp.port, "/" + name),
            redis_url=_with_port(redis_url, rp.port),
            secret=SECRET,
        )
        auth = {"Authorization": f"Bearer {key}"}
        check = {"channel": "email", "purpose": "marketing", "recipients": ["a@example.org"]}
        async with AsyncTestClient(app=create_app(settings), timeout=120) as c:
            consent = {"channel": "email", "address": "a@example.org", "source": "bench"}
            await c.post("/v1/consents", json=consent, headers=auth)
            url = (await c.post("/v1/checks", json=check, headers=auth)).json()["results"][0][
                "unsubscribe_url"
            ]
            path = "/u/" + url.rsplit("/u/", 1)[1]
            one_click = {"List-Unsubscribe": "One-Click"}
            suppression = {"channel": "email", "address": "b@example.org", "reason": "manual"}

            async def timed(what: str, request: Callable[[], Awaitable[Any]], n: int = 3) -> None:
                times, codes = [], set()
                for _ in range(n):
                    started = time.monotonic()
                    response = await request()
                    times.append(time.monotonic() - started)
                    codes.add(response.status_code)
                print(
                    f"{what:48s} {statistics.median(times):6.2f} s  (max {max(times):5.2f})  {sorted(codes)}"
                )

            await timed("check, healthy", lambda: c.post("/v1/checks", json=check, headers=auth))
            await timed("/readyz, healthy", lambda: c.get("/readyz"))
            with pgp.fault("stopped"):
                await timed(
                    "check, PostgreSQL stopped", lambda: c.post("/v1/checks", json=check, headers=auth)
                )
                await timed("/readyz, PostgreSQL stopped", lambda: c.get("/readyz"))
            await c.post("/v1/checks", json=check, headers=auth)
            with pgp.fault("frozen"):
                await timed(
                    "check, PostgreSQL frozen", lambda: c.post("/v1/checks", json=check, headers=auth)
                )
                await timed(
                    "write, PostgreSQL frozen",
                    lambda: c.post("/v1/suppressions", json=suppression, headers=auth),
                )
                await timed("/readyz, PostgreSQL frozen", lambda: c.get("/readyz"))
                await timed("unsubscribe page, PostgreSQL frozen", lambda: c.get(path))
                await timed("one-click, PostgreSQL frozen (spooled)", lambda: c.post(path, data=one_click), 1)
            with pgp.fault("stopped"), rp.fault("frozen"):
                await timed(
                    "one-click, PostgreSQL stopped, Redis frozen", lambda: c.post(path, data=one_click)
                )
            with rp.fault("frozen"):
                await timed("/readyz, Redis frozen", lambda: c.get("/readyz"))
    finally:
        pgp.close()
        rp.close()
        spooled = [
            j
            for j in set(await direct.zrange("arq:queue", 0, -1)) - queue_before
            if j.startswith(b"unsubscribe:")
        ]
        for job in spooled:
            await direct.zrem("arq:queue", job)
            await direct.delete(b"arq:job:" + job)
        await direct.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = p.parse_args()
    asyncio.run(run(args.admin_dsn, args.redis_url))


if __name__ == "__main__":
    main()
