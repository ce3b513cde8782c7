"""Who is calling: the bearer API key, checked against the scope a route needs."""

from __future__ import annotations

from typing import Any

from litestar import Request

from suppress.models import Scope
from suppress.tenants import Authenticator, Principal


async def caller(request: Request[Any, Any, Any], scope: Scope) -> Principal:
    """The authenticated caller of this request, holding `scope` (or admin)."""
    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.authenticate(request.headers.get("authorization"))
    principal.require(scope)
    return principal
