"""POST /v1/checks: decode, authenticate, call the core, encode."""

from __future__ import annotations

from datetime import UTC, datetime

from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from suppress.api.auth import requires
from suppress.checks import CheckRequest, CheckResponse, CheckService
from suppress.tenants import Principal


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
    guards=[requires("check")],
)
async def create_check(
    principal: NamedDependency[Principal], checks: NamedDependency[CheckService], data: JSONBody[CheckRequest]
) -> CheckResponse:
    return await checks.check(principal, data, datetime.now(UTC))


routes = [create_check]
