"""Outbound webhooks: register, list and disable endpoints, and see every delivery attempt."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from suppress.api.auth import caller
from suppress.webhooks import DeliveryPage, DeliveryStatus, NewWebhook, Webhook, WebhookIn, Webhooks


def _webhooks(request: Request[Any, Any, Any]) -> Webhooks:
    service: Webhooks = request.app.state.webhooks
    return service


@post(
    "/v1/webhooks",
    summary="Register a webhook",
    tags=["webhooks"],
    description="Every ledger event of the kinds in `events` (absent = every kind) is POSTed to `url` "
    "as JSON, signed in the `Suppress-Signature` header, and retried with exponential backoff. The "
    "response holds the signing `secret`: it is shown only here. Needs `admin`.",
)
async def register_webhook(
    request: Request[Any, Any, Any], data: JSONBody[WebhookIn]
) -> Response[NewWebhook]:
    principal = await caller(request, "admin")
    return Response(await _webhooks(request).register(principal, data), status_code=201)


@get("/v1/webhooks", summary="List webhooks (without secrets), newest first", tags=["webhooks"])
async def list_webhooks(request: Request[Any, Any, Any]) -> list[Webhook]:
    principal = await caller(request, "read")
    return await _webhooks(request).list_webhooks(principal)


@delete(
    "/v1/webhooks/{webhook_id:int}",
    status_code=200,
    summary="Disable a webhook",
    tags=["webhooks"],
    description="Nothing more is sent to it and its pending deliveries are cancelled; it and its "
    "deliveries stay listed. Repeating is harmless. Needs `admin`.",
)
async def disable_webhook(request: Request[Any, Any, Any], webhook_id: FromPath[int]) -> Webhook:
    principal = await caller(request, "admin")
    return await _webhooks(request).disable(principal, webhook_id, datetime.now(UTC))


@get(
    "/v1/webhooks/{webhook_id:int}/deliveries",
    summary="A webhook's deliveries with their attempts, newest first",
    tags=["webhooks"],
    description="Each delivery is one event for this webhook: `pending` (retrying), `delivered` (a 2xx "
    "answer), `failed` (attempts used up) or `cancelled` (the webhook was disabled). Each attempt "
    "shows its time, HTTP status or error, and duration. Needs `read`.",
)
async def list_deliveries(
    request: Request[Any, Any, Any],
    webhook_id: FromPath[int],
    status: FromQuery[DeliveryStatus | None] = None,
    cursor: Annotated[str | None, QueryParameter(max_length=100)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> DeliveryPage:
    principal = await caller(request, "read")
    return await _webhooks(request).deliveries(
        principal, webhook_id, status=status, cursor=cursor, limit=limit
    )


routes = [register_webhook, list_webhooks, disable_webhook, list_deliveries]
