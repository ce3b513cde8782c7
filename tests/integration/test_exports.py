"""GET /v1/suppressions/export: what is in force, filtered, streamed as CSV or NDJSON, and importable back."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.addresses import AddressHasher
from suppress.config import DerivedKeys, Settings
from suppress.imports.exports import COLUMNS, export_suppressions
from suppress.imports.runs import run_import
from suppress.sql import Queries
from suppress.tenants import create_api_key, create_tenant
from tests.conftest import Tenant
from tests.support import suppress, topic

Client = AsyncTestClient[Litestar]


async def _setup(client: Client, tenant: Tenant, db: asyncpg.Connection) -> None:
    await topic(client, tenant, "news", False)
    await suppress(client, tenant, "first@example.no", "unsubscribed", note="=HYPERLINK(evil)")
    await suppress(client, tenant, "second@example.no", "unsubscribed", topic="news", campaign="spring")
    await suppress(client, tenant, "+4791234567", "unsubscribed", channel="sms")
    await suppress(client, tenant, "bounce@example.no", "hard_bounced")
    await suppress(
        client,
        tenant,
        "ran-out@example.no",
        "manual",
        expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat(),
    )
    await suppress(client, tenant, "erased@example.no", "complained")
    await db.execute(
        "UPDATE suppressions s SET expires_at = now() - interval '1 minute' FROM recipients r "
        "WHERE s.tenant_id = $1 AND r.tenant_id = s.tenant_id AND r.address_hash = s.address_hash "
        "AND r.address = 'ran-out@example.no'",
        tenant.id,
    )
    await db.execute(
        "UPDATE recipients SET address = NULL, erased_at = now() WHERE tenant_id = $1 AND address = 'erased@example.no'",
        tenant.id,
    )


async def test_csv_export_holds_what_is_in_force(
    client: Client, tenant: Tenant, db: asyncpg.Connection
) -> None:
    await _setup(client, tenant, db)
    response = await client.get(
        "/v1/suppressions/export", params={"format": "csv"}, headers=tenant.auth("read")
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith('attachment; filename="suppressions-')
    assert "content-length" not in response.headers  # streamed
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert tuple(rows[0].keys()) == COLUMNS
    assert [(r["channel"], r["address"], r["reason"], r["topic"]) for r in rows] == [
        ("email", "first@example.no", "unsubscribed", ""),
        ("email", "second@example.no", "unsubscribed", "news"),
        ("sms", "'+4791234567", "unsubscribed", ""),  # a spreadsheet keeps the + as text
        ("email", "bounce@example.no", "hard_bounced", ""),
    ]
    assert rows[0]["note"] == "'=HYPERLINK(evil)"  # not a formula in a spreadsheet
    assert rows[1]["campaign"] == "spring"
    assert datetime.fromisoformat(rows[0]["since"]) <= datetime.now(UTC)


async def test_ndjson_export_and_filters(client: Client, tenant: Tenant, db: asyncpg.Connection) -> None:
    await _setup(client, tenant, db)
    response = await client.get(
        "/v1/suppressions/export",
        params={"format": "ndjson", "channel": "email"},
        headers=tenant.auth("read"),
    )
    assert response.headers["content-type"].startswith("application/x-ndjson")
    items = [json.loads(line) for line in response.text.splitlines()]
    assert [i["address"] for i in items] == ["first@example.no", "second@example.no", "bounce@example.no"]
    assert items[1] == {
        "channel": "email",
        "address": "second@example.no",
        "reason": "unsubscribed",
        "topic": "news",
        "since": items[1]["since"],
        "expires_at": None,
        "campaign": "spring",
        "note": None,
    }
    bounced = await client.get(
        "/v1/suppressions/export",
        params={"format": "ndjson", "reason": "hard_bounced"},
        headers=tenant.auth("read"),
    )
    assert [json.loads(line)["address"] for line in bounced.text.splitlines()] == ["bounce@example.no"]


async def test_export_needs_read_and_a_known_format(client: Client, tenant: Tenant) -> None:
    assert (await client.get("/v1/suppressions/export")).status_code == 401
    assert (await client.get("/v1/suppressions/export", headers=tenant.auth("check"))).status_code == 403
    bad = await client.get("/v1/suppressions/export", params={"format": "xml"}, headers=tenant.auth("read"))
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_parameter"
    empty = await client.get("/v1/suppressions/export", headers=tenant.auth("read"))
    assert empty.status_code == 200 and empty.text.strip() == ",".join(f'"{c}"' for c in COLUMNS)


async def test_an_export_imports_back_as_it_is(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    queries: Queries,
    pool: asyncpg.Pool,
    settings: Settings,
) -> None:
    await _setup(client, tenant, db)
    exported = (await client.get("/v1/suppressions/export", headers=tenant.auth("read"))).text
    other = await create_tenant(db, queries, f"copy-{tenant.name}")
    other_tenant = Tenant(id=other.tenant_id, name="copy", keys={"admin": other.api_key})
    other_tenant.keys["write"] = (await create_api_key(db, queries, other.tenant_id, ["write"])).api_key
    await topic(client, other_tenant, "news", False)
    response = await client.post(
        "/v1/imports",
        params={"kind": "suppressions", "format": "csv"},
        content=exported.encode(),
        headers={**other_tenant.auth("write"), "Content-Type": "text/csv"},
    )
    assert response.status_code == 202, response.text
    hasher = AddressHasher(DerivedKeys.from_settings(settings).address_hash_key)
    assert (await run_import(pool, queries, hasher, other.tenant_id, response.json()["id"])).status == "done"
    again = (await client.get("/v1/suppressions/export", headers=other_tenant.auth("admin"))).text
    assert again == exported


async def test_the_export_streams_from_a_cursor_in_pieces(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    queries: Queries,
    pool: asyncpg.Pool,
    settings: Settings,
) -> None:
    body = b"address,reason\n" + b"".join(b"stream%05d@example.no,manual\n" % i for i in range(3000))
    response = await client.post(
        "/v1/imports",
        params={"kind": "suppressions", "format": "csv"},
        content=body,
        headers={**tenant.auth("write"), "Content-Type": "text/csv"},
    )
    hasher = AddressHasher(DerivedKeys.from_settings(settings).address_hash_key)
    assert (await run_import(pool, queries, hasher, tenant.id, response.json()["id"])).status == "done"
    pieces = [
        piece
        async for piece in export_suppressions(
            pool, queries, tenant.id, "csv", channel=None, reason=None, now=datetime.now(UTC), prefetch=7
        )
    ]
    assert len(pieces) >= 3 and all(len(p) < 70_000 for p in pieces)
    rows = list(csv.reader(io.StringIO(b"".join(pieces).decode())))
    assert len(rows) == 3001


async def test_no_exported_cell_runs_as_a_formula(client: Client, tenant: Tenant) -> None:
    """Every text cell a tenant or a recipient can set is made inert, not only the note."""
    await suppress(client, tenant, "=1+1@example.no", "unsubscribed", campaign="=1+1+cmd|' /C calc'!A0")
    await suppress(client, tenant, "-sum@example.no", "unsubscribed", campaign=" =HYPERLINK(x)")
    await suppress(client, tenant, "+4791234568", "unsubscribed", channel="sms", campaign="\uff1dSUM(A1)")
    response = await client.get(
        "/v1/suppressions/export", params={"format": "csv"}, headers=tenant.auth("read")
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["address"], r["topic"], r["campaign"]) for r in rows] == [
        ("'=1+1@example.no", "", "'=1+1+cmd|' /C calc'!A0"),
        ("'-sum@example.no", "", "' =HYPERLINK(x)"),
        ("'+4791234568", "", "'\uff1dSUM(A1)"),
    ]
    for row in rows:
        for cell in row.values():
            assert not cell or cell[0] not in "=+-@\t\r\n\uff1d\uff0b\uff0d\uff20", row
    assert response.headers["content-type"] == "text/csv; charset=utf-8"  # once
