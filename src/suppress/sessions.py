"""Dashboard sessions, kept server-side.

Signing in with a `read` key opens a session: a random id goes into the cookie and only its
SHA-256 into `dashboard_sessions`, so nothing in the cookie names the key or can be forged. Every
request looks the session up, so signing out (the row is deleted) ends it for every copy of the
cookie, and revoking the key ends every session opened with it (the lookup joins the key).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Final

import asyncpg

from suppress.health import Viewer
from suppress.sql import Queries

SESSION_SECONDS: Final = 8 * 3600
_ID_BYTES: Final = 32
_MAX_ID_LENGTH: Final = 100


def _id_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


class DashboardSessionStore:
    """Opens, looks up and ends dashboard sessions."""

    def __init__(self, pool: asyncpg.Pool, queries: Queries) -> None:
        self._pool = pool
        self._q = queries

    async def open(self, viewer: Viewer, now: datetime) -> str:
        """A new session for the viewer's key, valid for SESSION_SECONDS; returns its id (the cookie)."""
        session_id = secrets.token_urlsafe(_ID_BYTES)
        await self._pool.execute(
            self._q.open_dashboard_session,
            _id_hash(session_id),
            viewer.tenant_id,
            viewer.key_id,
            now,
            now + timedelta(seconds=SESSION_SECONDS),
        )
        return session_id

    async def viewer(self, session_id: str, now: datetime) -> Viewer | None:
        """Who looks through this session; None when it is unknown, ended, expired, or its key was
        revoked or cannot read."""
        if not session_id or len(session_id) > _MAX_ID_LENGTH or not session_id.isascii():
            return None
        row = await self._pool.fetchrow(self._q.dashboard_session_viewer, _id_hash(session_id), now)
        return None if row is None else Viewer(**dict(row.items()))

    async def end(self, session_id: str) -> None:
        """Sign out: the session stops working for every copy of its cookie."""
        if session_id and len(session_id) <= _MAX_ID_LENGTH and session_id.isascii():
            await self._pool.execute(self._q.end_dashboard_session, _id_hash(session_id))
