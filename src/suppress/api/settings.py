"""GET/PATCH /v1/settings: the calling tenant's policy settings."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, patch
from litestar.di import NamedDependency
from litestar.params import JSONBody

from suppress.api.auth import requires
from suppress.tenants import (
    Authenticator,
    Principal,
    TenantSettings,
    TenantSettingsPatch,
    tenant_settings,
    update_tenant_settings,
)


@get(
    "/v1/settings",
    summary="The tenant's policy settings",
    tags=["settings"],
    description="Needs `read`.",
    guards=[requires("read")],
)
async def get_settings(
    request: Request[Any, Any, Any], principal: NamedDependency[Principal]
) -> TenantSettings:
    return await tenant_settings(request.app.state.pool, request.app.state.queries, principal.tenant_id)


@patch(
    "/v1/settings",
    summary="Change the tenant's policy settings",
    tags=["settings"],
    description="Send only the fields to change. Takes effect for the next request. Needs `admin`.",
    guards=[requires("admin")],
)
async def patch_settings(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    data: JSONBody[TenantSettingsPatch],
) -> TenantSettings:
    updated = await update_tenant_settings(
        request.app.state.pool, request.app.state.queries, principal.tenant_id, data
    )
    authenticator: Authenticator = request.app.state.authenticator
    authenticator.forget_tenant(principal.tenant_id)
    return updated


routes = [get_settings, patch_settings]
