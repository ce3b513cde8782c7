"""Worker jobs: called directly with a ctx, and run by a real arq worker against real Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from arq import create_pool
from arq.worker import Worker
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.settings import WorkerSettings
from workers.suppressions import expire_suppressions

from suppress.config import Settings
from suppress.db import create_pool as create_db_pool
from suppress.queue import JOB_EXPIRE_SUPPRESSIONS, enqueue, redis_settings
from suppress.sql import Queries
from tests.conftest import Tenant
from tests.support import consent, decision, suppress

Client = AsyncTestClient[Litestar]


async def _expire_now(db: asyncpg.Connection, tenant: Tenant) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    await db.execute("UPDATE suppressions SET expires_at = $2 WHERE tenant_id = $1", tenant.id, past)
    await db.execute(
        "UPDATE recipients SET suppression_expires = ARRAY[$2::timestamptz] WHERE tenant_id = $1",
        tenant.id,
        past,
    )


async def test_expiry_job_lifts_expired_suppressions_once(
    db: asyncpg.Connection, client: Client, tenant: Tenant, settings: Settings, queries: Queries
) -> None:
    await consent(client, tenant, "soft@example.no")
    await suppress(client, tenant, "soft@example.no", "soft_bounced")
    await suppress(client, tenant, "keep@example.no", "manual")
    await _expire_now(db, tenant)
    await db.execute(
        "UPDATE suppressions SET expires_at = NULL WHERE tenant_id = $1 AND reason = 'manual'",
        tenant.id,
    )
    pool = await create_db_pool(settings.require_database_url(), size=2)
    try:
        ctx: dict[str, Any] = {"pool": pool, "queries": queries}
        assert await expire_suppressions(ctx) >= 1
        assert await expire_suppressions(ctx) == 0  # a second run finds nothing left to do
    finally:
        await pool.close()
    reasons = await db.fetch("SELECT reason FROM suppressions WHERE tenant_id = $1", tenant.id)
    assert [r["reason"] for r in reasons] == ["manual"]
    row = await db.fetchrow(
        "SELECT suppression_reasons FROM recipients WHERE tenant_id = $1 AND address = 'soft@example.no'",
        tenant.id,
    )
    assert row is not None and row["suppression_reasons"] == []
    lifted = await db.fetchrow(
        "SELECT source, data FROM events WHERE tenant_id = $1 AND kind = 'suppression_lifted'",
        tenant.id,
    )
    assert lifted is not None and lifted["source"] == "expiry"
    assert await decision(client, tenant, "soft@example.no") == (True, "consent", None)


async def test_real_worker_runs_the_enqueued_job(
    db: asyncpg.Connection, client: Client, tenant: Tenant, settings: Settings
) -> None:
    await suppress(client, tenant, "burst@example.no", "soft_bounced")
    await _expire_now(db, tenant)
    arq_pool = await create_pool(redis_settings(settings.require_redis_url()))
    try:
        assert await enqueue(arq_pool, JOB_EXPIRE_SUPPRESSIONS, job_id=f"expire-{tenant.id}")
        assert not await enqueue(arq_pool, JOB_EXPIRE_SUPPRESSIONS, job_id=f"expire-{tenant.id}")
        worker = Worker(
            functions=WorkerSettings.functions,
            on_startup=WorkerSettings.on_startup,
            on_shutdown=WorkerSettings.on_shutdown,
            redis_settings=redis_settings(settings.require_redis_url()),
            ctx={"settings": settings},
            burst=True,
            poll_delay=0.05,
            handle_signals=False,
        )
        try:
            await worker.main()
        finally:
            await worker.close()
        # the queue also holds effects jobs enqueued by earlier writes; all must succeed
        assert worker.jobs_complete >= 1 and worker.jobs_failed == 0
    finally:
        await arq_pool.aclose()
    assert await db.fetchval("SELECT count(*) FROM suppressions WHERE tenant_id = $1", tenant.id) == 0
