"""RFC 9457 problem details: the one shape every error takes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Response

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_type(code: str) -> str:
    """The stable `type` URI of a problem code."""
    return f"urn:suppress:problem:{code}"


def problem_response(
    status: int,
    code: str,
    detail: str,
    instance: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response[Any]:
    """A problem+json response with a stable `type` and `code`."""
    titles = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        409: "Conflict",
        413: "Content Too Large",
        415: "Unsupported Media Type",
        422: "Unprocessable Content",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }
    body = {
        "type": problem_type(code),
        "title": titles.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    out_headers = dict(headers or {})
    if status == 401:
        out_headers.setdefault("WWW-Authenticate", 'Bearer realm="suppress"')
    return Response(content=body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=out_headers)
