"""Probes and metrics: /healthz (alive), /readyz (database and Redis answer), /metrics."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from suppress import queue
from suppress.metrics import exposition


@get(
    "/healthz",
    summary="The process is alive",
    tags=["operations"],
    security=[],
    include_in_schema=True,
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="PostgreSQL and Redis answer", tags=["operations"], security=[])
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    checks: dict[str, str] = {}
    try:
        await request.app.state.pool.fetchval(request.app.state.queries.ping, timeout=2)
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the type is enough to diagnose
        checks["database"] = f"unavailable ({type(exc).__name__})"
    checks["redis"] = "ok" if await queue.ping(request.app.state.queue) else "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return Response(
        {"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503
    )


@get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["operations"],
    security=[],
    media_type=CONTENT_TYPE_LATEST,
)
async def metrics_endpoint() -> Response[bytes]:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


routes = [healthz, readyz, metrics_endpoint]
