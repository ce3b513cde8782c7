"""Embedded PostgreSQL and Redis: start, persist across restarts, stop, recover."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import platformdirs
import pytest
import redis.asyncio as aioredis

from suppress.devstack import embedded
from suppress.devstack.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    default_data_dir,
    free_port,
)

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def proc_fs() -> None:
    """The tests of stray and orphaned servers need Linux's /proc."""
    if not sys.platform.startswith("linux"):
        pytest.fail("this test needs Linux (/proc, PR_SET_PDEATHSIG); the module supports POSIX only")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, except as root.

    As root the servers run as an unprivileged user, who cannot traverse pytest's
    ``/tmp/pytest-of-root`` (mode 0700), and the module refuses to widen permissions above
    its data folder; so use a fresh folder directly in the (world-traversable) temp dir.
    """
    if not IS_ROOT:
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="suppress-test-embedded-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie waiting for init to reap it counts as gone)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _server_processes(server: EmbeddedPostgres | EmbeddedRedis) -> dict[int, int]:
    """Every process (postmaster and its children) working in the server's folder."""
    binary = "postgres" if isinstance(server, EmbeddedPostgres) else "redis-server"
    return embedded._processes_in(server.workdir, binary)


async def test_postgres_persists_across_restarts_and_stops_cleanly(data_dir: Path) -> None:
    pg = EmbeddedPostgres(data_dir)
    with pg:
        assert pg.port not in (5432, 6379)
        assert pg.dsn == f"postgresql://postgres@127.0.0.1:{pg.port}/suppress"
        pid = pg.pid
        assert pid is not None
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert await conn.fetchval("SELECT current_database()") == "suppress"
            await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')")
        finally:
            await conn.close()
        if sys.platform.startswith("linux"):
            assert len(_server_processes(pg)) > 1  # postmaster and its workers
    assert pg.pid is None
    assert not _alive(pid)
    if sys.platform.startswith("linux"):
        assert _server_processes(pg) == {}
    pg.stop()  # idempotent

    with EmbeddedPostgres(data_dir) as again:
        conn = await asyncpg.connect(again.dsn)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "survives"
        finally:
            await conn.close()

    # a server that cannot start: the error says why, with the log tail
    with (again.workdir / "postgresql.conf").open("a") as conf:
        conf.write("this is not a setting\n")
    with pytest.raises(EmbeddedServerError, match=r"exited with code 1[\s\S]*syntax error"):
        again.start()
    assert again.pid is None


async def test_redis_set_get_and_aof_survives_restart(data_dir: Path) -> None:
    rd = EmbeddedRedis(data_dir)
    with rd:
        assert rd.port not in (5432, 6379)
        assert rd.dsn == f"redis://127.0.0.1:{rd.port}/0"
        pid = rd.pid
        assert pid is not None
        client = aioredis.from_url(rd.dsn)
        try:
            await client.set("job", "queued")
            assert await client.get("job") == b"queued"
            assert await client.config_get("appendonly") == {"appendonly": "yes"}
            assert await client.config_get("bind") == {"bind": "127.0.0.1"}
        finally:
            await client.aclose()
    assert not _alive(pid)
    assert (rd.workdir / "appendonly.aof").stat().st_size > 0

    with EmbeddedRedis(data_dir) as again:
        client = aioredis.from_url(again.dsn)
        try:
            assert await client.get("job") == b"queued"
        finally:
            await client.aclose()


def test_one_owner_per_data_dir(data_dir: Path) -> None:
    with EmbeddedRedis(data_dir) as first:
        with pytest.raises(EmbeddedServerError, match="in use"):
            EmbeddedRedis(data_dir).start()
        assert first.pid is not None
        assert _alive(first.pid)  # the refused second start did not touch the running one


