"""POST /v1/checks: decode, authenticate, call the core, encode."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request, post
from litestar.params import JSONBody

from suppress.api.auth import caller
from suppress.checks import CheckRequest, CheckResponse, CheckService


@post(
    "/v1/checks",
    status_code=200,
    summary="Decide which recipients may get a message",
    description=(
        "For 1 to 100 000 recipients: allowed or not, the legal basis or the reason, and for every "
        "allowed marketing recipient the unsubscribe URL and List-Unsubscribe headers (RFC 8058). "
        "Results come in input order. Needs the `check` scope."
    ),
    tags=["checks"],
)
async def create_check(request: Request[Any, Any, Any], data: JSONBody[CheckRequest]) -> CheckResponse:
    principal = await caller(request, "check")
    service: CheckService = request.app.state.checks
    return await service.check(principal, data, datetime.now(UTC))


routes = [create_check]
