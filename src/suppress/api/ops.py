"""Probes and metrics: /healthz (alive), /readyz (database, Redis and a worker answer), /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST

from suppress import queue
from suppress.metrics import exposition


@get(
    "/healthz",
    summary="The process is alive",
    tags=["operations"],
    security=[{}],
    include_in_schema=True,
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


# /readyz answers within this many seconds whatever the stores do (a frozen one counts as down).
READY_WAIT = 0.8


async def _probe(what: Awaitable[Any]) -> str:
    try:
        return "ok" if await what else "unavailable"
    except Exception as exc:  # any failure means "not ready"; the type is enough to diagnose
        return f"unavailable ({type(exc).__name__})"


def _forget(task: asyncio.Task[str]) -> None:
    if not task.cancelled():
        task.exception()


async def _probes(**probes: Awaitable[Any]) -> dict[str, str]:
    """Each probe's answer, or "no answer" for those still waiting after READY_WAIT. A late one is
    cancelled but not waited for: the pool's connection reset after a cancelled statement may
    itself wait on a frozen server."""
    tasks = {name: asyncio.ensure_future(_probe(what)) for name, what in probes.items()}
    await asyncio.wait(tasks.values(), timeout=READY_WAIT)
    out: dict[str, str] = {}
    for name, task in tasks.items():
        if task.done():
            out[name] = task.result()
        else:
            task.cancel()
            task.add_done_callback(_forget)
            out[name] = "unavailable (no answer within a second)"
    return out


@get(
    "/readyz",
    summary="PostgreSQL and Redis answer (and, under `suppress dev`, the worker runs)",
    description=(
        "Answers within a second. `worker` tells whether some worker refreshed its heartbeat in "
        "Redis within the last few seconds; it counts towards readiness only when the API runs "
        "its own worker (`suppress dev`). docs/operations.md"
    ),
    tags=["operations"],
    security=[{}],
    responses={
        503: ResponseSpec(
            dict[str, str], description="Not ready: `database`, `redis` or `worker` says what is unavailable."
        )
    },
)
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    state = request.app.state
    answers = await _probes(
        database=state.pool.fetchval(state.queries.ping),
        redis=queue.ping(state.queue),
        worker=queue.worker_alive(state.queue),
    )
    database, redis, worker = answers["database"], answers["redis"], answers["worker"]
    if worker.startswith("unavailable"):
        worker = "not running" if redis == "ok" else "unknown"
    checks = {"database": database, "redis": redis, "worker": worker}
    ready = database == "ok" and redis == "ok" and (worker == "ok" or not state.get("require_worker"))
    return Response(
        {"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503
    )


@get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["operations"],
    security=[{}],
    media_type=CONTENT_TYPE_LATEST,
)
async def metrics_endpoint() -> Response[bytes]:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


routes = [healthz, readyz, metrics_endpoint]
