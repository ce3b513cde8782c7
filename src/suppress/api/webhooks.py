"""Outbound webhooks: register, list and disable endpoints, and see every delivery attempt."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar import Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from suppress.api.auth import requires
from suppress.api.contract import documented
from suppress.tenants import Principal
from suppress.webhooks import DeliveryPage, DeliveryStatus, NewWebhook, Webhook, WebhookIn, Webhooks


@post(
    "/v1/webhooks",
    summary="Register a webhook",
    tags=["webhooks"],
    description="Every ledger event of the kinds in `events` (absent = every kind) is POSTed to `url` "
    "as JSON, signed in the `Suppress-Signature` header, and retried with exponential backoff. The "
    "response holds the signing `secret`: it is shown only here. `url` must point at the public "
    "internet: a host that is, or resolves to, a loopback, private, link-local, CGNAT, multicast, "
    "reserved or unspecified address (in any notation), or a special-use name, is a 422 with code "
    "`non_public_url`; deliveries check the resolved address again. Needs `admin`.",
    guards=[requires("admin")],
    opt=documented(
        links={
            201: [
                ("GET", "/v1/webhooks/{webhook_id}/deliveries", {"webhook_id": "$response.body#/id"}),
                ("DELETE", "/v1/webhooks/{webhook_id}", {"webhook_id": "$response.body#/id"}),
            ]
        }
    ),
)
async def register_webhook(
    principal: NamedDependency[Principal], webhooks: NamedDependency[Webhooks], data: JSONBody[WebhookIn]
) -> Response[NewWebhook]:
    return Response(await webhooks.register(principal, data), status_code=201)


@get(
    "/v1/webhooks",
    summary="List webhooks (without secrets), newest first",
    tags=["webhooks"],
    guards=[requires("read")],
)
async def list_webhooks(
    principal: NamedDependency[Principal], webhooks: NamedDependency[Webhooks]
) -> list[Webhook]:
    return await webhooks.list_webhooks(principal)


@delete(
    "/v1/webhooks/{webhook_id:int}",
    status_code=200,
    summary="Disable a webhook",
    tags=["webhooks"],
    description="Nothing more is sent to it and its pending deliveries are cancelled; it and its "
    "deliveries stay listed. Repeating is harmless. Needs `admin`.",
    guards=[requires("admin")],
)
async def disable_webhook(
    principal: NamedDependency[Principal], webhooks: NamedDependency[Webhooks], webhook_id: FromPath[int]
) -> Webhook:
    return await webhooks.disable(principal, webhook_id, datetime.now(UTC))


@get(
    "/v1/webhooks/{webhook_id:int}/deliveries",
    summary="A webhook's deliveries with their attempts, newest first",
    tags=["webhooks"],
    description="Each delivery is one event for this webhook: `pending` (retrying), `delivered` (a 2xx "
    "answer), `failed` (attempts used up) or `cancelled` (the webhook was disabled). Each attempt "
    "shows its time, HTTP status or error category, and duration. Needs `read`.",
    guards=[requires("read")],
)
async def list_deliveries(
    principal: NamedDependency[Principal],
    webhooks: NamedDependency[Webhooks],
    webhook_id: FromPath[int],
    status: FromQuery[DeliveryStatus | None] = None,
    cursor: Annotated[str | None, QueryParameter(max_length=100)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> DeliveryPage:
    return await webhooks.deliveries(principal, webhook_id, status=status, cursor=cursor, limit=limit)


routes = [register_webhook, list_webhooks, disable_webhook, list_deliveries]
