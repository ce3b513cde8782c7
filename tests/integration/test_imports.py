"""Bulk imports: uploads through the API (raw and multipart), bad uploads, our layouts and the
providers' own exports, the write path they share with the API, errors by line, and a job that is
interrupted and resumed without writing anything twice."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from arq import create_pool as create_arq_pool
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.imports import resume_imports
from workers.imports import run_import as run_import_job

from suppress.addresses import AddressHasher
from suppress.config import Settings
from suppress.imports import runs, uploads
from suppress.imports.records import ImportOptions
from suppress.imports.runs import Progress, import_job_id, run_import
from suppress.imports.uploads import Imports
from suppress.queue import redis_settings
from suppress.sql import Queries
from tests.conftest import TEST_SECRET, Tenant
from tests.support import consent, decision, suppress, topic

Client = AsyncTestClient[Litestar]


async def upload(
    client: Client,
    tenant: Tenant,
    body: bytes,
    *,
    kind: str = "suppressions",
    fmt: str = "csv",
    scope: str = "write",
    **params: str,
) -> Any:
    return await client.post(
        "/v1/imports",
        params={"kind": kind, "format": fmt, **params},
        content=body,
        headers={**tenant.auth(scope), "Content-Type": "text/csv"},
    )


async def run(
    pool: asyncpg.Pool, queries: Queries, hasher: AddressHasher, tenant: Tenant, import_id: int, **kw: Any
) -> runs.RunResult:
    return await run_import(pool, queries, hasher, tenant.id, import_id, **kw)


async def imported(
    client: Client,
    tenant: Tenant,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
    body: bytes,
    **params: Any,
) -> dict[str, Any]:
    """Upload, run the job to the end, and return GET /v1/imports/{id}."""
    response = await upload(client, tenant, body, **params)
    assert response.status_code == 202, response.text
    import_id = response.json()["id"]
    assert response.headers["location"] == f"/v1/imports/{import_id}"
    result = await run(pool, queries, hasher, tenant, import_id, batch_rows=3)
    assert result.status == "done"
    view = await client.get(f"/v1/imports/{import_id}", headers=tenant.auth("read"))
    assert view.status_code == 200
    data: dict[str, Any] = view.json()
    return data


async def suppressions_of(db: asyncpg.Connection, tenant: Tenant) -> dict[str, list[tuple[str, str | None]]]:
    rows = await db.fetch(
        """SELECT r.address, s.reason, t.name AS topic FROM suppressions s
           JOIN recipients r USING (tenant_id, channel, address_hash)
           LEFT JOIN topics t ON t.id = s.topic_id
           WHERE s.tenant_id = $1 ORDER BY r.address, s.reason, t.name""",
        tenant.id,
    )
    out: dict[str, list[tuple[str, str | None]]] = {}
    for row in rows:
        out.setdefault(row["address"], []).append((row["reason"], row["topic"]))
    return out


# -- uploads ---------------------------------------------------------------------------------------


async def test_csv_import_writes_good_rows_and_reports_bad_ones_by_line(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
) -> None:
    await topic(client, tenant, "news", False)
    body = (
        b"address,reason,topic,note\n"
        b"ann@example.no,unsubscribed,,came by letter\n"  # 2
        b"not-an-address,manual,,\n"  # 3: bad address
        b"BOB@Example.no,complained,,\n"  # 4
        b"cat@example.no,unsubscribed,news,\n"  # 5
        b"cat@example.no,manual,,\n"  # 6: same recipient again in the batch
        b"dan@example.no,hard_bounced,news,\n"  # 7: only unsubscribed takes a topic
        b"eve@example.no,unsubscribed,nope,\n"  # 8: unknown topic
        b"fay@example.no,vanished,,\n"  # 9: unknown reason
        b"gus@example.no,manual\n"  # 10: a field short
        b"\n"  # 11: blank lines are skipped
        b'ida@example.no,manual,,"line one\nline two"\n'  # 12-13: a quoted field spanning lines
        b"ann@example.no,unsubscribed,,again\n"  # 14: already in force: unchanged
    )
    view = await imported(client, tenant, pool, queries, hasher, body)
    assert view["status"] == "done"
    assert (view["done"], view["unchanged"], view["failed"]) == (5, 1, 5)
    assert view["lines_total"] == 14 and view["lines_done"] == 14 and view["progress"] == 1.0
    lines = {e["line"]: e["error"] for e in view["errors"]}
    assert sorted(lines) == [3, 7, 8, 9, 10]
    assert "not a valid email address" in lines[3]
    assert "only `unsubscribed` can be limited to a topic" in lines[7]
    assert "no topic named 'nope'" in lines[8]
    assert "reason must be one of" in lines[9]
    assert "2 fields where the header has 4" in lines[10]
    assert view["errors"][0]["raw"] == "not-an-address,manual,,"
    assert await suppressions_of(db, tenant) == {
        "ann@example.no": [("unsubscribed", None)],
        "bob@example.no": [("complained", None)],
        "cat@example.no": [("manual", None), ("unsubscribed", "news")],
        "ida@example.no": [("manual", None)],
    }
    note = await db.fetchval(
        "SELECT s.note FROM suppressions s JOIN recipients r USING (tenant_id, channel, address_hash) "
        "WHERE s.tenant_id = $1 AND r.address = 'ida@example.no'",
        tenant.id,
    )
    assert note == "line one\nline two"
    # the same write path as the API: events with import provenance, and the next check denies
    events = await db.fetch(
        "SELECT kind, source, actor, data FROM events WHERE tenant_id = $1 ORDER BY id", tenant.id
    )
    assert [e["kind"] for e in events] == ["suppression_added"] * 5
    assert {e["source"] for e in events} == {"import"}
    data = json.loads(events[0]["data"]) if isinstance(events[0]["data"], str) else events[0]["data"]
    assert data["import_id"] == view["id"] and data["line"] == 2
    assert await decision(client, tenant, "bob@example.no") == (False, None, "complained")
    assert await decision(client, tenant, "cat@example.no", topic="news") == (False, None, "manual")
    # imported events are left to the effects sweeper like any other
    pending = await db.fetchval("SELECT count(*) FROM pending_effects WHERE tenant_id = $1", tenant.id)
    assert pending == 5


async def test_error_report_is_a_downloadable_csv(
    client: Client, tenant: Tenant, pool: asyncpg.Pool, queries: Queries, hasher: AddressHasher
) -> None:
    body = b"address,reason\n=cmd@x,manual\nok@example.no,manual\nbad@@x,manual\n"
    view = await imported(client, tenant, pool, queries, hasher, body)
    response = await client.get(view["error_report"], headers=tenant.auth("read"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["line", "error", "raw"]
    assert [r[0] for r in rows[1:]] == ["2", "4"]
    assert rows[1][2] == "'=cmd@x,manual"  # a spreadsheet does not run it as a formula


async def test_multipart_upload_and_ndjson(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
) -> None:
    body = (
        b'{"address": "+4791234567", "channel": "sms", "reason": "unsubscribed"}\n'
        b'{"address": "x@example.no", "reason": "manual", "surprise": 1}\n'
        b"not json\n"
        b'{"email": "y@example.no", "reason": "manual", "at": "2024-05-01T10:00:00+02:00"}\n'
    )
    response = await client.post(
        "/v1/imports",
        params={"kind": "suppressions", "format": "ndjson"},
        files={"file": ("legacy.ndjson", body, "application/x-ndjson")},
        data={"comment": "ignored"},
        headers=tenant.auth("write"),
    )
    assert response.status_code == 202, response.text
    assert response.json()["filename"] == "legacy.ndjson"
    import_id = response.json()["id"]
    assert (await run(pool, queries, hasher, tenant, import_id)).status == "done"
    view = (await client.get(f"/v1/imports/{import_id}", headers=tenant.auth("read"))).json()
    assert (view["done"], view["failed"]) == (2, 2)
    assert {e["line"]: e["error"] for e in view["errors"]}[2] == "unknown field 'surprise'"
    since = await db.fetchval(
        "SELECT s.created_at FROM suppressions s JOIN recipients r USING (tenant_id, channel, address_hash) "
        "WHERE s.tenant_id = $1 AND r.address = 'y@example.no'",
        tenant.id,
    )
    assert since == datetime(2024, 5, 1, 8, tzinfo=UTC)  # the row's own time, not the import's
    assert await decision(client, tenant, "+47 912 34 567", channel="sms") == (False, None, "unsubscribed")


@pytest.mark.parametrize(
    ("params", "body", "status", "code"),
    [
        ({"kind": "widgets", "format": "csv"}, b"address,reason\n", 400, "invalid_parameter"),
        ({"kind": "suppressions", "format": "xlsx"}, b"address,reason\n", 400, "invalid_parameter"),
        ({"kind": "consents", "format": "sendgrid"}, b"email\n", 422, "invalid_input"),
        ({"kind": "suppressions", "format": "sendgrid", "list": "blocks"}, b"email\n", 422, "invalid_input"),
        ({"kind": "suppressions", "format": "csv"}, b"", 422, "invalid_upload"),
        ({"kind": "suppressions", "format": "csv"}, b"\n\n", 422, "invalid_upload"),
        (
            {"kind": "suppressions", "format": "csv"},
            b"address,reason\nb\xe6d@example.no,manual\n",
            422,
            "invalid_upload",
        ),
        (
            {"kind": "suppressions", "format": "csv"},
            b"address,reason\nok@example.no,manual\n\xc3",
            422,
            "invalid_upload",
        ),
        (
            {"kind": "suppressions", "format": "csv"},
            b"addr,why\nx@example.no,manual\n",
            422,
            "invalid_upload",
        ),
        ({"kind": "suppressions", "format": "csv"}, b"address\nx@example.no\n", 422, "invalid_upload"),
        ({"kind": "consents", "format": "csv"}, b"address,topic\nx@example.no,\n", 422, "invalid_upload"),
        (
            {"kind": "suppressions", "format": "sendgrid"},
            b"email,created\nx@example.no,1\n",
            422,
            "invalid_upload",
        ),
        (
            {"kind": "suppressions", "format": "mailgun"},
            b"address,created_at\nx@example.no,\n",
            422,
            "invalid_upload",
        ),
        (
            {"kind": "suppressions", "format": "ses"},
            b'{"SuppressedDestinationSummaries": [{"EmailAddress": "a@b.no"}]}\n',
            422,
            "invalid_upload",
        ),
    ],
)
async def test_bad_uploads_are_refused_and_store_nothing(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    params: dict[str, str],
    body: bytes,
    status: int,
    code: str,
) -> None:
    response = await client.post(
        "/v1/imports",
        params=params,
        content=body,
        headers={**tenant.auth("write"), "Content-Type": "text/csv"},
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert await db.fetchval("SELECT count(*) FROM imports WHERE tenant_id = $1", tenant.id) == 0
    assert await db.fetchval("SELECT count(*) FROM import_chunks WHERE tenant_id = $1", tenant.id) == 0


async def test_too_large_upload_is_413_and_stores_nothing(
    client: Client, app: Litestar, tenant: Tenant, db: asyncpg.Connection
) -> None:
    service: Imports = app.state.imports
    limit = service.max_bytes
    service.max_bytes = 2 * runs.CHUNK_BYTES + 10  # two chunks are stored before it trips
    try:
        just_over = b"address,reason\n" + b"someone@example.no,manual\n" * (service.max_bytes // 26 + 10)
        response = await upload(client, tenant, just_over)
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "upload_too_large"
        far_over = just_over * 2  # refused on its Content-Length, unread
        assert (await upload(client, tenant, far_over)).status_code == 413
    finally:
        service.max_bytes = limit
    assert await db.fetchval("SELECT count(*) FROM imports WHERE tenant_id = $1", tenant.id) == 0
    assert await db.fetchval("SELECT count(*) FROM import_chunks WHERE tenant_id = $1", tenant.id) == 0


async def test_scopes_and_tenants_are_kept_apart(
    client: Client, tenant: Tenant, db: asyncpg.Connection, queries: Queries
) -> None:
    assert (await upload(client, tenant, b"address,reason\na@b.no,manual\n", scope="read")).status_code == 403
    assert (
        await upload(client, tenant, b"address,reason\na@b.no,manual\n", scope="check")
    ).status_code == 403
    created = await upload(client, tenant, b"address,reason\na@b.no,manual\n")
    import_id = created.json()["id"]
    from suppress.tenants import create_tenant

    other = await create_tenant(db, queries, f"other-{tenant.name}")
    headers = {"Authorization": f"Bearer {other.api_key}"}
    assert (await client.get(f"/v1/imports/{import_id}", headers=headers)).status_code == 404
    assert (await client.get(f"/v1/imports/{import_id}/errors", headers=headers)).status_code == 404
    assert (await client.get(f"/v1/imports/{import_id}")).status_code == 401


async def test_upload_is_stored_in_chunks_before_the_202_and_dropped_when_done(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 64 KiB chunks: two chunks from 5 000 rows (the same code path as 1 MiB chunks and 60 000 rows)
    monkeypatch.setattr(runs, "CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(uploads, "CHUNK_BYTES", 64 * 1024)
    body = b"address,reason\n" + b"".join(b"r%d@example.no,manual\n" % i for i in range(5_000))
    response = await upload(client, tenant, body, filename="big.csv")
    assert response.status_code == 202
    view = response.json()
    assert view["status"] == "queued" and view["bytes_total"] == len(body) and view["filename"] == "big.csv"
    stored = await db.fetch(
        "SELECT seq, length(data) AS n FROM import_chunks WHERE tenant_id = $1 ORDER BY seq", tenant.id
    )
    assert [r["seq"] for r in stored] == [0, 1] and sum(r["n"] for r in stored) == len(body)
    assert (await run(pool, queries, hasher, tenant, view["id"])).status == "done"
    done = (await client.get(f"/v1/imports/{view['id']}", headers=tenant.auth("read"))).json()
    assert (done["done"], done["failed"]) == (5_000, 0)
    assert await db.fetchval("SELECT count(*) FROM import_chunks WHERE tenant_id = $1", tenant.id) == 0


# -- providers' own exports ---------------------------------------------------------------------------


async def test_sendgrid_exports(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
) -> None:
    await topic(client, tenant, "offers", False)
    bounces = (
        b"email,created,reason,status\n"
        b'hard@example.no,1700000000,"550 5.1.1 The email account does not exist",5.1.1\n'
        b'soft@example.no,%d,"452 4.2.2 Mailbox full",4.2.2\n'
        % int(datetime.now(UTC).timestamp())
        + b'old-soft@example.no,1500000000,"452 4.2.2 Mailbox full",4.2.2\n'
    )
    view = await imported(client, tenant, pool, queries, hasher, bounces, fmt="sendgrid")
    assert (view["done"], view["unchanged"], view["failed"]) == (2, 1, 0)  # an old soft bounce has run out
    assert view["options"] == {"channel": "email"}
    spam = b"email,created,ip\nspam@example.no,2023-05-01 10:00:00,203.0.113.9\n"
    await imported(client, tenant, pool, queries, hasher, spam, fmt="sendgrid")
    unsubscribes = b"email,created\nunsub@example.no,1700000000\n"
    assert (await upload(client, tenant, unsubscribes, fmt="sendgrid")).status_code == 422  # which list?
    await imported(client, tenant, pool, queries, hasher, unsubscribes, fmt="sendgrid", list="unsubscribes")
    group = b"email,created\ngroup@example.no,1700000000\n"
    await imported(
        client,
        tenant,
        pool,
        queries,
        hasher,
        group,
        fmt="sendgrid",
        list="group_unsubscribes",
        topic="offers",
    )
    assert await suppressions_of(db, tenant) == {
        "group@example.no": [("unsubscribed", "offers")],
        "hard@example.no": [("hard_bounced", None)],
        "soft@example.no": [("soft_bounced", None)],
        "spam@example.no": [("complained", None)],
        "unsub@example.no": [("unsubscribed", None)],
    }
    row = await db.fetchrow(
        "SELECT e.occurred_at, e.personal FROM events e JOIN recipients r USING (tenant_id, channel, address_hash) "
        "WHERE e.tenant_id = $1 AND r.address = 'hard@example.no'",
        tenant.id,
    )
    assert row["occurred_at"] == datetime.fromtimestamp(1700000000, UTC)
    personal = row["personal"] if isinstance(row["personal"], dict) else json.loads(row["personal"])
    assert personal["evidence"]["status"] == "5.1.1" and personal["evidence"]["provider"] == "sendgrid"
    expires = await db.fetchval(
        "SELECT s.expires_at FROM suppressions s JOIN recipients r USING (tenant_id, channel, address_hash) "
        "WHERE s.tenant_id = $1 AND r.address = 'soft@example.no'",
        tenant.id,
    )
    assert expires is not None and expires > datetime.now(UTC) + timedelta(days=29)


async def test_mailgun_exports(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
) -> None:
    await topic(client, tenant, "news", False)
    bounces = (
        b"address,code,error,created_at\n"
        b'b1@example.no,550,"No such mailbox","Fri, 21 Oct 2011 11:02:55 UTC"\n'
        b'b2@example.no,,,"Fri, 21 Oct 2011 11:02:55 GMT"\n'
        b'b3@example.no,550,,"the day before yesterday"\n'
    )
    view = await imported(client, tenant, pool, queries, hasher, bounces, fmt="mailgun")
    assert (view["done"], view["failed"]) == (2, 1)
    assert "not a time" in view["errors"][0]["error"] and view["errors"][0]["line"] == 4
    unsubscribes = (
        b"address,tags,created_at\n"
        b"all@example.no,*,\n"
        b"news@example.no,news,\n"
        b"other@example.no,black-friday,\n"  # a tag that is not a topic: all topics
    )
    await imported(client, tenant, pool, queries, hasher, unsubscribes, fmt="mailgun")
    complaints = b"address,created_at\nc@example.no,\n"
    await imported(client, tenant, pool, queries, hasher, complaints, fmt="mailgun", list="complaints")
    assert await suppressions_of(db, tenant) == {
        "all@example.no": [("unsubscribed", None)],
        "b1@example.no": [("hard_bounced", None)],
        "b2@example.no": [("hard_bounced", None)],
        "c@example.no": [("complained", None)],
        "news@example.no": [("unsubscribed", "news")],
        "other@example.no": [("unsubscribed", None)],
    }


async def test_ses_exports(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
) -> None:
    cli_output = b"""{
    "SuppressedDestinationSummaries": [
        {
            "EmailAddress": "bounce@example.no",
            "Reason": "BOUNCE",
            "LastUpdateTime": "2020-04-08T19:39:44.373000+00:00"
        },
        {
            "EmailAddress": "complaint@example.no",
            "Reason": "COMPLAINT",
            "LastUpdateTime": 1586374784.373
        },
        {
            "EmailAddress": "odd@example.no",
            "Reason": "UNKNOWN",
            "LastUpdateTime": 1586374784
        }
    ],
    "NextToken": "ZXhhbXBsZQ=="
}
"""
    view = await imported(client, tenant, pool, queries, hasher, cli_output, fmt="ses")
    assert (view["done"], view["failed"]) == (2, 1)
    assert view["errors"][0]["line"] == 13 and "BOUNCE or COMPLAINT" in view["errors"][0]["error"]
    bulk_csv = b"csv1@example.no,BOUNCE\ncsv2@example.no, COMPLAINT\n"
    await imported(client, tenant, pool, queries, hasher, bulk_csv, fmt="ses")
    bulk_json = b'{"emailAddress": "json1@example.no", "reason": "BOUNCE"}\n'
    await imported(client, tenant, pool, queries, hasher, bulk_json, fmt="ses")
    with_header = b"EmailAddress,Reason,LastUpdateTime\nhdr@example.no,COMPLAINT,2021-01-01T00:00:00Z\n"
    await imported(client, tenant, pool, queries, hasher, with_header, fmt="ses")
    assert await suppressions_of(db, tenant) == {
        "bounce@example.no": [("hard_bounced", None)],
        "complaint@example.no": [("complained", None)],
        "csv1@example.no": [("hard_bounced", None)],
        "csv2@example.no": [("complained", None)],
        "hdr@example.no": [("complained", None)],
        "json1@example.no": [("hard_bounced", None)],
    }


# -- consents and customers ---------------------------------------------------------------------------


async def test_consents_and_customers_go_through_the_same_rules(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
) -> None:
    await topic(client, tenant, "club", True)
    await suppress(client, tenant, "back@example.no", "unsubscribed")
    consents = (
        b"address,topic,partners,granted_at,notice_version,evidence,source\n"
        b'back@example.no,,yes,2099-01-01T00:00:00Z,v1,"{""form"": ""signup""}",\n'  # future: refused
        + f"back@example.no,,yes,{datetime.now(UTC).isoformat()},v1,,\n".encode()  # re-opt-in lifts
        + b"new@example.no,club,false,2024-01-01T00:00:00Z,,,shop_checkout\n"
        b"new@example.no,club,false,2024-01-01T00:00:00Z,,,shop_checkout\n"  # same consent again
        b"nodate@example.no,,,,,,\n"
    )
    view = await imported(client, tenant, pool, queries, hasher, consents, kind="consents", fmt="csv")
    assert (view["done"], view["unchanged"], view["failed"]) == (2, 1, 2)
    errors = {e["line"]: e["error"] for e in view["errors"]}
    assert "lies in the future" in errors[2] and "granted_at is missing" in errors[6]
    assert await decision(client, tenant, "back@example.no") == (True, "consent", None)
    assert await decision(client, tenant, "back@example.no", offer="partner") == (True, "consent", None)
    assert await decision(client, tenant, "new@example.no", topic="club") == (True, "consent", None)
    lifted = await db.fetchval(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND kind = 'suppression_lifted'", tenant.id
    )
    assert lifted == 1
    source = await db.fetchval(
        "SELECT k.source FROM consents k JOIN recipients r USING (tenant_id, channel, address_hash) "
        "WHERE k.tenant_id = $1 AND r.address = 'new@example.no'",
        tenant.id,
    )
    assert source == "shop_checkout"
    recent = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    customers = (
        b"customer_ref,address,collected_in_sale,event,at\n"
        + f"c-1,buyer@example.no,true,purchase,{recent}\n".encode()
        + f"c-1,buyer2@example.no,false,purchase,{recent}\n".encode()
        + b"c-2,member@example.no,true,agreement_started,2020-01-01T00:00:00Z\n"
        b"c-2,member@example.no,true,agreement_ended,2021-01-01T00:00:00Z\n"
        b"c-3,x@example.no,true,refund,2021-01-01T00:00:00Z\n"
    )
    view = await imported(client, tenant, pool, queries, hasher, customers, kind="customers", fmt="csv")
    assert (view["done"], view["failed"]) == (4, 1)
    assert await decision(client, tenant, "buyer@example.no", topic="club") == (
        True,
        "customer_relationship",
        None,
    )
    assert await decision(client, tenant, "buyer2@example.no", topic="club") == (False, None, "no_basis")
    assert await decision(client, tenant, "member@example.no", topic="club") == (False, None, "no_basis")
    again = await imported(client, tenant, pool, queries, hasher, customers, kind="customers", fmt="csv")
    assert (again["done"], again["unchanged"]) == (0, 4)  # nothing new: no events appended


async def test_an_imported_unsubscribe_ends_consent_as_the_api_does(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
) -> None:
    await consent(client, tenant, "via-api@example.no")
    await consent(client, tenant, "via-import@example.no")
    await suppress(client, tenant, "via-api@example.no", "unsubscribed")
    await imported(
        client, tenant, pool, queries, hasher, b"address,reason\nvia-import@example.no,unsubscribed\n"
    )
    rows = await db.fetch(
        """SELECT address, suppression_reasons, suppression_expires, unsubscribed_topics, consent_topics,
                  partner_consent_topics FROM recipients WHERE tenant_id = $1 ORDER BY address""",
        tenant.id,
    )
    api, imp = (dict(r.items()) for r in rows)
    assert {k: v for k, v in api.items() if k != "address"} == {
        k: v for k, v in imp.items() if k != "address"
    }
    assert imp["consent_topics"] == [] and imp["suppression_reasons"] == ["unsubscribed"]
    ended = await db.fetch(
        "SELECT data->'consents_ended' AS ended FROM events WHERE tenant_id = $1 AND kind LIKE 'suppression%' ORDER BY id",
        tenant.id,
    )
    assert [json.loads(r["ended"]) if isinstance(r["ended"], str) else r["ended"] for r in ended] == [
        [0],
        [0],
    ]


# -- the job: batches, checkpoints, interruption ----------------------------------------------------------


def _rows(n: int, bad_every: int = 7) -> bytes:
    lines = ["address,reason"]
    for i in range(1, n + 1):
        lines.append(f"bad{i}" if i % bad_every == 0 else f"user{i}@example.no")
        lines[-1] += ",manual"
    return ("\n".join(lines) + "\n").encode()


async def _counts(db: asyncpg.Connection, tenant: Tenant) -> tuple[int, int, int]:
    return (
        await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id),
        await db.fetchval("SELECT count(DISTINCT address_hash) FROM events WHERE tenant_id = $1", tenant.id),
        await db.fetchval("SELECT count(*) FROM suppressions WHERE tenant_id = $1", tenant.id),
    )


async def test_a_job_killed_mid_batch_resumes_without_writing_twice(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
) -> None:
    response = await upload(client, tenant, _rows(100))
    import_id = response.json()["id"]
    seen: list[Progress] = []

    class Killed(Exception):
        pass

    def kill_after_two(progress: Progress) -> None:
        seen.append(progress)
        if len(seen) == 2:
            raise Killed  # after the second batch committed

    with pytest.raises(Killed):
        await run(pool, queries, hasher, tenant, import_id, batch_rows=10, on_progress=kill_after_two)
    assert await _counts(db, tenant) == (18, 18, 18)  # two batches of 10 rows, 2 of them bad
    state = await db.fetchrow("SELECT status, lines_done, rows_failed FROM imports WHERE id = $1", import_id)
    assert (state["status"], state["lines_done"], state["rows_failed"]) == ("running", 21, 2)

    # a kill inside the third batch's transaction: its writes roll back with it
    broken = Queries()
    for name in Queries.declared():
        setattr(broken, name, getattr(queries, name))
    broken.checkpoint_import = (
        "SELECT 1 / (0 * $1::integer) FROM (SELECT $2::bigint, $3::text, $4::interval, $5::bigint, "
        "$6::bigint, $7::bigint, $8::bigint, $9::bigint) AS args"
    )
    with pytest.raises(asyncpg.DivisionByZeroError):
        await run(pool, broken, hasher, tenant, import_id, batch_rows=10)
    assert await _counts(db, tenant) == (18, 18, 18)

    # a worker that died holding the lease: nobody else runs the import until the lease runs out
    await db.execute(
        "UPDATE imports SET lease_token = 'dead', lease_until = now() + interval '1 minute' WHERE id = $1",
        import_id,
    )
    assert (await run(pool, queries, hasher, tenant, import_id)).status == "busy"
    await db.execute("UPDATE imports SET lease_until = now() - interval '1 second' WHERE id = $1", import_id)
    result = await run(pool, queries, hasher, tenant, import_id, batch_rows=10)
    assert result.status == "done"
    assert await _counts(db, tenant) == (86, 86, 86)  # every good row exactly once
    view = (await client.get(f"/v1/imports/{import_id}", headers=tenant.auth("read"))).json()
    assert (view["done"], view["failed"]) == (86, 14)
    assert [e["line"] for e in view["errors"]] == [i + 1 for i in range(7, 101, 7)]  # each once
    assert (await run(pool, queries, hasher, tenant, import_id)).status == "finished"


@pytest.mark.e2e  # runs a real process
async def test_a_job_killed_by_sigkill_resumes_from_its_checkpoint(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    settings: Settings,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
) -> None:
    import_id = (await upload(client, tenant, _rows(60, bad_every=1000))).json()["id"]
    script = f"""
