"""create_app(): routes, lifespans (database pool, queue), and the one error-to-HTTP mapping."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from litestar import Litestar, Request, Response, Router
from litestar.exceptions import HTTPException, ValidationException

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
from suppress.api.contract import document_problems
from suppress.api.dashboard import DashboardSessions
from suppress.api.problems import problem_response
from suppress.api.reads import read_your_writes
from suppress.api.schema_site import openapi_config
from suppress.api.services import DEPENDENCIES, services
from suppress.api.validation import field_errors
from suppress.check_counts import CheckCounts
from suppress.checks import CheckService
from suppress.config import DerivedKeys, Settings
from suppress.db import DATABASE_DOWN, create_pool
from suppress.errors import InvalidInput, SuppressError, Unavailable
from suppress.health import HealthService
from suppress.imports.uploads import Imports
from suppress.logs import redacted_path
from suppress.outbound import Resolver
from suppress.ratelimit import LoginLimiter
from suppress.recipients import Recipients
from suppress.replicas import open_reads
from suppress.rights import Rights
from suppress.sessions import DashboardSessionStore
from suppress.sql import load_queries
from suppress.tenants import Authenticator
from suppress.tokens import TokenKeyring
from suppress.unsubscribe import DATABASE_WAIT, Unsubscriber
from suppress.webhooks import SecretBox, Webhooks

log = logging.getLogger("suppress")

# 100 000 recipients of up to 320 characters fit comfortably; larger bodies get a 413 unread.
MAX_BODY_BYTES = 32 * 1024 * 1024
# What a 503 asks the caller to wait before trying again, in seconds.
RETRY_AFTER_SECONDS = 5
UNAVAILABLE_HEADERS = {"Retry-After": str(RETRY_AFTER_SECONDS)}


@asynccontextmanager
async def _services(app: Litestar) -> AsyncIterator[None]:
    """Open the pool and the queue, verify every named query against the schema, and wire services."""
    settings: Settings = app.state.settings
    keys = DerivedKeys.from_settings(settings)
    queries = load_queries()
    pool = await create_pool(
        settings.require_database_url(),
        size=settings.db_pool_size,
        acquire_timeout=settings.db_acquire_timeout,
        command_timeout=settings.db_statement_timeout,
        connect_timeout=settings.db_acquire_timeout,
    )
    try:
        async with pool.acquire() as conn:
            for name in sorted(queries.declared()):
                # Preparing each statement checks it against the live schema: a broken query fails the boot.
                await conn.prepare(getattr(queries, name))
        job_queue = await queue.connect(settings.require_redis_url(), command_timeout=settings.redis_timeout)
        reads = await open_reads(
            pool,
            settings.replica_urls,
            max_lag_ms=settings.replica_max_lag_ms,
            pool_size=settings.db_pool_size,
            fences=job_queue,
        )
        hasher = AddressHasher(keys.address_hash_key)
        keyring = TokenKeyring(keys.token_keys, keys.current_token_key_id)
        app.state.pool = pool
        app.state.reads = reads
        app.state.queries = queries
        app.state.queue = job_queue
        app.state.authenticator = Authenticator(pool, queries)
        check_counts = CheckCounts(pool, queries, interval=settings.check_counts_flush_seconds)
        app.state.check_counts = check_counts
        app.state.checks = CheckService(
            pool, queries, hasher, keyring, settings.public_url, check_counts, reads
        )
        app.state.recipients = Recipients(pool, queries, hasher, job_queue, reads)
        app.state.keyring = keyring
        app.state.webhooks = Webhooks(
            pool,
            queries,
            SecretBox.from_secret(settings.require_secret()),
            allow_http=settings.allow_http_webhooks,
            allow_private=settings.webhook_allow_private_targets,
            resolve=app.state.resolver,
        )
        app.state.unsubscriber = Unsubscriber(
            pool,
            queries,
            keyring,
            job_queue,
            reads,
            database_wait=min(DATABASE_WAIT, settings.db_statement_timeout),
        )
        app.state.rights = Rights(pool, queries, app.state.recipients, job_queue, reads)
        app.state.health = HealthService(pool, queries, reads)
        app.state.imports = Imports(pool, queries, job_queue, max_bytes=settings.import_max_bytes)
        app.state.dashboard_sessions = DashboardSessions(
            DashboardSessionStore(pool, queries),
            LoginLimiter(job_queue),
            secure=settings.public_url.startswith("https://"),
        )
        check_counts.start()
        try:
            yield
        finally:
            await check_counts.stop()  # what the checks counted since the last flush
            await reads.close()
            await job_queue.aclose()
    finally:
        await pool.close()


def _route(request: Request[Any, Any, Any]) -> str:
    """The request's route for a log line: its template, never the path (tokens, addresses)."""
    return redacted_path(request.scope)


