"""Forward-only schema migrations: `sql/migrations/NNNN_name.sql`, applied in order, once each.

Migrations run under a PostgreSQL advisory lock, so several processes may call `migrate()` at the
same time (every `serve` does at start-up in dev); each file runs in its own transaction and is
recorded in `schema_migrations`.
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from suppress.errors import SuppressError
from suppress.sql import sql_dir

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x5355505052455353  # "SUPPRESS"


class MigrationError(SuppressError):
    """The migrations on disk do not fit the ones recorded in the database."""

    code = "migration"


def migration_files(directory: Path | None = None) -> list[tuple[int, str, Path]]:
    """(version, name, path) of every migration file, in order; rejects gaps and duplicates."""
    directory = directory or sql_dir() / "migrations"
    found: list[tuple[int, str, Path]] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"migration file name not of the form NNNN_name.sql: {path.name}")
        found.append((int(match.group(1)), match.group(2), path))
    for expected, (version, _, path) in enumerate(found, start=1):
        if version != expected:
            raise MigrationError(f"migration {path.name} out of sequence (expected {expected:04d})")
    return found


def _has_statements(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in text.splitlines())


async def migrate(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """Apply every pending migration; returns the names applied."""
    files = migration_files(directory)
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"]: r["name"] for r in await conn.fetch("SELECT version, name FROM schema_migrations")
        }
        for version, name, path in files:
            if version in done:
                if done[version] != name:
                    raise MigrationError(
                        f"migration {version:04d} is recorded as {done[version]!r} but the file is {name!r}"
                    )
                continue
            text = path.read_text(encoding="utf-8")
            async with conn.transaction():
                if _has_statements(text):  # asyncpg cannot execute a script of comments only
                    await conn.execute(text)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied_now.append(f"{version:04d}_{name}")
        unknown = sorted(set(done) - {v for v, _, _ in files})
        if unknown:
            raise MigrationError(f"database has migrations this code does not know: {unknown}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
