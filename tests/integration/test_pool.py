"""The service's pool: a connection goes back without a reset round trip, but never inside a
transaction."""

from __future__ import annotations

from suppress.db import create_pool


async def test_a_released_connection_keeps_its_session_but_not_its_transaction(database_url: str) -> None:
    pool = await create_pool(database_url, size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'kept'")  # session state: nothing here does this
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        async with pool.acquire() as conn:
            # the same connection, not reset (asyncpg's default would have sent RESET ALL)
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            assert await conn.fetchval("SHOW application_name") == "kept"
            await conn.execute("BEGIN; CREATE TEMP TABLE left_open (x int)")  # a transaction left open
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None  # rolled back
    finally:
        await pool.close()
