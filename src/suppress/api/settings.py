"""GET/PATCH /v1/settings: the calling tenant's policy settings."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, patch
from litestar.params import JSONBody

from suppress.api.auth import caller
from suppress.tenants import (
    Authenticator,
    TenantSettings,
    TenantSettingsPatch,
    tenant_settings,
    update_tenant_settings,
)


@get("/v1/settings", summary="The tenant's policy settings", tags=["settings"], description="Needs `read`.")
async def get_settings(request: Request[Any, Any, Any]) -> TenantSettings:
    principal = await caller(request, "read")
    return await tenant_settings(request.app.state.pool, request.app.state.queries, principal.tenant_id)


@patch(
    "/v1/settings",
    summary="Change the tenant's policy settings",
    tags=["settings"],
    description="Send only the fields to change. Takes effect for the next request. Needs `admin`.",
)
async def patch_settings(
    request: Request[Any, Any, Any], data: JSONBody[TenantSettingsPatch]
) -> TenantSettings:
    principal = await caller(request, "admin")
    updated = await update_tenant_settings(
        request.app.state.pool, request.app.state.queries, principal.tenant_id, data
    )
    authenticator: Authenticator = request.app.state.authenticator
    authenticator.forget_tenant(principal.tenant_id)
    return updated


routes = [get_settings, patch_settings]
