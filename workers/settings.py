"""What a worker runs: every job, every cron, and the resources they share through `ctx`."""

from __future__ import annotations

from typing import Any, ClassVar

from arq import cron
from arq.connections import RedisSettings

from suppress.config import Settings
from suppress.db import create_pool
from suppress.queue import redis_settings
from suppress.sql import load_queries
from workers.suppressions import expire_suppressions


async def startup(ctx: dict[str, Any]) -> None:
    """Open the database pool and load the queries once per worker process."""
    settings: Settings = ctx.get("settings") or Settings.from_env()
    ctx["settings"] = settings
    ctx["queries"] = load_queries()
    ctx["pool"] = await create_pool(settings.require_database_url(), size=4)


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close what startup opened."""
    pool = ctx.get("pool")
    if pool is not None:
        await pool.close()


def _redis() -> RedisSettings:
    url = Settings.from_env().redis_url
    return redis_settings(url) if url else RedisSettings()


class WorkerSettings:
    """arq's entry point: `arq workers.settings.WorkerSettings`, or `suppress worker`."""

    functions: ClassVar[list[Any]] = [expire_suppressions]
    cron_jobs: ClassVar[list[Any]] = [
        # every minute: lifts temporary suppressions (soft bounces, manual with expiry) that ran out
        cron(expire_suppressions, second=7, unique=True, run_at_startup=True),
    ]
    on_startup = startup
    on_shutdown = shutdown
    max_tries = 5
    job_timeout = 300
    redis_settings = _redis()
