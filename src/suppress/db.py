"""The asyncpg pool: JSON codecs, the plan setting the batch check needs, and error translation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import msgspec

from suppress.errors import Conflict, Unavailable

Pool = asyncpg.Pool
Connection = asyncpg.Connection

# What a call raises when PostgreSQL is down, restarting or unreachable (not a bad statement).
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    # seen while the server shuts down mid-statement ("cannot switch to state ...")
    asyncpg.InternalClientError,
)

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def _encode_json(value: Any) -> str:
    return _json_encode(value).decode()


async def _init_connection(conn: Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=_encode_json,
            decoder=_json_decode,
            schema="pg_catalog",
            format="text",
        )


async def _keep_session(conn: Connection) -> None:
    """What a connection goes through on its way back to the pool, beyond asyncpg's own rollback of
    a transaction left open: nothing. asyncpg's default sends RESET ALL, CLOSE ALL, UNLISTEN and
    an advisory-unlock-all after every use, one more round trip per query (a quarter of a
    one-recipient check's server time). Pool connections never carry session state here: settings
    are SET LOCAL inside a transaction, locks are transaction-scoped, cursors live in a
    transaction, and nothing LISTENs (migrations use a connection of their own)."""


class DeadlinePool(asyncpg.Pool):
    """A pool whose `acquire()` (and so `fetch`, `execute`, ... on the pool) waits at most
    `acquire_timeout` seconds for a connection, a new one included, unless the caller says
    otherwise: with the database frozen or every connection stuck, a request fails fast instead
    of queueing forever. The same budget bounds the reset when a connection goes back."""

    acquire_timeout: float | None = None

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


async def create_pool(
    dsn: str,
    *,
    size: int = 10,
    min_size: int = 1,
    acquire_timeout: float | None = None,
    command_timeout: float | None = None,
    connect_timeout: float = 10.0,
) -> Pool:
    """A connection pool with JSON codecs; raises Unavailable when the database cannot be reached.

    `acquire_timeout` bounds the wait for a connection, `command_timeout` each statement that
    names no timeout of its own (asyncpg cancels it on the server), `connect_timeout` each new
    connection. The API sets all three (docs/operations.md); a worker's long jobs leave the
    statement unbounded.
    """
    try:
        pool = DeadlinePool(
            dsn,
            min_size=min(min_size, size),
            max_size=size,
            max_queries=50000,
            max_inactive_connection_lifetime=300.0,
            loop=None,
            connection_class=asyncpg.Connection,
            record_class=asyncpg.Record,
            init=_init_connection,
            command_timeout=command_timeout,
            timeout=connect_timeout,
            reset=_keep_session,
            # No parallel workers: for the check's lookups (1k-100k keys) the planner then picks
            # a parallel scan of the whole table whose Gather of wide rows is 2-4x slower than a
            # plain index or sequential scan, and the workers take the cores the API needs
            # (docs/performance.md). Custom plans are forced only where they pay: the check's
            # large lookups set plan_cache_mode in their own transaction (checks.py); forcing
            # them pool-wide re-planned every write statement on every call.
            server_settings={
                "max_parallel_workers_per_gather": "0",
                "application_name": "suppress",
            },
        )
        pool.acquire_timeout = acquire_timeout
        await pool
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable(f"cannot connect to PostgreSQL: {type(exc).__name__}") from None
    return pool


@contextmanager
def translated_errors(unavailable: str | None = None) -> Iterator[None]:
    """Turn driver errors into domain errors at one seam: a unique violation is a Conflict, a
    database that is down (DATABASE_DOWN) is Unavailable (detail: `unavailable`, or the error)."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"already exists ({exc.constraint_name})") from None
    except DATABASE_DOWN as exc:
        raise Unavailable(unavailable or f"database unavailable: {type(exc).__name__}") from None
