"""The OpenAPI document as a contract: every operation lists every problem status it can answer.

Handlers do not list their error responses one by one. `document_problems(app)` runs once, at the
application's start-up, over every operation in the document and adds the RFC 9457 problem responses
(`application/problem+json`, schema `Problem`) that follow from the operation's shape:

- every operation: 503 (PostgreSQL or Redis unavailable, nothing changed);
- a bearer key is required (the document's security applies): 401 and 403;
- any path or query parameter or a body: 400 and 422;
- a path parameter: 404;
- a body: 413;
- POST, PUT, PATCH, DELETE: 409.

What the shape cannot tell — a body the handler reads itself, a 429, a signature check on a route
without a bearer key, a success or error answered in another media type — the handler declares in
its `opt` with `documented(...)`. A new endpoint is covered without doing anything;
tests/integration/test_contract.py fails when an operation lacks a status its shape implies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from litestar import Litestar
from litestar.openapi.spec import (
    Link,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
)
from litestar.routes import HTTPRoute

from suppress.api.problems import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA: Final = "Problem"
CONTRACT_OPT: Final = "contract"
WRITE_METHODS: Final = frozenset({"post", "put", "patch", "delete"})
METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

DESCRIPTIONS: Final[Mapping[int, str]] = {
    400: "Bad request: the body is not readable JSON (or form), or a path or query parameter is invalid "
    "(`errors` names each).",
    401: "No valid API key: send it as `Authorization: Bearer sk_...`.",
    403: "The API key lacks the scope this operation needs.",
    404: "Nothing matches the path.",
    409: "The request conflicts with the current state.",
    413: "The body is too large.",
    415: "The body's media type is not accepted.",
    422: "The request is well-formed but its content is not acceptable (`errors` names each field and rule).",
    429: "Too many requests: wait as long as `Retry-After` says.",
    503: "PostgreSQL or Redis is unavailable and nothing was changed: retry after `Retry-After` seconds "
    "when given.",
}


@dataclass(frozen=True)
class Documented:
    """What a handler adds to the rules: problem statuses, other media types per status, and the
    body it reads itself (media type → schema)."""

    problems: frozenset[int] = frozenset()
    media_types: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    body: Mapping[str, Schema] = field(default_factory=dict)
    only: frozenset[int] = frozenset()
    # status → [(method, path, {parameter: runtime expression})]: what the answer leads to.
    links: Mapping[int, tuple[tuple[str, str, Mapping[str, str]], ...]] = field(default_factory=dict)


def documented(
    *,
    problems: Iterable[int] = (),
    media_types: Mapping[int, Iterable[str]] | None = None,
    only_media_types: Mapping[int, Iterable[str]] | None = None,
    body: Mapping[str, Schema] | None = None,
    links: Mapping[int, Iterable[tuple[str, str, Mapping[str, str]]]] | None = None,
) -> dict[str, Any]:
    """A handler's `opt` for what the rules cannot see: e.g. `problems=[429]`; `media_types={200:
    ["text/xml"]}` for a type answered besides the documented one, `only_media_types` for types
    answered instead of it (a Stream whose type depends on the request: the handler's own
    `media_type` would override the Stream's); `body={"text/csv": Schema(...)}` for a body the
    handler reads from the request itself (the body rules then apply); `links={201: [("DELETE",
    "/v1/things/{thing_id}", {"thing_id": "$response.body#/id"})]}` for the operations an answer's
    values lead to (OpenAPI links: clients and Schemathesis's stateful phase follow them)."""
    types = {status: tuple(names) for status, names in (media_types or {}).items()}
    only = {status: tuple(names) for status, names in (only_media_types or {}).items()}
    leads = {status: tuple(targets) for status, targets in (links or {}).items()}
    declared = Documented(frozenset(problems), {**types, **only}, dict(body or {}), frozenset(only), leads)
    return {CONTRACT_OPT: declared}


def problem_schema() -> Schema:
    """The RFC 9457 problem document every error takes (`api/problems.py`)."""
    text = Schema(type=OpenAPIType.STRING)
    nullable_text = Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)])
    return Schema(
        type=OpenAPIType.OBJECT,
        title=PROBLEM_SCHEMA,
        description="RFC 9457 problem details. `code` is stable and machine-readable; `type` is "
        "`urn:suppress:problem:{code}`. Some problems carry more members, e.g. `errors`.",
        required=["type", "title", "status", "code", "detail", "instance"],
        properties={
            "type": text,
            "title": text,
            "status": Schema(type=OpenAPIType.INTEGER, minimum=400, maximum=599),
            "code": text,
            "detail": text,
            "instance": text,
            "errors": Schema(
                type=OpenAPIType.ARRAY,
                description="One entry per invalid field: its name as in the API, where it was "
                "(`body`, `query`, `path`, `header`), and what is wrong, in words.",
                items=Schema(
                    type=OpenAPIType.OBJECT,
                    properties={"message": text, "field": nullable_text, "source": nullable_text},
                ),
            ),
        },
    )


def problem_statuses(method: str, operation: Operation, secured_by_default: bool) -> set[int]:
    """The problem statuses an operation's shape implies (module docstring)."""
    statuses = {503}
    parameters = [p for p in operation.parameters or () if isinstance(p, Parameter)]
    has_body = operation.request_body is not None
    if parameters or has_body:
        statuses |= {400, 422}
    if any(p.param_in == "path" for p in parameters):
        statuses.add(404)
    if has_body:
        statuses.add(413)
    if _secured(operation, secured_by_default):
        statuses |= {401, 403}
    if method in WRITE_METHODS:
        statuses.add(409)
    return statuses


def _secured(operation: Operation, secured_by_default: bool) -> bool:
    if operation.security is None:
        return secured_by_default
    return any(requirement for requirement in operation.security)


def _is_litestar_default_error(response: OpenAPIResponse | Reference) -> bool:
    """Litestar documents its own validation error shape (`status_code`, `detail`, `extra`) as
    application/json; this service never answers that shape."""
    if not isinstance(response, OpenAPIResponse) or not response.content:
        return False
    media = response.content.get("application/json")
    schema = media.schema if media else None
    return isinstance(schema, Schema) and set(schema.properties or {}) == {"status_code", "detail", "extra"}


def _headers(status: int) -> dict[str, OpenAPIHeader | Reference] | None:
    if status == 401:
        return {
            "WWW-Authenticate": OpenAPIHeader(
                schema=Schema(type=OpenAPIType.STRING), description='`Bearer realm="suppress"`'
            )
        }
    if status in (429, 503):
        return {
            "Retry-After": OpenAPIHeader(
                schema=Schema(type=OpenAPIType.STRING), description="Seconds to wait before retrying."
            )
        }
    return None


def _operation_ref(method: str, path: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method.lower()


def _link_name(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.split("/") if w and w != "v1"]
    return method.capitalize() + "".join(w.replace("_", " ").title().replace(" ", "") for w in words)


def _handlers_by_operation(app: Litestar) -> dict[tuple[str, str], Documented]:
    found: dict[tuple[str, str], Documented] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            extra = handler.opt.get(CONTRACT_OPT)
            if isinstance(extra, Documented):
                for method in handler.http_methods:
                    found[(route.path_format or "/", method.lower())] = extra
    return found


def document_problems(app: Litestar) -> OpenAPI:
    """Add the problem responses (and declared media types) to every operation of `app`'s document."""
    openapi = app.openapi_schema
    components = openapi.components
    components.schemas = {**(components.schemas or {}), PROBLEM_SCHEMA: problem_schema()}
    problem = OpenAPIMediaType(schema=Reference(ref=f"#/components/schemas/{PROBLEM_SCHEMA}"))
    secured_by_default = any(requirement for requirement in openapi.security or ())
    declared = _handlers_by_operation(app)
    for path, item in (openapi.paths or {}).items():
        for method in METHODS:
            operation: Operation | None = getattr(item, method)
            if operation is None:
                continue
            extra = declared.get((path, method), Documented())
            if extra.body and operation.request_body is None:
                content = {name: OpenAPIMediaType(schema=schema) for name, schema in extra.body.items()}
                operation.request_body = RequestBody(content=content, required=True)
            responses = operation.responses = dict(operation.responses or {})
            for status in sorted(problem_statuses(method, operation, secured_by_default) | extra.problems):
                key = str(status)
                existing = responses.get(key)
                if existing is None or _is_litestar_default_error(existing):
                    existing = responses[key] = OpenAPIResponse(
                        description=DESCRIPTIONS.get(status, "Problem details."), headers=_headers(status)
                    )
                if isinstance(existing, OpenAPIResponse):
                    existing.content = {**(existing.content or {}), PROBLEM_MEDIA_TYPE: problem}
            for status, media_types in extra.media_types.items():
                response = responses.get(str(status))
                if response is None:
                    response = responses[str(status)] = OpenAPIResponse(
                        description=DESCRIPTIONS.get(status, "See the operation's description.")
                    )
                if isinstance(response, OpenAPIResponse):
                    content = {} if status in extra.only else dict(response.content or {})
                    for media_type in media_types:
                        content.setdefault(
                            media_type, OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
                        )
                    response.content = content
            for status, targets in extra.links.items():
                response = responses.get(str(status))
                if isinstance(response, OpenAPIResponse):
                    response.links = {
                        _link_name(target_method, target_path): Link(
                            operation_ref=_operation_ref(target_method, target_path),
                            parameters=dict(parameters),
                        )
                        for target_method, target_path, parameters in targets
                    }
            operation.responses = dict(sorted(responses.items()))
    return openapi
