"""Bodies built to hurt: JSON nested 100 000 deep, import files whose first line cannot be read,
and files that turn bad halfway. Each gets a 4xx problem detail at upload, or an import that
fails once with its reason; never a 500, never a job retried over and over."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from arq import create_pool as create_arq_pool
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.imports import run_import as run_import_job

from suppress.config import Settings
from suppress.queue import redis_settings
from suppress.sql import Queries
from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]
DEEP = 100_000


async def test_json_nested_100_000_deep_is_a_400_problem(client: Client, tenant: Tenant) -> None:
    body = '{"channel": "email", "purpose": "marketing", "recipients": ' + "[" * DEEP + "]" * DEEP + "}"
    for path, scope in (("/v1/checks", "check"), ("/v1/consents", "write"), ("/v1/suppressions", "write")):
        response = await client.post(
            path, content=body.encode(), headers={**tenant.auth(scope), "Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "malformed_request"


async def _upload(client: Client, tenant: Tenant, body: bytes, fmt: str = "ndjson") -> Any:
    return await client.post(
        "/v1/imports",
        params={"kind": "suppressions", "format": fmt, "reason": "manual"},
        content=body,
        headers={**tenant.auth("write"), "Content-Type": "application/octet-stream"},
    )


@pytest.mark.parametrize(
    ("what", "body", "fmt"),
    [
        ("ndjson 100 000 deep", b"[" * DEEP + b"]" * DEEP + b"\n", "ndjson"),
        ("ndjson object 100 000 deep", b'{"address": ' + b"[" * DEEP + b"]" * DEEP + b"}\n", "ndjson"),
        ("a 3 MB ndjson line", b'{"address": "' + b"a" * 3_000_000 + b'@example.org"}', "ndjson"),
        ("a 3 MB ndjson line, then more", b'{"address": "' + b"a" * 3_000_000 + b'@x.org"}\n{}\n', "ndjson"),
        ("ndjson that is not JSON", b"address,reason\nola@example.no,manual\n", "ndjson"),
        ("a 3 MB csv header", b"address," + b"x" * 3_000_000 + b"\nola@example.no,1\n", "csv"),
        ("not UTF-8", b"address\n\xff\xfe@example.org\n", "csv"),
    ],
)
async def test_an_import_whose_start_cannot_be_read_is_refused_at_upload(
    client: Client, tenant: Tenant, db: asyncpg.Connection, what: str, body: bytes, fmt: str
) -> None:
    response = await _upload(client, tenant, body, fmt)
    assert 400 <= response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await db.fetchval("SELECT count(*) FROM imports WHERE tenant_id = $1", tenant.id) == 0


async def _run_job_once(
    settings: Settings, pool: asyncpg.Pool, queries: Queries, tenant: Tenant, import_id: int
) -> Any:
    redis = await create_arq_pool(redis_settings(settings.require_redis_url()))
    try:
        ctx: dict[str, Any] = {"pool": pool, "queries": queries, "settings": settings, "redis": redis}
        return await run_import_job(ctx, tenant.id, import_id)
    finally:
        await redis.aclose()


async def test_a_file_that_turns_bad_halfway_fails_once_with_its_reason(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    settings: Settings,
    pool: asyncpg.Pool,
    queries: Queries,
) -> None:
    """A line longer than the limit after good ones: the job ends the import `failed`, saying why,
    on its first run (the rows before it stay imported); it is not retried."""
    good = b"".join(b'{"address": "ok%d@example.org"}\n' % n for n in range(5))
    body = (
        good
        + b'{"address": "'
        + b"a" * 3_000_000
        + b'@example.org"}\n'
        + b'{"address": "late@example.org"}\n'
    )
    response = await _upload(client, tenant, body)
    assert response.status_code == 202, response.text
    import_id = response.json()["id"]
    assert await _run_job_once(settings, pool, queries, tenant, import_id) == "failed"
    view = (await client.get(f"/v1/imports/{import_id}", headers=tenant.auth("read"))).json()
    assert view["status"] == "failed"
    assert "longer than" in view["error"]
    # nothing left for the cron to pick up again
    row = await db.fetchrow("SELECT status, lease_token FROM imports WHERE id = $1", import_id)
    assert row["status"] == "failed"


async def test_a_row_nested_too_deep_is_a_failed_row_not_a_failed_job(
    client: Client, tenant: Tenant, settings: Settings, pool: asyncpg.Pool, queries: Queries
) -> None:
    body = (
        b'{"address": "first@example.org"}\n'
        + b'{"address": '
        + b"[" * DEEP
        + b"]" * DEEP
        + b"}\n"
        + b'{"address": "last@example.org"}\n'
    )
    response = await _upload(client, tenant, body)
    assert response.status_code == 202, response.text
    import_id = response.json()["id"]
    assert await _run_job_once(settings, pool, queries, tenant, import_id) == "done"
    view = (await client.get(f"/v1/imports/{import_id}", headers=tenant.auth("read"))).json()
    assert (view["status"], view["done"], view["failed"]) == ("done", 2, 1)
    assert view["errors"][0]["line"] == 2 and "deep" in view["errors"][0]["error"]
