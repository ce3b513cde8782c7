"""Provider integrations over HTTP: configure providers (admin), and the inbound endpoints the
providers call, authenticated by the provider's own signature or credentials, never a bearer key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from litestar import Litestar, Request, Response, delete, get, post, route
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from suppress.api.auth import requires
from suppress.api.contract import documented
from suppress.api.problems import problem_response
from suppress.errors import NotFound
from suppress.providers.certificates import HttpsFetcher, SnsCertificates, UrlFetcher
from suppress.providers.configs import (
    EventStatus,
    Provider,
    ProviderConfigIn,
    ProviderConfigs,
    ProviderEventView,
    provider_box,
)
from suppress.providers.inbox import ProviderInbox
from suppress.providers.model import KINDS, InboundRequest, ProviderRejected
from suppress.tenants import Principal

# SendGrid batches reach 768 KB; nothing a provider sends is larger than this.
MAX_INBOUND_BYTES: Final = 2 * 1024 * 1024
# What Twilio expects back from a messaging webhook: TwiML that sends nothing.
EMPTY_TWIML: Final = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@asynccontextmanager
async def provider_services(app: Litestar) -> AsyncIterator[None]:
    """Wire the provider services onto the pool, queries and queue the core lifespan opened.
    Tests may set `app.state.sns_fetcher` (serve certificates without network) and
    `app.state.provider_clock` (verify old fixtures) before the app starts."""
    settings = app.state.settings
    fetcher: UrlFetcher | None = app.state.get("sns_fetcher")
    owned = fetcher is None
    if fetcher is None:
        fetcher = HttpsFetcher()
    configs = ProviderConfigs(
        app.state.pool,
        app.state.queries,
        provider_box(settings.require_secret()),
        public_url=settings.public_url,
    )
    clock: Callable[[], datetime] | None = app.state.get("provider_clock")
    app.state.provider_configs = configs
    app.state.provider_inbox = ProviderInbox(
        configs,
        app.state.pool,
        app.state.queries,
        app.state.queue,
        SnsCertificates(fetcher),
        **({"clock": clock} if clock is not None else {}),
    )
    try:
        yield
    finally:
        if owned:
            await fetcher.aclose()


@post(
    "/v1/providers",
    summary="Configure an email or SMS provider",
    tags=["providers"],
    description="`kind` is ses, sendgrid, mailgun, postmark, twilio or vonage; credentials are stored "
    "encrypted and never returned. The response's `inbound_url` is the URL to give the provider. "
    "`topics` maps the provider's unsubscribe scope (SendGrid ASM group id, Mailgun tag, Postmark "
    "message stream, SES topic) to a topic; `campaign_key` names the tag / custom arg / metadata key "
    "that carries the campaign. Needs `admin`. docs/providers.md has every field.",
    guards=[requires("admin")],
    opt=documented(
        links={
            201: [
                ("GET", "/v1/providers/{provider_id}/events", {"provider_id": "$response.body#/id"}),
                ("DELETE", "/v1/providers/{provider_id}", {"provider_id": "$response.body#/id"}),
            ]
        }
    ),
)
async def create_provider(
    principal: NamedDependency[Principal],
    provider_configs: NamedDependency[ProviderConfigs],
    data: JSONBody[ProviderConfigIn],
) -> Response[Provider]:
    return Response(await provider_configs.create(principal, data), status_code=201)


@get(
    "/v1/providers",
    summary="List provider configurations (without credentials)",
    tags=["providers"],
    guards=[requires("read")],
)
async def list_providers(
    principal: NamedDependency[Principal], provider_configs: NamedDependency[ProviderConfigs]
) -> list[Provider]:
    return await provider_configs.list_providers(principal)


@delete(
    "/v1/providers/{provider_id:int}",
    status_code=200,
    summary="Delete a provider configuration",
    tags=["providers"],
    description="Its credentials are destroyed and its inbound URL answers 404; events already "
    "acknowledged are still applied. Repeating is harmless. Needs `admin`.",
    guards=[requires("admin")],
)
async def delete_provider(
    principal: NamedDependency[Principal],
    provider_configs: NamedDependency[ProviderConfigs],
    provider_id: FromPath[int],
) -> Provider:
    return await provider_configs.delete(principal, provider_id, datetime.now(UTC))


@get(
    "/v1/providers/{provider_id:int}/events",
    summary="A provider configuration's acknowledged events, newest first",
    tags=["providers"],
    description="Each event with the provider's id for it, whether it is pending, processed or "
    "failed (given up after repeated errors), and what applying it did. Needs `read`.",
    guards=[requires("read")],
)
async def list_provider_events(
    principal: NamedDependency[Principal],
    provider_configs: NamedDependency[ProviderConfigs],
    provider_id: FromPath[int],
    status: FromQuery[EventStatus | None] = None,
    before: Annotated[int | None, QueryParameter(ge=1, le=2**62)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> list[ProviderEventView]:
    return await provider_configs.events(principal, provider_id, status=status, before=before, limit=limit)


@route(
    "/v1/providers/{kind:str}/{provider_id:int}",
    http_method=["POST", "GET"],
    status_code=200,
    summary="Inbound webhook of a provider",
    tags=["providers"],
    security=[{}],
    request_max_body_size=MAX_INBOUND_BYTES,
    # No bearer key, but a signature check (401/403) over a raw body; Twilio gets TwiML back.
    opt=documented(problems=[401, 403, 413], media_types={200: ["text/xml"]}),
    description="Called by the provider, not by you: no bearer key; the provider's signature (SNS, "
    "SendGrid, Mailgun, Twilio, Vonage) or credentials (Postmark) authenticate it, checked over the "
    "raw request. A request that does not verify is a 401/403 and changes nothing. A verified one is "
    "stored (a redelivered event is a no-op) and acknowledged at once; a worker applies it. GET is "
    "for SMS providers configured to call with GET (Twilio, Vonage).",
)
async def inbound(
    request: Request[Any, Any, Any], kind: FromPath[str], provider_id: FromPath[int]
) -> Response[Any]:
    if kind not in KINDS or (request.method == "GET" and kind not in ("twilio", "vonage")):
        raise NotFound("no active provider configuration at this URL")
    inbound_request = InboundRequest(
        method=request.method,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=request.scope.get("query_string", b"").decode("latin-1"),
        body=await request.body(),
        content_type=request.headers.get("content-type", ""),
    )
    inbox: ProviderInbox = request.app.state.provider_inbox
    try:
        receipt = await inbox.receive(kind, provider_id, inbound_request)
    except ProviderRejected as exc:
        headers = {"WWW-Authenticate": exc.challenge} if exc.status == 401 else None
        return problem_response(exc.status, exc.code, exc.detail, request.url.path, headers=headers)
    if kind == "twilio":
        return Response(content=EMPTY_TWIML, media_type="text/xml", status_code=200)
    return Response(content=receipt, status_code=200)


routes = [create_provider, list_providers, delete_provider, list_provider_events, inbound]
