"""GET /v1/health: list health as JSON, read from the rollups workers keep."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from suppress.api.auth import requires
from suppress.health import (
    DEFAULT_CAMPAIGNS,
    DEFAULT_DAYS,
    MAX_CAMPAIGNS,
    MAX_DAYS,
    HealthReport,
    HealthService,
)
from suppress.tenants import Principal


def health_service(request: Request[Any, Any, Any]) -> HealthService:
    service: HealthService = request.app.state.health
    return service


@get(
    "/v1/health",
    summary="List health: reachable audience, suppressions, daily counts, campaigns, unsubscribe latency",
    description=(
        "Read from rollups the workers keep: the state snapshot is refreshed every minute "
        "(`snapshot_at` says when it was taken), the counters follow events once the worker has "
        "counted them. `freshness` says how current it all is: the snapshot's age, the events still "
        "waiting to be counted (`pending_effects`, the oldest's age) and `behind` when the worker lags "
        "(an event waiting a minute or more, or a snapshot five minutes old). `reachable`: "
        "recipients a marketing message (own offer) may go to now, by basis, per channel, without a "
        "topic and per topic. `suppressed`: known recipients no marketing may reach, by the strongest "
        "reason. `daily`: what happened per UTC day and channel over the last `days` days. "
        "`campaigns`: the campaigns active in that window, most recent first, with unsubscribe and "
        "complaint rates as fractions of the recipients allowed; `alert` = `stop` (complaint rate ≥ "
        "the tenant's stop line, default 0.3 %), `warn` (complaint rate ≥ the alert line, default "
        "0.1 %, or unsubscribe rate ≥ `unsubscribe_alert_rate`, default 0.5 %) or `ok`, and "
        "`alert_reasons` names the rates behind it. "
        "`unsubscribe_latency_seconds`: request to applied, against the 48-hour rule. "
        "`expiring_relationships`: customer relationships lapsing in the next 30 days. Needs `read`."
    ),
    tags=["health"],
    guards=[requires("read")],
)
async def get_health(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    days: Annotated[int, QueryParameter(ge=1, le=MAX_DAYS, description="UTC days back, today included")] = (
        DEFAULT_DAYS
    ),
    campaigns: Annotated[
        int, QueryParameter(ge=1, le=MAX_CAMPAIGNS, description="at most this many campaigns")
    ] = DEFAULT_CAMPAIGNS,
) -> HealthReport:
    return await health_service(request).report(
        principal.tenant_id, datetime.now(UTC), days=days, campaigns=campaigns
    )


routes = [get_health]
