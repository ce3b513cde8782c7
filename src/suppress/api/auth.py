"""Who is calling: the bearer API key, checked by a route's guard against the scope it needs.

`guards=[requires("write")]` authenticates the request and checks the scope before the handler
runs; the handler receives the caller as `principal: NamedDependency[Principal]`.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.types import Guard

from suppress.models import Scope
from suppress.tenants import Authenticator, Principal


def requires(scope: Scope) -> Guard:
    """A guard letting through only callers whose API key holds `scope` (or admin)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        connection.state.principal = await caller(connection, scope)

    return guard


async def caller(connection: ASGIConnection[Any, Any, Any, Any], scope: Scope) -> Principal:
    """The authenticated caller of this request, holding `scope` (or admin)."""
    authenticator: Authenticator = connection.app.state.authenticator
    principal = await authenticator.authenticate(connection.headers.get("authorization"))
    principal.require(scope)
    return principal


def principal(request: Request[Any, Any, Any]) -> Principal:
    """The caller the route's `requires` guard let in."""
    found: Principal = request.state.principal
    return found
