"""POST /v1/checks: decode, authenticate, call the core, encode.

The hot path: the caller is authenticated by a `before_request` hook, not a guard, and the handler
takes no injected dependency (Litestar resolves two in a task group of its own per request); the
service comes from the application state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request, post
from litestar.params import JSONBody

from suppress.api import auth
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
    before_request=auth.authenticated("check"),
)
async def create_check(request: Request[Any, Any, Any], data: JSONBody[CheckRequest]) -> CheckResponse:
    checks: CheckService = request.app.state.checks
    return await checks.check(auth.principal(request), data, datetime.now(UTC))


routes = [create_check]
