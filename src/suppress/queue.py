"""The job queue (arq on Redis). The only module of the service that imports arq.

Jobs are enqueued by name; `workers.settings.WorkerSettings` registers every name (a test checks
that each name enqueued here is registered there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from arq import ArqRedis, Retry, Worker, create_pool
from arq.connections import RedisSettings
from arq.constants import (
    default_queue_name,
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from arq.worker import create_worker
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from suppress.db import translated_errors
from suppress.errors import Unavailable

log = logging.getLogger(__name__)

# The one retry rule for transient failures (an outage): 5 s more each try, at most a minute.
RETRY_STEP_SECONDS = 5
RETRY_MAX_SECONDS = 60

# Every job name the service enqueues. workers/settings.py must register each of them.
JOB_EXPIRE_SUPPRESSIONS = "expire_suppressions"
JOB_DRAIN_EFFECTS = "drain_effects"
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
        JOB_DRAIN_EFFECTS,
        JOB_SEND_SMS_REPLY,
        JOB_APPLY_UNSUBSCRIBE,
        JOB_SEAL_LEDGERS,
    }
)

Queue = ArqRedis

# What a Redis call raises when Redis is down, unreachable, too slow or still loading its data.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError)
REDIS_DOWN: tuple[type[BaseException], ...] = (*REDIS_ERRORS, OSError, TimeoutError)
# How long `connect` waits for a Redis that is still loading its dump (BusyLoadingError).
LOADING_WAIT_SECONDS = 600.0

# Jobs enqueued at once per round trip by enqueue_many.
ENQUEUE_CHUNK = 1000
# enqueue_many's script: what arq's enqueue_job does for one job (skip an id that is queued, running
# or has a result; else store the job and queue it), for many jobs in one round trip.
# ARGV: job key prefix, result key prefix, queue, then (job id, score ms, expiry ms, job) per job.
_ENQUEUE_MANY = """
local n = 0
for i = 4, #ARGV, 4 do
    local id = ARGV[i]
    if redis.call('EXISTS', ARGV[1] .. id, ARGV[2] .. id) == 0 then
        redis.call('PSETEX', ARGV[1] .. id, ARGV[i + 2], ARGV[i + 3])
        redis.call('ZADD', ARGV[3], ARGV[i + 1], id)
        n = n + 1
    end
end
return n
"""


def redis_settings(url: str) -> RedisSettings:
    """arq connection settings from a redis:// URL, failing fast instead of retrying for long."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 2
    settings.conn_retry_delay = 0
    return settings


async def connect(
    url: str, *, command_timeout: float | None = None, loading_wait: float = LOADING_WAIT_SECONDS
) -> Queue:
    """A pool to enqueue jobs with; Unavailable when Redis cannot be reached.

    `command_timeout` bounds every command (and each connect): a frozen Redis then raises
    redis' TimeoutError instead of holding the caller. A Redis still loading its dump
    (BusyLoadingError) is waited for, up to `loading_wait` seconds.
    """
    settings = redis_settings(url)
    if command_timeout is not None:
        settings.conn_timeout = command_timeout  # type: ignore[assignment]  # seconds, a float is fine
    deadline = time.monotonic() + loading_wait
    while True:
        try:
            pool = await create_pool(settings)
            break
        except BusyLoadingError:
            if time.monotonic() >= deadline:
                raise Unavailable("Redis is still loading its data") from None
            log.warning("Redis is loading its data set; waiting")
            await asyncio.sleep(1.0)
        except (OSError, ConnectionError, RedisConnectionError, RedisTimeoutError) as exc:
            raise Unavailable(f"cannot connect to Redis: {type(exc).__name__}") from None
    if command_timeout is not None:
        # arq names no read timeout; set it for every connection the pool makes from now on,
        # and drop the one its ping made without it
        pool.connection_pool.connection_kwargs["socket_timeout"] = command_timeout
        pool.connection_pool.connection_kwargs["socket_connect_timeout"] = command_timeout
        await pool.connection_pool.disconnect()
        # forget the old connection objects: they would reconnect with their old settings
        pool.connection_pool.reset()  # type: ignore[no-untyped-call]
    return pool


async def wait_until_loaded(url: str, *, loading_wait: float = LOADING_WAIT_SECONDS) -> None:
    """Return once Redis answers commands (it may still be loading its dump after a restart)."""
    await (await connect(url, command_timeout=5.0, loading_wait=loading_wait)).aclose()


async def enqueue(
    queue: Queue,
    name: str,
    *args: Any,
    job_id: str | None = None,
    expires: timedelta | None = None,
    defer: timedelta | None = None,
) -> bool:
    """Enqueue a registered job by name; a deterministic `job_id` makes repeats no-ops.

    Returns False when a job with that id is already queued, running or done.
    """
    _check_name(name)
    job = await queue.enqueue_job(name, *args, _job_id=job_id, _expires=expires, _defer_by=defer)
    return job is not None


async def enqueue_many(queue: Queue, name: str, jobs: Sequence[tuple[str, tuple[Any, ...]]]) -> int:
    """Enqueue many runs of one registered job, given as (job id, args), in a round trip per
    ENQUEUE_CHUNK jobs; ids already queued, running or done are skipped as by `enqueue`.
    Returns how many were enqueued."""
    _check_name(name)
    enqueued = 0
    for start in range(0, len(jobs), ENQUEUE_CHUNK):
        now = timestamp_ms()
        argv: list[Any] = [job_key_prefix, result_key_prefix, queue.default_queue_name]
        for job_id, args in jobs[start : start + ENQUEUE_CHUNK]:
            data = serialize_job(name, args, {}, None, now, serializer=queue.job_serializer)
            argv += [job_id, now, queue.expires_extra_ms, data]
        enqueued += int(await queue.eval(_ENQUEUE_MANY, 0, *argv))  # type: ignore[misc]
    return enqueued


async def is_running(queue: Queue, job_id: str) -> bool:
    """True while a worker runs the job with this id (or a killed worker's mark has not expired)."""
    return bool(await queue.exists(in_progress_key_prefix + job_id))


def _check_name(name: str) -> None:
    if name not in ENQUEUED_JOBS:
        raise ValueError(f"job {name!r} is not in queue.ENQUEUED_JOBS")


async def ping(queue: Queue) -> bool:
    """Readiness: Redis answers."""
    try:
        return bool(await queue.ping())
    except REDIS_DOWN:
        return False


# arq's worker sets this key (TTL WORKER_HEARTBEAT_SECONDS + 1 s) from its polling loop, so the key
# lives exactly while some worker is polling the queue: /readyz looks at it.
WORKER_HEARTBEAT_SECONDS = 5
WORKER_HEARTBEAT_KEY = default_queue_name + health_check_key_suffix


async def worker_alive(queue: Queue) -> bool:
    """A worker polled the queue within the last few seconds."""
    return bool(await queue.exists(WORKER_HEARTBEAT_KEY))


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
