"""A streaming hot standby of an embedded primary, from the embedded PostgreSQL's own binaries
(the replica tests, bench/replicas.py and `bench/check.py --replica` run one).

The standby is a `pg_basebackup -R` of the primary (standby.signal + primary_conninfo), so it
streams the primary's WAL and answers read-only queries. Nothing here touches the machine's
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from suppress.devstack import embedded
from suppress.devstack.embedded import EmbeddedPostgres


class EmbeddedStandby(EmbeddedPostgres):
    """A hot standby of `primary_port`, cloned at its first start; keeps its port across restarts."""

    def __init__(self, data_dir: Path, primary_port: int, *, database: str = "suppress") -> None:
        super().__init__(data_dir, database=database)
        self.primary_port = primary_port
        self.fixed_port: int | None = None

    def _initdb(self, user: pwd.struct_passwd | None, deadline: float) -> None:
        staging = self.data_dir / "postgres.clone"
        self._make_owned_dir(staging, user)
        cmd = [
            str(self._bin("pg_basebackup")),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary_port),
            "-U",
            self.superuser,
            "-D",
            str(staging),
            "-R",  # standby.signal and primary_conninfo
            "-X",
            "stream",
            "--checkpoint=fast",
        ]
        embedded.run_program(cmd, what="pg_basebackup", cwd=self.data_dir, user=user, timeout=120)
        self.workdir.rmdir()
        staging.rename(self.workdir)

    def _command(self, port: int) -> list[str]:
        # Probes every 100 ms see replay at once; conflicts never hold replay back for long.
        return [*super()._command(port), "-c", "hot_standby=on", "-c", "wal_receiver_status_interval=1s"]

    def _ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        try:
            lines = (self.workdir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        # A hot standby that accepts connections says "standby" where a primary says "ready".
        return (
            len(lines) >= 8 and lines[0].strip() == str(proc.pid) and lines[7].strip() in {"ready", "standby"}
        )

    def _after_ready(self, port: int, deadline: float) -> None:
        self.fixed_port = port  # read-only: the database came with the clone

    def _spawn_until_ready(self, user: pwd.struct_passwd | None, deadline: float) -> None:
        if self.fixed_port is None:
            super()._spawn_until_ready(user, deadline)
        else:  # a restart: same DSN as before, as the service was configured with it
            self._spawn(user, self.fixed_port, deadline)

    def kill(self) -> None:
        """Crash it: an immediate shutdown ends every backend at once, clients see dropped sockets."""
        pid = self.pid
        assert pid is not None
        os.kill(pid, signal.SIGQUIT)
        self.stop()  # reaps it


class ReplicatedPostgres:
    """An embedded primary and a hot standby of it in a fresh temporary folder (the benches' pair).

    `start_primary()` first (load data before or after), then `start_standby()`; `stop()`, or
    leaving the `with` block however it is left, stops both and removes the folder.
    """

    def __init__(self, prefix: str = "suppress-replication-", *, database: str = "suppress") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.root.chmod(0o711)  # the servers' service user must reach its folders (embedded.py)
        self.database = database
        self.primary = EmbeddedPostgres(self.root / "primary", database=database)
        self.standby: EmbeddedStandby | None = None

    def start_primary(self) -> str:
        return self.primary.start()

    def start_standby(self) -> str:
        """Clone the running primary and start streaming from it; returns the standby's DSN."""
        if self.standby is None:
            self.standby = EmbeddedStandby(self.root / "standby", self.primary.port, database=self.database)
        return self.standby.start()

    def stop(self) -> None:
        try:
            if self.standby is not None:
                self.standby.stop()
            self.primary.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ReplicatedPostgres:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def wait_until_replayed(primary_dsn: str, standby_dsn: str) -> float:
    """Wait until the standby has replayed everything the primary wrote so far; returns the seconds.

    Waits as long as it takes: the caller bounds it (`asyncio.timeout`).
    """
    began = time.monotonic()
    primary = await asyncpg.connect(primary_dsn)
    try:
        target = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
    finally:
        await primary.close()
    standby = await asyncpg.connect(standby_dsn)
    try:
        replayed = "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn"
        while True:
            if await standby.fetchval(replayed, target):
                break
            await asyncio.sleep(0.1)  # polled: replay raises no event a client can wait on
    finally:
        await standby.close()
    return time.monotonic() - began