@pytest.mark.usefixtures("proc_fs")
async def test_recovers_from_a_crashed_run(data_dir: Path) -> None:
    pg, rd = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)
    with pg, rd:
        assert pg.port != rd.port
        conn = await asyncpg.connect(pg.dsn)
        try:
            await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('committed')")
        finally:
            await conn.close()
        client = aioredis.from_url(rd.dsn)
        try:
            await client.set("job", "queued")
        finally:
            await client.aclose()
        assert pg.pid is not None
        assert rd.pid is not None
        os.kill(pg.pid, signal.SIGKILL)
        os.kill(rd.pid, signal.SIGKILL)
        # The stale postmaster.pid now names a live process that is not ours (PID 1, as after
        # a container restart): PostgreSQL alone would refuse to start on it.
        pidfile = pg.workdir / "postmaster.pid"
        lines = pidfile.read_text().splitlines()
        pidfile.write_text("\n".join(["1", *lines[1:]]) + "\n")

    with EmbeddedPostgres(data_dir) as pg2, EmbeddedRedis(data_dir) as rd2:
        conn = await asyncpg.connect(pg2.dsn)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "committed"
        finally:
            await conn.close()
        client = aioredis.from_url(rd2.dsn)
        try:
            assert await client.get("job") == b"queued"
        finally:
            await client.aclose()


_OWNER = """
import json, sys, threading, time
from pathlib import Path
from suppress.devstack.embedded import EmbeddedPostgres, EmbeddedRedis

pg, rd = EmbeddedPostgres(Path(sys.argv[1])), EmbeddedRedis(Path(sys.argv[1]))
def start() -> None:
    pg.start()
    rd.start()
if sys.argv[2] == "thread":
    worker = threading.Thread(target=start)
    worker.start()
    worker.join()
else:
    start()
print(json.dumps([pg.pid, rd.pid]), flush=True)
time.sleep(600)
"""


def _run_owner(data_dir: Path, mode: str) -> tuple[subprocess.Popen[str], list[int]]:
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(data_dir), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    line = owner.stdout.readline()
    assert line, "the owner process failed to start the servers"
    return owner, json.loads(line)


@pytest.mark.usefixtures("proc_fs")
def test_servers_stop_when_their_owner_is_killed(data_dir: Path) -> None:
    owner, pids = _run_owner(data_dir, "main")
    try:
        owner.send_signal(signal.SIGTERM)  # no atexit on SIGTERM: the parent-death signal acts
        owner.wait(10)
        assert _wait_gone(pids) == []
        assert embedded._processes_in((data_dir / "postgres").resolve(), "postgres") == {}
        # and they shut down cleanly, not killed
        assert "database system is shut down" in (data_dir / "postgres.log").read_text()
        assert "Redis is now ready to exit" in (data_dir / "redis.log").read_text()
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()


@pytest.mark.usefixtures("proc_fs")
def test_servers_orphaned_by_a_crash_are_stopped_by_the_next_start(data_dir: Path) -> None:
    # started from a thread there is no parent-death signal; SIGKILL skips atexit too
    owner, pids = _run_owner(data_dir, "thread")
    try:
        owner.kill()
        owner.wait(10)
        assert all(_alive(pid) for pid in pids)  # orphans, as after a real crash
        with EmbeddedPostgres(data_dir) as pg, EmbeddedRedis(data_dir) as rd:
            assert _wait_gone(pids, timeout=0) == []
            assert pg.pid not in pids
            assert rd.pid not in pids
    finally:
        if owner.stdout is not None:
            owner.stdout.close()
        for pid in pids:  # never leave a server behind, even if the test failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_data_dir_the_service_user_cannot_reach_is_refused(tmp_path: Path) -> None:
    blocked = next(p for p in tmp_path.parents if not p.stat().st_mode & stat.S_IXOTH)
    before = blocked.stat().st_mode
    if IS_ROOT:  # the servers run as the service user: start() checks the way to the data folder
        with pytest.raises(EmbeddedServerError, match="cannot reach"):
            EmbeddedRedis(tmp_path / "data").start()
    else:  # the servers run as us; the same check, for a user that owns none of the folders
        nobody = pwd.struct_passwd(("nobody-here", "x", 2**31 - 3, 2**31 - 3, "", "/", "/bin/false"))
        with pytest.raises(EmbeddedServerError, match="cannot reach"):
            embedded._check_reachable(tmp_path, nobody)
    assert blocked.stat().st_mode == before  # nothing above the data folder was opened up


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_data_dir() == Path("/var/lib/suppress")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_data_dir() == platformdirs.user_data_path("suppress", appauthor=False)


def test_free_port_is_never_a_system_port() -> None:
    ports = {free_port() for _ in range(20)}
    assert not ports & {5432, 6379}
    assert all(1024 < port < 65536 for port in ports)
