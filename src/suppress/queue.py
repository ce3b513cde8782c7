"""The job queue (arq on Redis). The only module of the service that imports arq.

Jobs are enqueued by name; `workers.settings.WorkerSettings` registers every name (a test checks
that each name enqueued here is registered there).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from arq import ArqRedis, Retry, Worker, create_pool
from arq.connections import RedisSettings
from arq.worker import create_worker

from suppress.db import translated_errors
from suppress.errors import Unavailable

log = logging.getLogger(__name__)

# The one retry rule for transient failures (an outage): 5 s more each try, at most a minute.
RETRY_STEP_SECONDS = 5
RETRY_MAX_SECONDS = 60

# Every job name the service enqueues. workers/settings.py must register each of them.
JOB_EXPIRE_SUPPRESSIONS = "expire_suppressions"
JOB_APPLY_EFFECTS = "apply_effects"
JOB_SEND_SMS_REPLY = "send_sms_reply"
JOB_APPLY_UNSUBSCRIBE = "apply_spooled_unsubscribe"
JOB_DELIVER_WEBHOOK = "deliver_webhook"
JOB_RUN_IMPORT = "run_import"
JOB_REFRESH_HEALTH = "refresh_tenant_health"
JOB_PROCESS_PROVIDER_EVENTS = "process_provider_events"
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


def retry_later(ctx: dict[str, Any], what: str, exc: BaseException) -> Retry:
    """The Retry a job raises after a transient failure, deferred by the one retry rule."""
    defer = min(RETRY_MAX_SECONDS, RETRY_STEP_SECONDS * int(ctx.get("job_try", 1)))
    log.warning("%s: %s (%s); retrying in %ss", what, type(exc).__name__, exc, defer)
    return Retry(defer=defer)


@contextmanager
def retry_on_outage(ctx: dict[str, Any], what: str) -> Iterator[None]:
    """Run a job's database work; when the database is down, retry the job by the one rule."""
    try:
        with translated_errors():
            yield
    except Unavailable as exc:
        raise retry_later(ctx, what, exc) from None


def build_worker(worker_settings: Any, redis_url: str, ctx: dict[str, Any]) -> Worker:
    """An arq worker for `worker_settings` that runs inside the caller's event loop (used by `dev`)."""
    return create_worker(
        worker_settings, redis_settings=redis_settings(redis_url), ctx=ctx, handle_signals=False
    )
