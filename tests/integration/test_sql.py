"""The named-query registry and the migrations, against files on disk and a real database."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import asyncpg
import pytest

from suppress.errors import QueryRegistryError
from suppress.migrate import MigrationError, migrate, migration_files
from suppress.sql import Queries, load_queries, parse_sql, sql_dir
from tests.conftest import _with_database


def _copy_sql(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(sql_dir(), target)
    return target


def test_every_declared_query_is_loaded() -> None:
    queries = load_queries()
    for name in Queries.declared():
        assert isinstance(getattr(queries, name), str) and getattr(queries, name).strip()


def test_a_query_missing_from_the_files_fails_the_load(tmp_path: Path) -> None:
    directory = _copy_sql(tmp_path)
    path = directory / "checks.sql"
    path.write_text(path.read_text().replace("-- name: add_check_counts", "-- name: renamed_counts"))
    with pytest.raises(
        QueryRegistryError,
        match=r"declared but not defined: add_check_counts.*defined but not declared: renamed_counts",
    ):
        load_queries(directory)


def test_a_missing_file_fails_the_load(tmp_path: Path) -> None:
    directory = _copy_sql(tmp_path)
    (directory / "ops.sql").unlink()
    with pytest.raises(QueryRegistryError, match="missing SQL file"):
        load_queries(directory)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: a\n-- nothing\n", "has no statement"),
        ("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n", "defined twice"),
        ("-- name: a\nSELECT 1; SELECT 2;\n", "more than one statement"),
        ("SELECT 1;\n", "outside a named block"),
    ],
)
def test_malformed_sql_files_are_rejected(text: str, message: str) -> None:
    with pytest.raises(QueryRegistryError, match=message):
        parse_sql(text, "x.sql")


def test_parse_keeps_semicolons_inside_strings() -> None:
    assert parse_sql("-- name: a\n-- one line\nSELECT ';' AS x;\n", "x.sql")["a"].text == "SELECT ';' AS x"


async def test_every_query_prepares_against_the_migrated_schema(db: asyncpg.Connection) -> None:
    queries = load_queries()
    for name in sorted(Queries.declared()):
        await db.prepare(getattr(queries, name))


async def _fresh_database(server_database_url: str) -> tuple[str, str]:
    name = f"suppress_mig_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name, _with_database(server_database_url, name)


async def _drop(server_database_url: str, name: str) -> None:
    admin = await asyncpg.connect(server_database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_migrations_apply_once_and_concurrently(server_database_url: str) -> None:
    import asyncio

    name, url = await _fresh_database(server_database_url)
    try:
        conns = [await asyncpg.connect(url) for _ in range(3)]
        try:
            results = await asyncio.gather(*(migrate(c) for c in conns))
        finally:
            for c in conns:
                await c.close()
        applied = sorted(results, key=len)
        expected = [f"{v:04d}_{n}" for v, n, _ in migration_files()]
        assert applied[-1] == expected and applied[0] == [] and applied[1] == []
        conn = await asyncpg.connect(url)
        try:
            assert await migrate(conn) == []
            rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
            assert [r["version"] for r in rows] == list(range(1, len(expected) + 1))
        finally:
            await conn.close()
    finally:
        await _drop(server_database_url, name)


async def test_unknown_recorded_migration_is_refused(server_database_url: str) -> None:
    name, url = await _fresh_database(server_database_url)
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')"
            )
            with pytest.raises(MigrationError, match="does not know"):
                await migrate(conn)
        finally:
            await conn.close()
    finally:
        await _drop(server_database_url, name)


def test_migration_files_must_be_in_sequence(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="out of sequence"):
        migration_files(tmp_path)
    (tmp_path / "0003_c.sql").rename(tmp_path / "2_bad.sql")
    with pytest.raises(MigrationError, match="NNNN_name"):
        migration_files(tmp_path)
