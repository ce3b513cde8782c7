"""Who is calling: the bearer API key, checked against the scope a route needs.

`guards=[requires("write")]` authenticates the request and checks the scope before the handler
runs; the handler receives the caller as `principal: NamedDependency[Principal]`.

The check route, the hot path, uses `before_request=authenticated("check")` instead: the same
answers (401, then 403, both before the body is read), without the copy of the route handler
Litestar makes for every guard call; its handler reads the caller with `principal(request)`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


def authenticated(scope: Scope) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """A `before_request` hook letting through only callers whose API key holds `scope` (or admin).

    It runs before the body is read, as a guard does."""

    async def before_request(request: Request[Any, Any, Any]) -> None:
        # The raw header and the scope's state dict: no Headers or State object per request.
        http = request.scope
        authorization = next((v for k, v in http["headers"] if k == b"authorization"), None)
        authenticator: Authenticator = http["litestar_app"].state.authenticator
        principal = await authenticator.authenticate(
            None if authorization is None else authorization.decode("latin-1")
        )
        principal.require(scope)
        http["state"]["principal"] = principal

    return before_request


async def caller(connection: ASGIConnection[Any, Any, Any, Any], scope: Scope) -> Principal:
    """The authenticated caller of this request, holding `scope` (or admin)."""
    authenticator: Authenticator = connection.app.state.authenticator
    principal = await authenticator.authenticate(connection.headers.get("authorization"))
    principal.require(scope)
    return principal


def principal(request: Request[Any, Any, Any]) -> Principal:
    """The caller the route's `requires` guard (or `authenticated` hook) let in."""
    found: Principal = request.scope["state"]["principal"]  # the dict under `request.state`
    return found
