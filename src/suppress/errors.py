"""Domain errors. Core code raises these; the HTTP layer maps them to RFC 9457 problem details.

Each error carries a stable machine-readable ``code`` and an HTTP-ish ``status`` (the mapping lives
here so every layer agrees on it); the class docstring is the default message.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SuppressError(Exception):
    """Something went wrong."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or (self.__doc__ or self.code).strip()
        self.extra = extra
        super().__init__(self.detail)


class InvalidInput(SuppressError):
    """The request is well-formed but its content is not acceptable."""

    code = "invalid_input"
    status = 422


class MalformedRequest(SuppressError):
    """The request body could not be read as the expected JSON document."""

    code = "malformed_request"
    status = 400


class BatchTooLarge(SuppressError):
    """Too many recipients in one request."""

    code = "batch_too_large"
    status = 413


class InvalidAddress(InvalidInput):
    """The address is not a valid email address or phone number."""

    code = "invalid_address"


class UnknownTopic(InvalidInput):
    """No topic of that name exists for this tenant."""

    code = "unknown_topic"


class NotAuthenticated(SuppressError):
    """A valid API key is required: send it as `Authorization: Bearer <key>`."""

    code = "not_authenticated"
    status = 401


class Forbidden(SuppressError):
    """The API key lacks the scope this operation needs."""

    code = "forbidden"
    status = 403


class NotFound(SuppressError):
    """Nothing matches."""

    code = "not_found"
    status = 404


class Conflict(SuppressError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409


class Unavailable(SuppressError):
    """A backing service is unavailable; nothing was changed. Retry later."""

    code = "unavailable"
    status = 503


class QueryRegistryError(SuppressError):
    """The SQL files and the query registry in code disagree."""

    code = "query_registry"
