"""The access log: one line per HTTP request, naming its route template, never its path."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from suppress.logs import log, redacted_path


class AccessLog:
    """An ASGI wrapper that logs one line per HTTP request: method, route template, status, time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # `serve --no-access-log`: no wrapped `send`, no clock, nothing per request
        if scope["type"] != ScopeType.HTTP or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        method = str(cast("Mapping[str, Any]", scope).get("method", "-"))
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(cast("Mapping[str, Any]", message)["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info(
                "%s %s %d %.1fms",
                method,
                redacted_path(scope),
                status,
                (time.perf_counter() - started) * 1000,
            )
