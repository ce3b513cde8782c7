"""Where a running `suppress dev` tells the other `suppress` commands how to reach it.

`suppress dev` writes ``DATA_DIR/dev-settings.json`` (mode 0600) once its servers are up and
removes it when it stops. A command run with no ``SUPPRESS_DATABASE_URL`` reads it from the
default data folder, so ``suppress keys create --tenant demo`` next to ``suppress dev`` just works.
The file names where the secret lives; it never holds the secret itself.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Mapping
from pathlib import Path

import msgspec

from suppress.devstack.embedded import default_data_dir, pid_alive

FILE_NAME = "dev-settings.json"


class DevSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How to reach a running `suppress dev`."""

    database_url: str
    redis_url: str
    secret_file: str | None  # None: the secret came from SUPPRESS_SECRET
    public_url: str
    pid: int

    def export_lines(self) -> list[str]:
        """Shell lines that point another shell (or tool) at this server."""
        lines = [
            f"export SUPPRESS_DATABASE_URL={shlex.quote(self.database_url)}",
            f"export SUPPRESS_REDIS_URL={shlex.quote(self.redis_url)}",
        ]
        if self.secret_file is not None:
            lines.append(f'export SUPPRESS_SECRET="$(cat {shlex.quote(self.secret_file)})"')
        lines.append(f"export SUPPRESS_PUBLIC_URL={shlex.quote(self.public_url)}")
        return lines


def path(data_dir: Path | None = None) -> Path:
    """The settings file of the dev server using `data_dir` (by default the default data folder)."""
    return (data_dir or default_data_dir()) / FILE_NAME


def write(data_dir: Path, settings: DevSettings) -> Path:
    """Write the file privately and atomically; return its path."""
    target = path(data_dir)
    staging = target.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(msgspec.json.format(msgspec.json.encode(settings)) + b"\n")
    staging.replace(target)
    return target


def remove(data_dir: Path) -> None:
    """Forget the settings (the servers they name are stopping)."""
    with contextlib.suppress(FileNotFoundError):
        path(data_dir).unlink()


def read(data_dir: Path | None = None) -> DevSettings | None:
    """The settings of a dev server that is still running, or None."""
    try:
        settings = msgspec.json.decode(path(data_dir).read_bytes(), type=DevSettings)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return settings if pid_alive(settings.pid) else None


def environ(env: Mapping[str, str], data_dir: Path | None = None) -> dict[str, str]:
    """`env`, completed from a running dev server's settings when it names no database."""
    merged = dict(env)
    if merged.get("SUPPRESS_DATABASE_URL"):
        return merged
    dev = read(data_dir)
    if dev is None:
        return merged
    merged["SUPPRESS_DATABASE_URL"] = dev.database_url
    merged.setdefault("SUPPRESS_REDIS_URL", dev.redis_url)
    merged.setdefault("SUPPRESS_PUBLIC_URL", dev.public_url)
    if not merged.get("SUPPRESS_SECRET") and dev.secret_file is not None:
        with contextlib.suppress(OSError):
            merged["SUPPRESS_SECRET"] = Path(dev.secret_file).read_text().strip()
    return merged
