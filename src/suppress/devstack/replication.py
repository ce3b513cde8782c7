"""A streaming hot standby of an embedded primary, from the embedded PostgreSQL's own binaries
(the replica tests and bench/replicas.py run one).

The standby is a `pg_basebackup -R` of the primary (standby.signal + primary_conninfo), so it
streams the primary's WAL and answers read-only queries. Nothing here touches the machine's
PostgreSQL.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path

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