import asyncio, os, signal
from suppress.addresses import AddressHasher
from suppress.config import DerivedKeys, Settings
from suppress.db import create_pool
from suppress.imports.runs import run_import
from suppress.sql import load_queries

async def main():
    settings = Settings(database_url={settings.database_url!r}, secret={TEST_SECRET!r})
    pool = await create_pool(settings.database_url, size=2)
    hasher = AddressHasher(DerivedKeys.from_settings(settings).address_hash_key)
    def progress(p):
        if p.done >= 20:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind
    await run_import(pool, load_queries(), hasher, {tenant.id}, {import_id}, batch_rows=10, on_progress=progress)

asyncio.run(main())
"""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == -9, done.stderr.decode()
    assert await _counts(db, tenant) == (20, 20, 20)
    assert (await run(pool, queries, hasher, tenant, import_id)).status == "busy"  # its lease is still live
    await db.execute("UPDATE imports SET lease_until = now() - interval '1 second' WHERE id = $1", import_id)
    assert (await run(pool, queries, hasher, tenant, import_id, batch_rows=10)).status == "done"
    assert await _counts(db, tenant) == (60, 60, 60)


async def test_worker_job_runs_in_slices_and_the_cron_picks_up_lost_ones(
    client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    settings: Settings,
    pool: asyncpg.Pool,
    queries: Queries,
) -> None:
    import_id = (await upload(client, tenant, _rows(12_000, bad_every=10**9))).json()["id"]
    redis = await create_arq_pool(redis_settings(settings.require_redis_url()))
    try:
        ctx: dict[str, Any] = {
            "pool": pool,
            "queries": queries,
            "settings": settings,
            "redis": redis,
            "import_slice_seconds": 0,  # one batch per slice
        }
        assert await run_import_job(ctx, tenant.id, import_id) == "more"
        row = await db.fetchrow(
            "SELECT bytes_done, rows_done, lease_token FROM imports WHERE id = $1", import_id
        )
        assert row["rows_done"] == runs.BATCH_ROWS and row["lease_token"] is None
        next_job = import_job_id(tenant.id, import_id, row["bytes_done"])
        assert await redis.exists(f"arq:job:{next_job}")
        # the enqueue got lost: the cron finds the import idle and enqueues it from its checkpoint
        await redis.delete(f"arq:job:{next_job}")
        await db.execute(
            "UPDATE imports SET updated_at = now() - interval '5 minutes' WHERE id = $1", import_id
        )
        assert await resume_imports(ctx) >= 1
        assert await redis.exists(f"arq:job:{next_job}")
        ctx["import_slice_seconds"] = 60
        assert await run_import_job(ctx, tenant.id, import_id) == "done"
    finally:
        await redis.aclose()
    assert await db.fetchval("SELECT count(*) FROM suppressions WHERE tenant_id = $1", tenant.id) == 12_000


@pytest.mark.e2e  # runs a real process
async def test_the_cli_imports_a_file_with_progress(
    tmp_path: Path, tenant: Tenant, db: asyncpg.Connection, settings: Settings
) -> None:
    path = tmp_path / "bounces.csv"
    path.write_bytes(
        b"email,created,reason,status\n"
        + b"".join(b"cli%d@example.no,1700000000,x,5.1.1\n" % i for i in range(12_000))
    )
    env = {
        **os.environ,
        "SUPPRESS_DATABASE_URL": settings.require_database_url(),
        "SUPPRESS_SECRET": TEST_SECRET,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "suppress.cli",
            "import",
            str(path),
            "--kind",
            "suppressions",
            "--format",
            "sendgrid",
            "--tenant",
            tenant.name,
            "--json",
        ],
        capture_output=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["status"] == "done" and summary["done"] == 12_000 and summary["failed"] == 0
    progress = done.stderr.decode().splitlines()
    assert progress[0].startswith("stored bounces.csv as import")
    assert any("100.0%" in line and "12,000 rows" in line for line in progress)  # plain lines, no \r
    assert all("\r" not in line for line in progress)
    reasons = await db.fetchval(
        "SELECT count(*) FROM suppressions WHERE tenant_id = $1 AND reason = 'hard_bounced'", tenant.id
    )
    assert reasons == 12_000


def test_options_are_checked_before_anything_is_read() -> None:
    from suppress.errors import InvalidInput
    from suppress.imports.uploads import check_options

    with pytest.raises(InvalidInput, match="kind=suppressions"):
        check_options(ImportOptions(kind="customers", format="mailgun"))
    with pytest.raises(InvalidInput, match="list for format=mailgun"):
        check_options(ImportOptions(kind="suppressions", format="mailgun", list="spam_reports"))
    with pytest.raises(InvalidInput, match="topic does not apply"):
        check_options(ImportOptions(kind="customers", format="csv", topic="news"))
    check_options(ImportOptions(kind="suppressions", format="ses"))


async def test_a_nul_character_in_evidence_fails_its_row_only(
    client: Client, tenant: Tenant, pool: asyncpg.Pool, queries: Queries, hasher: AddressHasher
) -> None:
    # PostgreSQL's jsonb stores no U+0000: without the row check the whole batch failed in SQL.
    rows = [
        {"address": "nul@example.no", "granted_at": "2024-01-01T00:00:00Z", "evidence": {"a\u0000": 1}},
        {"address": "fine@example.no", "granted_at": "2024-01-01T00:00:00Z", "evidence": {"form": "x"}},
    ]
    body = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    view = await imported(client, tenant, pool, queries, hasher, body, kind="consents", fmt="ndjson")
    assert (view["done"], view["failed"]) == (1, 1)
    assert "NUL" in view["errors"][0]["error"] and view["errors"][0]["line"] == 1
    assert await decision(client, tenant, "fine@example.no") == (True, "consent", None)
