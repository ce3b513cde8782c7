"""Logging without secrets or personal data (docs/operations.md, "Logging").

Two layers:

- The access log (`api.access.AccessLog`, logger ``suppress.access``) names each request by its route
  template (``POST /u/{token}``, ``GET /v1/recipients/{channel}/{address}``), never by its path,
  and leaves out the query string and the client's address. uvicorn's own access log is off.
- Every line any logger writes goes through `RedactingFormatter`, which scrubs what still slips
  into a message or a traceback: unsubscribe links, API keys, email addresses, phone numbers and
  the path segments that carry an address or a customer reference.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("suppress.access")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Order matters: whole path segments first, then what may stand anywhere in a line.
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"/u/[^\s\"'?#<>]+"), "/u/{token}"),
    (re.compile(r"(/(?:v1/)?(?:recipients|suppressions)/(?:email|sms))/[^\s\"'?#<>/]+"), r"\1/{address}"),
    (re.compile(r"(/(?:v1/)?customers)/(?!export\b)[^\s\"'?#<>/]+"), r"\1/{ref}"),
    (re.compile(r"\bsk_[A-Za-z0-9_-]+"), "sk_{redacted}"),
    (re.compile(r"[A-Za-z0-9.!#$&'*+=?^_`{|}~%-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"), "{address}"),
    (re.compile(r"(?:\+|%2B|\b00)\d[\d ]{5,16}\d\b"), "{number}"),
)


def redact(text: str) -> str:
    """`text` with unsubscribe tokens, API keys, addresses and phone numbers replaced."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """A formatter whose every line (message, arguments, traceback) is passed through `redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: str | int = "INFO") -> None:
    """Log to stderr through the redacting formatter (the `suppress` command calls this once)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    formatter = RedactingFormatter(LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def access_logging(*, enabled: bool) -> None:
    """Turn the access log on or off (`suppress serve --no-access-log`)."""
    log.setLevel(logging.INFO if enabled else logging.WARNING)


def redacted_path(scope: Mapping[str, Any]) -> str:
    """The route template of a request (set by the router); never the raw path."""
    template = scope.get("path_template")
    return template if isinstance(template, str) and template else "(no route)"
