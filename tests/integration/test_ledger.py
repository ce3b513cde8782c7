"""The hash chain: built on every append, verified independently, broken by every kind of tampering."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.config import ENV_VARS
from suppress.ledger import verify_chain
from suppress.sql import Queries
from tests.conftest import Tenant, post_json
from tests.support import consent, customer, suppress

Client = AsyncTestClient[Litestar]


async def some_history(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "a@example.no", evidence={"ip": "192.0.2.1"}, notice_version="v1")
    await suppress(client, tenant, "b@example.no", "manual", note="asked on the phone")
    await customer(client, tenant, "c@example.no", "purchase")
    await post_json(client, tenant, "/v1/consents/withdraw", {"channel": "email", "address": "a@example.no"})
    await consent(client, tenant, "a@example.no", notice_version="v2")


async def test_appends_build_a_verifiable_chain(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries
) -> None:
    await some_history(client, tenant)
    result = await verify_chain(db, queries, tenant.id)
    assert result.ok, result
    assert result.events == await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id)
    rows = await db.fetch(
        "SELECT lane, seq, prev_hash, hash FROM events WHERE tenant_id = $1 ORDER BY lane, seq", tenant.id
    )
    for lane in {r["lane"] for r in rows}:
        chain = [r for r in rows if r["lane"] == lane]
        assert [r["seq"] for r in chain] == list(range(1, len(chain) + 1))
        assert all(chain[i]["prev_hash"] == chain[i - 1]["hash"] for i in range(1, len(chain)))


async def test_personal_fields_live_apart_and_hashed(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await suppress(client, tenant, "note@example.no", "manual", note="called support")
    row = await db.fetchrow("SELECT data, personal FROM events WHERE tenant_id = $1", tenant.id)
    assert row is not None and "note" not in row["data"] and "called support" in row["personal"]


Tamper = Callable[[asyncpg.Connection, int], Awaitable[None]]

# The busiest chain of the tenant (a@example.no's events share one) and its first two events.
BUSY = "(SELECT lane FROM events WHERE tenant_id = $1 GROUP BY lane ORDER BY count(*) DESC, lane LIMIT 1)"
FIRST = f"tenant_id = $1 AND lane = {BUSY} AND seq = 1"


async def _alter_data(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f'UPDATE events SET data = data || \'{{"reason": "forged"}}\' WHERE {FIRST}', t)


async def _alter_kind(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f"UPDATE events SET kind = 'consent_withdrawn' WHERE {FIRST}", t)


async def _alter_time(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f"UPDATE events SET occurred_at = occurred_at - interval '1 day' WHERE {FIRST}", t)


async def _alter_personal(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f'UPDATE events SET personal = \'{{"ip": "198.51.100.7"}}\' WHERE {FIRST}', t)


async def _alter_hash_too(db: asyncpg.Connection, t: int) -> None:
    # recompute the altered event's own hash: the next event's prev_hash still gives it away
    await db.execute(f"UPDATE events SET data = data || '{{\"x\": 1}}' WHERE {FIRST}", t)
    await db.execute(
        f"UPDATE events e SET hash = sha256(e.prev_hash || convert_to(ledger_line(e), 'UTF8')) WHERE {FIRST}",
        t,
    )


async def _move_lane(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f"UPDATE events SET lane = (lane + 1) % 16, seq = seq + 1000000 WHERE {FIRST}", t)


async def _delete_first(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f"DELETE FROM events WHERE {FIRST}", t)


async def _delete_newest(db: asyncpg.Connection, t: int) -> None:
    await db.execute(
        f"DELETE FROM events WHERE tenant_id = $1 AND lane = {BUSY}"
        f" AND seq = (SELECT max(seq) FROM events WHERE tenant_id = $1 AND lane = {BUSY})",
        t,
    )


async def _reorder(db: asyncpg.Connection, t: int) -> None:
    lane = await db.fetchval(f"SELECT {BUSY}", t)
    await db.execute(
        "UPDATE events SET seq = -seq WHERE tenant_id = $1 AND lane = $2 AND seq IN (1, 2)", t, lane
    )
    await db.execute(
        "UPDATE events SET seq = CASE seq WHEN -1 THEN 2 ELSE 1 END WHERE tenant_id = $1 AND lane = $2 AND seq < 0",
        t,
        lane,
    )


async def _insert_forged(db: asyncpg.Connection, t: int) -> None:
    # a forged event put in behind the trigger's back, with a plausible but wrong chain link
    await db.execute("ALTER TABLE events DISABLE TRIGGER events_ledger_append")
    try:
        await db.execute(
            """INSERT INTO events (tenant_id, lane, seq, channel, address_hash, kind, source, occurred_at, data,
                                   personal_hash, prev_hash, hash)
               SELECT $1, 0, coalesce(max(seq), 0) + 1, 'email', '\\x00', 'consent_given', 'api', now(), '{}',
                      sha256(''::bytea), sha256('x'::bytea), sha256('y'::bytea)
               FROM events WHERE tenant_id = $1 AND lane = 0""",
            t,
        )
    finally:
        await db.execute("ALTER TABLE events ENABLE TRIGGER events_ledger_append")


async def _alter_head(db: asyncpg.Connection, t: int) -> None:
    await db.execute(
        f"UPDATE ledger_heads SET last_hash = sha256('other'::bytea) WHERE tenant_id = $1 AND lane = {BUSY}",
        t,
    )


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "names_event"),
    [
        (_alter_data, 1, True),
        (_alter_kind, 1, True),
        (_alter_time, 1, True),
        (_alter_personal, 1, True),
        (_alter_hash_too, 2, True),
        (_move_lane, None, True),
        (_delete_first, 2, True),
        (_delete_newest, None, False),
        (_reorder, 1, True),
        (_insert_forged, None, None),
        (_alter_head, None, False),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
async def test_every_kind_of_tampering_is_found(
    db: asyncpg.Connection,
    client: Client,
    tenant: Tenant,
    queries: Queries,
    tamper: Tamper,
    bad_seq: int | None,
    names_event: bool | None,
) -> None:
    await some_history(client, tenant)
    assert (await verify_chain(db, queries, tenant.id)).ok
    busy = await db.fetchval(f"SELECT {BUSY}", tenant.id)
    await tamper(db, tenant.id)
    result = await verify_chain(db, queries, tenant.id)
    assert not result.ok and result.problem
    if bad_seq is not None:
        assert (result.first_bad_lane, result.first_bad_seq) == (busy, bad_seq), result
    if names_event is not None:
        assert (result.first_bad_event is not None) == names_event, result


async def test_erasure_keeps_the_chain_verifiable(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries
) -> None:
    await some_history(client, tenant)
    response = await client.post("/v1/recipients/email/a@example.no/erase", headers=tenant.auth("admin"))
    assert response.status_code == 200, response.text
    assert (
        await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND personal IS NOT NULL AND kind = 'consent_given'",
            tenant.id,
        )
        == 0
    )
    assert (await verify_chain(db, queries, tenant.id)).ok


async def test_concurrent_appends_keep_one_chain(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries
) -> None:
    await asyncio.gather(*(suppress(client, tenant, f"many{i}@example.no", "manual") for i in range(40)))
    result = await verify_chain(db, queries, tenant.id)
    assert result.ok and result.events == 40


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS} | {"SUPPRESS_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "suppress.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.e2e  # runs a real process
async def test_cli_verify_exit_codes(
    db: asyncpg.Connection, client: Client, tenant: Tenant, database_url: str
) -> None:
    await some_history(client, tenant)
    intact = _cli("ledger", "verify", "--tenant", tenant.name, database_url=database_url)
    assert intact.returncode == 0 and "intact" in intact.stdout
    head = _cli("ledger", "head", "--tenant", str(tenant.id), database_url=database_url)
    assert head.returncode == 0 and '"chains"' in head.stdout and '"hash"' in head.stdout
    await _alter_kind(db, tenant.id)
    broken = _cli("ledger", "verify", "--tenant", tenant.name, database_url=database_url)
    row = await db.fetchrow(f"SELECT id, lane FROM events WHERE {FIRST}", tenant.id)
    assert row is not None
    assert broken.returncode == 1 and f"event {row['id']} (chain {row['lane']} seq 1)" in broken.stderr
