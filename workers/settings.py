"""What a worker runs: every job, every cron, and the resources they share through `ctx`."""

from __future__ import annotations

from typing import Any, ClassVar

from arq import cron, func
from arq.connections import RedisSettings

from suppress.config import Settings
from suppress.db import create_pool
from suppress.queue import WORKER_HEARTBEAT_SECONDS, redis_settings
from suppress.sql import load_queries
from workers.effects import Effect, drain_effects, sweep_pending_effects
from workers.health import prune_health, refresh_tenant_health, schedule_health_refresh, update_health
from workers.imports import JOB_TIMEOUT as IMPORT_JOB_TIMEOUT
from workers.imports import MAX_TRIES as IMPORT_MAX_TRIES
from workers.imports import resume_imports, run_import
from workers.ledger import open_ledger, seal_ledgers
from workers.providers import (
    close_providers,
    open_providers,
    process_provider_events,
    prune_provider_records,
    sweep_provider_events,
)
from workers.sms import KEEP_RESULT_SECONDS, MAX_TRIES, close_sms_sender, open_sms_sender, send_sms_reply
from workers.suppressions import expire_suppressions
from workers.unsubscribe import apply_spooled_unsubscribe
from workers.webhooks import (
    DELIVERY_JOB_TIMEOUT,
    DELIVERY_MAX_TRIES,
    close_webhooks,
    deliver_webhook,
    fan_out,
    open_webhooks,
    redeliver_due_webhooks,
)

# Effects applied to every batch of ledger events, in this order, in the transaction that claims the
# batch: each is `async def effect(ctx, conn, batch) -> AfterCommit | None` (see workers/effects.py).
EFFECTS: list[Effect] = [fan_out, update_health]


async def startup(ctx: dict[str, Any]) -> None:
    """Open the database pool and load the queries once per worker process."""
    settings: Settings = ctx.get("settings") or Settings.from_env()
    ctx["settings"] = settings
    ctx["queries"] = load_queries()
    # min_size=0: the worker starts even while PostgreSQL is down, so spooled unsubscribes wait in it
    ctx["pool"] = await create_pool(settings.require_database_url(), size=4, min_size=0)
    ctx["effects"] = list(EFFECTS)
    open_sms_sender(ctx, settings)
    open_webhooks(ctx)
    open_providers(ctx)
    open_ledger(ctx)


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close what startup opened."""
    await close_sms_sender(ctx)
    await close_webhooks(ctx)
    await close_providers(ctx)
    pool = ctx.get("pool")
    if pool is not None:
        await pool.close()


def _redis() -> RedisSettings:
    url = Settings.from_env().redis_url
    return redis_settings(url) if url else RedisSettings()


class WorkerSettings:
    """arq's entry point: `arq workers.settings.WorkerSettings`, or `suppress worker`."""

    functions: ClassVar[list[Any]] = [
        expire_suppressions,
        # keep_result=0: the provider-event sweeper can enqueue events again once a job is gone
        func(process_provider_events, keep_result=0, max_tries=1000, timeout=600),
        # keep_result=0: a finished drain's id (one per tenant) is free again for the next write
        func(drain_effects, keep_result=0, max_tries=20),
        # keep_result: the reply's job id (from the STOP's ledger event) stays taken for a day
        func(send_sms_reply, keep_result=KEEP_RESULT_SECONDS, max_tries=MAX_TRIES),
        # a spooled unsubscribe waits out any database outage: it must never be dropped
        func(apply_spooled_unsubscribe, keep_result=0, max_tries=100_000),
        # keep_result=0: the redelivery cron can enqueue a delivery again once its job is gone
        func(deliver_webhook, keep_result=0, max_tries=DELIVERY_MAX_TRIES, timeout=DELIVERY_JOB_TIMEOUT),
        # keep_result=0: a slice's job id (from its checkpoint) is free again for resume_imports
        func(run_import, keep_result=0, max_tries=IMPORT_MAX_TRIES, timeout=IMPORT_JOB_TIMEOUT),
        # keep_result=0: the next minute's cron can enqueue the tenant's refresh again
        func(refresh_tenant_health, keep_result=0, max_tries=3, timeout=600),
        # keep_result=0: `suppress ledger seal`-style one-off runs may be enqueued again at once
        func(seal_ledgers, keep_result=0, max_tries=1, timeout=300),
    ]
    cron_jobs: ClassVar[list[Any]] = [
        # every second: unsealed ledger events closed into each tenant's next checkpoint
        cron(seal_ledgers, second=set(range(60)), unique=True, run_at_startup=True, timeout=300),
        # every 30 s: acknowledged provider events still pending after a grace period (lost enqueue)
        cron(sweep_provider_events, second={10, 40}, unique=True, run_at_startup=True),
        # hourly: expired provider nonces, long-finished provider events, soft bounces past every window
        cron(prune_provider_records, minute=23, second=30, unique=True),
        # every minute: lifts temporary suppressions (soft bounces, manual with expiry) that ran out
        cron(expire_suppressions, second=7, unique=True, run_at_startup=True),
        # every 30 s: tenants with effects still pending after a grace period get a drain enqueued
        cron(sweep_pending_effects, second={0, 30}, unique=True, run_at_startup=True),
        # every 30 s: webhook deliveries that are due but have no job (lost enqueue, killed worker)
        cron(redeliver_due_webhooks, second={15, 45}, unique=True, run_at_startup=True),
        # every 30 s: unfinished imports no runner holds (lost enqueue, killed worker) go on
        cron(resume_imports, second={10, 40}, unique=True, run_at_startup=True),
        # every minute: one list-health refresh per tenant (snapshot + campaign check totals)
        cron(schedule_health_refresh, second=20, unique=True, run_at_startup=True),
        # hourly: counted events whose effects are long done are forgotten
        cron(prune_health, minute=41, second=0, unique=True),
    ]
    on_startup = startup
    on_shutdown = shutdown
    max_tries = 5
    job_timeout = 300
    # No stored results: arq keeps the result of a job it failed before running it (expired, out of
    # tries) for this long whatever func(keep_result=...) says, and that would block the sweeper's
    # re-enqueue under the same deterministic job id.
    keep_result = 0
    # the heartbeat key /readyz looks at (queue.WORKER_HEARTBEAT_KEY), refreshed from the polling loop
    health_check_interval = WORKER_HEARTBEAT_SECONDS
    redis_settings = _redis()
