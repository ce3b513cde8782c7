"""The job queue (arq on Redis). The only module of the service that imports arq.

Jobs are enqueued by name; `workers.settings.WorkerSettings` registers every name (a test checks
that each name enqueued here is registered there).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from arq import ArqRedis, Worker, create_pool
from arq.connections import RedisSettings

from suppress.errors import Unavailable

# Every job name the service enqueues. workers/settings.py must register each of them.
JOB_EXPIRE_SUPPRESSIONS = "expire_suppressions"
JOB_APPLY_EFFECTS = "apply_effects"
JOB_SEND_SMS_REPLY = "send_sms_reply"
JOB_APPLY_UNSUBSCRIBE = "apply_spooled_unsubscribe"
JOB_DELIVER_WEBHOOK = "deliver_webhook"
JOB_RUN_IMPORT = "run_import"
JOB_REFRESH_HEALTH = "refresh_tenant_health"
JOB_PROCESS_PROVIDER_EVENTS = "process_provider_events"
JOB_SEAL_LEDGERS = "seal_ledgers"
ENQUEUED_JOBS: frozenset[str] = frozenset(
    {
        JOB_DELIVER_WEBHOOK,
        JOB_RUN_IMPORT,
        JOB_REFRESH_HEALTH,
        JOB_PROCESS_PROVIDER_EVENTS,
        JOB_EXPIRE_SUPPRESSIONS,
        JOB_APPLY_EFFECTS,
        JOB_SEND_SMS_REPLY,
        JOB_APPLY_UNSUBSCRIBE,
        JOB_SEAL_LEDGERS,
    }
)

Queue = ArqRedis


def redis_settings(url: str) -> RedisSettings:
    """arq connection settings from a redis:// URL, failing fast instead of retrying for long."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 2
    settings.conn_retry_delay = 0
    return settings


async def connect(url: str) -> Queue:
    """A pool to enqueue jobs with; Unavailable when Redis cannot be reached."""
    try:
        return await create_pool(redis_settings(url))
    except (OSError, ConnectionError) as exc:
        raise Unavailable(f"cannot connect to Redis: {type(exc).__name__}") from None


async def enqueue(
    queue: Queue, name: str, *args: Any, job_id: str | None = None, expires: timedelta | None = None
) -> bool:
    """Enqueue a registered job by name; a deterministic `job_id` makes repeats no-ops.

    Returns False when a job with that id is already queued or done.
    """
    if name not in ENQUEUED_JOBS:
        raise ValueError(f"job {name!r} is not in queue.ENQUEUED_JOBS")
    job = await queue.enqueue_job(name, *args, _job_id=job_id, _expires=expires)
    return job is not None


async def ping(queue: Queue) -> bool:
    """Readiness: Redis answers."""
    try:
        return bool(await queue.ping())
    except (OSError, ConnectionError):
        return False


def build_worker(worker_settings: Any, redis_url: str, ctx: dict[str, Any]) -> Worker:
    """An arq worker for `worker_settings` that runs inside the caller's event loop (used by `dev`)."""
    return Worker(
        functions=worker_settings.functions,
        cron_jobs=getattr(worker_settings, "cron_jobs", None),
        on_startup=getattr(worker_settings, "on_startup", None),
        on_shutdown=getattr(worker_settings, "on_shutdown", None),
        max_tries=getattr(worker_settings, "max_tries", 5),
        job_timeout=getattr(worker_settings, "job_timeout", 300),
        redis_settings=redis_settings(redis_url),
        ctx=ctx,
        handle_signals=False,
        keep_result=getattr(worker_settings, "keep_result", 3600),
    )
