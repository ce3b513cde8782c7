"""The benches' embedded primary + hot standby (`ReplicatedPostgres`): the standby replays what is
written on the primary, and however the `with` block is left, both servers stop and the folder goes."""

from __future__ import annotations

import asyncpg
import pytest

from suppress.devstack.embedded import pid_alive
from suppress.devstack.replication import ReplicatedPostgres, wait_until_replayed


async def use_then_interrupt(pair: ReplicatedPostgres, pids: list[int | None]) -> None:
    """Start the pair, check the standby replays the primary, then stop as Ctrl-C would."""
    with pair:
        primary_dsn = pair.start_primary()
        standby_dsn = pair.start_standby()  # cloned before the data exists: it must stream it
        conn = await asyncpg.connect(primary_dsn)
        try:
            await conn.execute("CREATE TABLE t AS SELECT g AS n FROM generate_series(1, 50000) g")
        finally:
            await conn.close()
        await wait_until_replayed(primary_dsn, standby_dsn)
        standby = await asyncpg.connect(standby_dsn)
        try:
            assert await standby.fetchval("SELECT count(*) FROM t") == 50000
            assert await standby.fetchval("SELECT pg_is_in_recovery()")
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await standby.execute("INSERT INTO t VALUES (0)")
        finally:
            await standby.close()
        pids += [pair.primary.pid, pair.standby.pid if pair.standby else None]
        assert all(pid_alive(pid) for pid in pids)
        raise KeyboardInterrupt


async def test_the_standby_serves_what_the_primary_wrote_and_an_interrupt_removes_both() -> None:
    pair = ReplicatedPostgres("suppress-test-pair-")
    pids: list[int | None] = []
    with pytest.raises(KeyboardInterrupt):
        await use_then_interrupt(pair, pids)
    assert len(pids) == 2
    assert not any(pid_alive(pid) for pid in pids)
    assert not pair.root.exists()