def _domain_error(request: Request[Any, Any, Any], exc: SuppressError) -> Response[Any]:
    if exc.status >= 500:
        log.error("%s on %s %s: %s", exc.code, request.method, _route(request), exc.detail)
    headers = UNAVAILABLE_HEADERS if exc.status == 503 else None
    return problem_response(exc.status, exc.code, exc.detail, request.url.path, headers=headers, **exc.extra)


def _unavailable(request: Request[Any, Any, Any], exc: BaseException) -> Response[Any]:
    """PostgreSQL or Redis down, unreachable or past its deadline: 503, try again shortly."""
    store = "Redis" if isinstance(exc, queue.REDIS_ERRORS) else "the database"
    log.warning("%s unavailable on %s %s (%s)", store, request.method, _route(request), type(exc).__name__)
    return problem_response(
        503,
        Unavailable.code,
        f"{store} is unavailable or did not answer in time; nothing was changed, try again shortly",
        request.url.path,
        headers=UNAVAILABLE_HEADERS,
    )


def _too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    """A body nested deeper than the decoder goes (msgspec stops at Python's recursion limit)."""
    return problem_response(
        400, "malformed_request", "the JSON document is nested too deeply", request.url.path
    )


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Schema violations: 422 for a body that is JSON but not the expected document, 400 for
    bad path or query parameters; `errors` says for each field, named as in the API, what is wrong."""
    raw = [e for e in exc.extra if isinstance(e, dict)] if isinstance(exc.extra, list) else []
    in_body = any(e.get("source") == "body" for e in raw)
    errors = field_errors(request, exc)
    said = "; ".join(f"{e['field']} {e['message']}" if e["field"] else str(e["message"]) for e in errors[:3])
    fallback = (
        "the body does not match the expected schema" if in_body else "a path or query parameter is invalid"
    )
    return problem_response(
        422 if in_body else 400,
        "invalid_request" if in_body else "invalid_parameter",
        said or fallback,
        request.url.path,
        errors=errors,
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


# PostgreSQL stores no NUL character (U+0000) in text or jsonb; the statement fails and its
# transaction is rolled back, so nothing was written: the request's content is at fault.
UNSTORABLE_TEXT = (
    asyncpg.exceptions.UntranslatableCharacterError,
    asyncpg.exceptions.CharacterNotInRepertoireError,
)


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, DATABASE_DOWN + queue.REDIS_DOWN):
        return _unavailable(request, exc)
    if isinstance(exc, UNSTORABLE_TEXT):
        return _domain_error(
            request,
            InvalidInput("a text in the request holds a NUL character (\\u0000), which cannot be stored"),
        )
    log.exception("unhandled error on %s %s", request.method, _route(request))
    return problem_response(500, "internal_error", "internal error", request.url.path)


def create_app(
    settings: Settings | None = None, *, resolver: Resolver | None = None, require_worker: bool = False
) -> Litestar:
    """The HTTP application; `settings` default to the environment, `resolver` (what outbound
    URLs are checked with) to the system's. `require_worker`: /readyz is not ready while no
    worker's heartbeat is in Redis (`suppress dev`, which runs its own)."""
    settings = settings or Settings.from_env()
    settings.require_secret()
    app = Litestar(
        route_handlers=[
            *checks_api.routes,  # the hot path: no injected dependency (api/checks.py)
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
        # Built once at start-up (half a second), not on every construction of the app.
        on_startup=[document_problems],
        middleware=[read_your_writes],
        dependencies=DEPENDENCIES,
        exception_handlers={
            SuppressError: _domain_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
            RecursionError: _too_deep,
            Exception: _unexpected_error,
        },
        request_max_body_size=MAX_BODY_BYTES,
        # the `suppress` command configures logging (suppress.logs: redacted); Litestar's default
        # config would replace that handler on the root logger
        logging_config=None,
        openapi_config=openapi_config(),
        debug=False,
    )
    app.state.settings = settings
    app.state.resolver = resolver
    app.state.require_worker = require_worker
    return app
