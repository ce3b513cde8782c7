"""Read-your-writes across API processes: after an API key's write is acknowledged, its later reads
must not come from a replica that has not replayed it (suppress.replicas)."""

from __future__ import annotations

import logging
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from suppress.replicas import Reads

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A check writes only its outcome counters: nothing a later read must see at once.
NOT_WRITES = frozenset({"/v1/checks"})


def read_your_writes(app: ASGIApp) -> ASGIApp:
    """Middleware: before a successful write's response starts, record the key's write fence."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") not in WRITE_METHODS or scope["path"] in NOT_WRITES:
            await app(scope, receive, send)
            return
        reads: Reads = scope["litestar_app"].state.reads
        if reads.replicas is None:  # every read is on the primary: nothing to fence
            await app(scope, receive, send)
            return

        async def fenced(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                principal: Any = scope.get("state", {}).get("principal")
                if principal is not None:
                    try:
                        await reads.note_write(principal)
                    except Exception:  # the write is done and durable: answer it all the same
                        log.warning("could not record the write fence; reads may lag until the bound")
            await send(message)

        await app(scope, receive, fenced)

    return middleware
