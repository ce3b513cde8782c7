"""create_app(): routes, lifespans (database pool, queue), and the one error-to-HTTP mapping."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, Router
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from suppress import queue
from suppress.addresses import AddressHasher
from suppress.api import checks as checks_api
from suppress.api import dashboard as dashboard_api
from suppress.api import health as health_api
from suppress.api import imports as imports_api
from suppress.api import ledger as ledger_api
from suppress.api import ops as ops_api
from suppress.api import providers as providers_api
from suppress.api import recipients as recipients_api
from suppress.api import rights as rights_api
from suppress.api import settings as settings_api
from suppress.api import sms as sms_api
from suppress.api import unsubscribe as unsubscribe_api
from suppress.api import webhooks as webhooks_api
from suppress.api.dashboard import DashboardSessions
from suppress.api.problems import problem_response
from suppress.api.services import DEPENDENCIES, services
from suppress.check_counts import CheckCounts
from suppress.checks import CheckService
from suppress.config import DerivedKeys, Settings
from suppress.db import create_pool
from suppress.errors import SuppressError
from suppress.health import HealthService
from suppress.imports.uploads import Imports
from suppress.recipients import Recipients
from suppress.rights import Rights
from suppress.sql import load_queries
from suppress.tenants import Authenticator
from suppress.tokens import TokenKeyring
from suppress.unsubscribe import Unsubscriber
from suppress.webhooks import SecretBox, Webhooks

log = logging.getLogger("suppress")

# 100 000 recipients of up to 320 characters fit comfortably; larger bodies get a 413 unread.
MAX_BODY_BYTES = 32 * 1024 * 1024


@asynccontextmanager
async def _services(app: Litestar) -> AsyncIterator[None]:
    """Open the pool and the queue, verify every named query against the schema, and wire services."""
    settings: Settings = app.state.settings
    keys = DerivedKeys.from_settings(settings)
    queries = load_queries()
    pool = await create_pool(settings.require_database_url(), size=settings.db_pool_size)
    try:
        async with pool.acquire() as conn:
            for name in sorted(queries.declared()):
                # Preparing each statement checks it against the live schema: a broken query fails the boot.
                await conn.prepare(getattr(queries, name))
        job_queue = await queue.connect(settings.require_redis_url())
        hasher = AddressHasher(keys.address_hash_key)
        keyring = TokenKeyring(keys.token_keys, keys.current_token_key_id)
        app.state.pool = pool
        app.state.queries = queries
        app.state.queue = job_queue
        app.state.authenticator = Authenticator(pool, queries)
        check_counts = CheckCounts(pool, queries, interval=settings.check_counts_flush_seconds)
        app.state.check_counts = check_counts
        app.state.checks = CheckService(pool, queries, hasher, keyring, settings.public_url, check_counts)
        app.state.recipients = Recipients(pool, queries, hasher, job_queue)
        app.state.keyring = keyring
        app.state.webhooks = Webhooks(
            pool,
            queries,
            SecretBox.from_secret(settings.require_secret()),
            allow_http=settings.allow_http_webhooks,
        )
        app.state.unsubscriber = Unsubscriber(pool, queries, keyring, job_queue)
        app.state.rights = Rights(pool, queries, app.state.recipients, job_queue)
        app.state.health = HealthService(pool, queries)
        app.state.imports = Imports(pool, queries, job_queue, max_bytes=settings.import_max_bytes)
        app.state.dashboard_sessions = DashboardSessions(
            settings.require_secret(), secure=settings.public_url.startswith("https://")
        )
        check_counts.start()
        try:
            yield
        finally:
            await check_counts.stop()  # what the checks counted since the last flush
            await job_queue.aclose()
    finally:
        await pool.close()


def _domain_error(request: Request[Any, Any, Any], exc: SuppressError) -> Response[Any]:
    if exc.status >= 500:
        log.error("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.detail)
    return problem_response(exc.status, exc.code, exc.detail, request.url.path, **exc.extra)


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Schema violations: 422 for a body that is JSON but not the expected document, 400 for
    bad path or query parameters."""
    errors = [e for e in exc.extra if isinstance(e, dict)] if isinstance(exc.extra, list) else []
    in_body = any(e.get("source") == "body" for e in errors)
    return problem_response(
        422 if in_body else 400,
        "invalid_request" if in_body else "invalid_parameter",
        "the body does not match the expected schema" if in_body else "a path or query parameter is invalid",
        request.url.path,
        errors=[
            {"message": str(e.get("message")), "field": e.get("key"), "source": e.get("source")}
            for e in errors
        ],
    )


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    codes = {
        401: "not_authenticated",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
        415: "unsupported_media_type",
        429: "too_many_requests",
    }
    status = exc.status_code
    detail = str(exc.detail) if status < 500 else "internal error"
    if status == 400 and detail.startswith("JSON is malformed"):
        code = "malformed_request"
    else:
        code = codes.get(status, "bad_request" if status < 500 else "internal_error")
    return problem_response(status, code, detail, request.url.path, headers=exc.headers)


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "internal_error", "internal error", request.url.path)


def create_app(settings: Settings | None = None) -> Litestar:
    """The HTTP application; `settings` default to the environment."""
    settings = settings or Settings.from_env()
    settings.require_secret()
    app = Litestar(
        route_handlers=[
            Router("/", route_handlers=checks_api.routes, dependencies=services("checks")),
            Router("/", route_handlers=recipients_api.routes, dependencies=services("recipients")),
            Router("/", route_handlers=imports_api.routes, dependencies=services("imports")),
            Router("/", route_handlers=rights_api.routes, dependencies=services("rights")),
            *ledger_api.routes,
            *settings_api.routes,
            *sms_api.routes,
            Router("/", route_handlers=unsubscribe_api.routes, dependencies=services("unsubscriber")),
            Router("/", route_handlers=webhooks_api.routes, dependencies=services("webhooks")),
            Router("/", route_handlers=providers_api.routes, dependencies=services("provider_configs")),
            *ops_api.routes,
            *health_api.routes,
            *dashboard_api.routes,
        ],
        lifespan=[_services, providers_api.provider_services],
        dependencies=DEPENDENCIES,
        exception_handlers={
            SuppressError: _domain_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(
            title="suppress",
            version="1.0.0",
            description=(
                "Marketing suppression and unsubscribe service: pre-send checks with the legal "
                "basis, one-click unsubscribe, consents, customer relationships and list health."
            ),
            path="/schema",
            components=Components(
                security_schemes={
                    "BearerAuth": SecurityScheme(
                        type="http", scheme="bearer", description="API key, `sk_...`"
                    )
                }
            ),
            security=[{"BearerAuth": []}],
        ),
        debug=False,
    )
    app.state.settings = settings
    return app
