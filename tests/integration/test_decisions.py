"""One decision for one recipient everywhere: the check, the recipient view and the list-health
snapshot read the same decision input (suppress.decisions), the tenant's consent validity applies
at decision time, and an objection is a fact about the customer that reaches every address linked
to it, before or after."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.addresses import AddressHasher
from suppress.imports.runs import run_import
from suppress.intents import ConsentIntent, CustomerIntent, Intent, ObjectionIntent, SuppressIntent
from suppress.migrate import migrate, migration_files
from suppress.sql import Queries
from suppress.tenants import create_api_key, create_tenant
from suppress.writes import Writer, lock, recipients_of, rewrite, write_transaction
from tests.conftest import Tenant, post_json
from tests.support import consent, customer, decision, topic

Client = AsyncTestClient[Litestar]


async def view(client: Client, tenant: Tenant, address: str, channel: str = "email") -> dict[str, Any]:
    response = await client.get(f"/v1/recipients/{channel}/{address}", headers=tenant.auth("read"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def shown(body: dict[str, Any], topic_name: str | None = None) -> tuple[bool, str | None, str | None]:
    [row] = [d for d in body["marketing"] if d["topic"] == topic_name]
    return row["allowed"], row.get("basis"), row.get("reason")


async def set_validity(client: Client, tenant: Tenant, days: int | None) -> None:
    response = await client.patch(
        "/v1/settings", headers=tenant.auth("admin"), json={"consent_validity_days": days}
    )
    assert response.status_code == 200, response.text


# -- consent validity at decision time ---------------------------------------------------------------


async def test_the_recipient_view_shows_a_lapsed_consent_as_the_check_does(
    client: Client, tenant: Tenant
) -> None:
    await set_validity(client, tenant, 30)
    await consent(
        client, tenant, "lapsed@example.no", granted_at=(datetime.now(UTC) - timedelta(days=31)).isoformat()
    )
    assert await decision(client, tenant, "lapsed@example.no") == (False, None, "no_basis")
    assert shown(await view(client, tenant, "lapsed@example.no")) == (False, None, "no_basis")


async def test_changing_the_validity_applies_to_consents_given_before(client: Client, tenant: Tenant) -> None:
    granted = datetime.now(UTC) - timedelta(days=40)
    await consent(client, tenant, "older@example.no", granted_at=granted.isoformat())
    assert await decision(client, tenant, "older@example.no") == (True, "consent", None)
    await set_validity(client, tenant, 30)
    assert await decision(client, tenant, "older@example.no") == (False, None, "no_basis")
    assert shown(await view(client, tenant, "older@example.no")) == (False, None, "no_basis")
    await set_validity(client, tenant, 60)
    assert await decision(client, tenant, "older@example.no") == (True, "consent", None)
    await set_validity(client, tenant, None)
    assert await decision(client, tenant, "older@example.no") == (True, "consent", None)


# -- objection ---------------------------------------------------------------------------------------


async def object_to(client: Client, tenant: Tenant, ref: str) -> dict[str, Any]:
    response = await client.post(f"/v1/customers/{ref}/object", headers=tenant.auth("write"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_objection_covers_addresses_linked_after_it(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "offers", True)
    await customer(client, tenant, "first@example.no", "purchase", ref="OBJ-LATER")
    assert await decision(client, tenant, "first@example.no", topic="offers") == (
        True,
        "customer_relationship",
        None,
    )
    await object_to(client, tenant, "OBJ-LATER")
    # a later purchase brings a new email address and a phone number
    await customer(client, tenant, "second@example.no", "purchase", ref="OBJ-LATER")
    await customer(client, tenant, "+4791112222", "purchase", ref="OBJ-LATER", channel="sms")
    linked = (("second@example.no", "email"), ("+4791112222", "sms"), ("first@example.no", "email"))
    for address, channel in linked:
        for topic_name in ("offers", None):
            assert await decision(client, tenant, address, topic=topic_name, channel=channel) == (
                False,
                None,
                "objected",
            ), (address, topic_name)
        body = await view(client, tenant, address, channel)
        assert shown(body, "offers") == (False, None, "objected") and body["objected_at"] is not None
    # a receipt is no direct marketing: an objection does not stop it
    assert await decision(client, tenant, "second@example.no", purpose="transactional") == (
        True,
        "transactional",
        None,
    )


async def test_an_objection_covers_addresses_linked_by_an_import(
    client: Client, tenant: Tenant, pool: asyncpg.Pool, queries: Queries, hasher: AddressHasher
) -> None:
    await topic(client, tenant, "offers", True)
    await customer(client, tenant, "known@example.no", "purchase", ref="OBJ-IMPORT")
    await object_to(client, tenant, "OBJ-IMPORT")
    at = datetime.now(UTC).isoformat()
    body = (
        "customer_ref,channel,address,collected_in_sale,event,at\n"
        f"OBJ-IMPORT,email,imported@example.no,true,agreement_started,{at}\n"
    )
    response = await client.post(
        "/v1/imports",
        params={"kind": "customers", "format": "csv"},
        content=body.encode(),
        headers={**tenant.auth("write"), "Content-Type": "text/csv"},
    )
    assert response.status_code == 202, response.text
    assert (await run_import(pool, queries, hasher, tenant.id, response.json()["id"])).status == "done"
    assert await decision(client, tenant, "imported@example.no", topic="offers") == (False, None, "objected")


async def test_a_consent_given_after_the_objection_ends_it_for_that_scope_only(
    client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", False)
    await topic(client, tenant, "offers", True)
    await customer(client, tenant, "again@example.no", "agreement_started", ref="OBJ-AGAIN")
    await customer(client, tenant, "+4791113333", "agreement_started", ref="OBJ-AGAIN", channel="sms")
    await consent(client, tenant, "again@example.no", topic="offers")  # before: ends with the objection
    await object_to(client, tenant, "OBJ-AGAIN")
    assert await decision(client, tenant, "again@example.no", topic="offers") == (False, None, "objected")
    # the person subscribes to the newsletter again, on this address only
    await consent(client, tenant, "again@example.no", topic="news")
    assert await decision(client, tenant, "again@example.no", topic="news") == (True, "consent", None)
    assert await decision(client, tenant, "again@example.no", topic="news", offer="partner") == (
        False,
        None,
        "objected",
    )
    assert await decision(client, tenant, "again@example.no", topic="offers") == (False, None, "objected")
    assert await decision(client, tenant, "again@example.no") == (False, None, "objected")
    assert await decision(client, tenant, "+4791113333", channel="sms", topic="news") == (
        False,
        None,
        "objected",
    )
    assert shown(await view(client, tenant, "again@example.no"), "news") == (True, "consent", None)
    # withdrawing that consent puts the objection back in force for it
    await post_json(
        client,
        tenant,
        "/v1/consents/withdraw",
        {"channel": "email", "address": "again@example.no", "topic": "news"},
    )
    assert await decision(client, tenant, "again@example.no", topic="news") == (False, None, "objected")


async def test_only_an_admin_with_a_note_lifts_an_objection(
    client: Client, tenant: Tenant, db: asyncpg.Connection
) -> None:
    await topic(client, tenant, "offers", True)
    await customer(client, tenant, "lift@example.no", "agreement_started", ref="OBJ-LIFT")
    await consent(client, tenant, "lift@example.no", topic="offers")
    await object_to(client, tenant, "OBJ-LIFT")
    path = "/v1/customers/OBJ-LIFT/objection/lift"
    note = {"note": "Customer asked in writing to hear from us again (case 4411)"}
    assert (await client.post(path, json=note, headers=tenant.auth("write"))).status_code == 403
    for bad in ({}, {"note": ""}, {"note": "   "}, {"note": "x", "extra": 1}):
        response = await client.post(path, json=bad, headers=tenant.auth("admin"))
        assert response.status_code == 422, (bad, response.text)
    missing = await client.post("/v1/customers/NOPE/objection/lift", json=note, headers=tenant.auth("admin"))
    assert missing.status_code == 404
    assert await decision(client, tenant, "lift@example.no", topic="offers") == (False, None, "objected")

    lifted = await client.post(path, json=note, headers=tenant.auth("admin"))
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["changed"] is True and lifted.json()["addresses"] == 1
    # the consent given before the objection counts again
    assert await decision(client, tenant, "lift@example.no", topic="offers") == (True, "consent", None)
    assert await decision(client, tenant, "lift@example.no") == (False, None, "no_basis")
    event = await db.fetchrow(
        "SELECT kind, actor, personal FROM events WHERE tenant_id = $1 AND id = $2",
        tenant.id,
        lifted.json()["event_ids"][0],
    )
    assert event is not None and event["kind"] == "objection_lifted" and "case 4411" in event["personal"]
    again = await client.post(path, json=note, headers=tenant.auth("admin"))
    assert again.status_code == 200 and again.json()["changed"] is False and again.json()["event_ids"] == []


async def test_an_objection_reaches_a_link_committed_while_it_waited(
    client: Client, tenant: Tenant, pool: asyncpg.Pool, queries: Queries, hasher: AddressHasher
) -> None:
    """A purchase linking a new address holds the customer row when the objection comes; the
    objection waits for it, then finds the new link and rewrites its projection too."""
    await topic(client, tenant, "offers", True)
    await customer(client, tenant, "race-a@example.no", "purchase", ref="OBJ-RACE")
    digest = hasher.hash("email", "race-b@example.no")
    intent = CustomerIntent(
        customer_ref="OBJ-RACE",
        channel="email",
        address_hash=digest,
        address="race-b@example.no",
        collected_in_sale=True,
        event="purchase",
        at=datetime.now(UTC),
        source="test",
        actor=None,
    )
    writer = Writer(pool, queries)
    keys = recipients_of([intent])
    async with pool.acquire() as conn, write_transaction(conn):
        await lock(conn, queries, tenant.id, keys)
        await writer.apply_in(conn, tenant.id, [intent])
        await rewrite(conn, queries, tenant.id, keys)
        # (the test client blocks this loop while it waits: call the write path itself)
        objection = asyncio.ensure_future(
            writer.object_customer(
                tenant.id,
                ObjectionIntent(
                    customer_ref="OBJ-RACE", objected=True, at=datetime.now(UTC), source="test", actor=None
                ),
            )
        )
        await asyncio.sleep(0.5)
        assert not objection.done()  # waiting for the customer row
    result = await objection
    assert result.changed and result.addresses == 2
    assert await decision(client, tenant, "race-b@example.no", topic="offers") == (False, None, "objected")


# -- the recipient view and the check agree, on random states ----------------------------------------

REASONS = ("unsubscribed", "complained", "hard_bounced", "soft_bounced", "manual")
SCOPES = (None, "news", "offers")  # news: no soft opt-in; offers: soft opt-in


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    """A recipient's history, with times in days before now (expiries: days after, or before)."""
    linked = draw(st.booleans())
    return {
        "channel": draw(st.sampled_from(["email", "sms"])),
        "validity": draw(st.none() | st.sampled_from([1, 30, 365])),
        "consents": draw(
            st.lists(
                st.tuples(st.sampled_from(SCOPES), st.booleans(), st.integers(0, 400)),
                max_size=3,
                unique_by=lambda c: c[0],
            )
        ),
        "customer": draw(
            st.tuples(st.sampled_from(["purchase", "agreement_started"]), st.integers(0, 800), st.booleans())
        )
        if linked
        else None,
        "suppressions": draw(
            st.lists(
                st.tuples(st.sampled_from(REASONS), st.sampled_from(SCOPES), st.integers(-5, 5)),
                max_size=2,
            )
        ),
        "objected": draw(st.none() | st.integers(0, 400)) if linked else None,
    }


async def write_history(
    writer: Writer, tenant_id: int, topic_ids: dict[str | None, int], digest: bytes, address: str,
    history: dict[str, Any], now: datetime,
) -> None:  # fmt: skip
    """The history through the one write path (any times, as imports and providers may give them)."""
    channel, ref = history["channel"], f"C-{digest.hex()[:16]}"
    intents: list[Intent] = []
    if history["customer"] is not None:
        event, ago, collected = history["customer"]
        intents.append(
            CustomerIntent(customer_ref=ref, channel=channel, address_hash=digest, address=address,
                           collected_in_sale=collected, event=event, at=now - timedelta(days=ago),
                           source="test", actor=None)
        )  # fmt: skip
    for scope, partners, ago in history["consents"]:
        intents.append(
            ConsentIntent(channel=channel, address_hash=digest, address=address, topic_id=topic_ids[scope],
                          granted_at=now - timedelta(days=ago), source="test", actor=None, partners=partners)
        )  # fmt: skip
    for reason, scope, days in history["suppressions"]:
        lapses = reason in ("soft_bounced", "manual")
        intents.append(
            SuppressIntent(channel=channel, address_hash=digest, address=address,
                           topic_id=topic_ids[scope] if reason == "unsubscribed" else 0, reason=reason,
                           occurred_at=now - timedelta(days=6), source="test", actor=None,
                           expires_at=now + timedelta(days=days, minutes=1) if lapses else None)
        )  # fmt: skip
    await writer.apply(tenant_id, intents)
    if history["objected"] is not None:
        at = now - timedelta(days=history["objected"], hours=1)
        objection = ObjectionIntent(customer_ref=ref, objected=True, at=at, source="test", actor=None)
        assert (await writer.object_customer(tenant_id, objection)).changed


@pytest.fixture(scope="module")
async def agreeing(db: asyncpg.Connection, queries: Queries) -> tuple[Tenant, dict[str | None, int]]:
    """One tenant for every example (each writes to addresses of its own), with the two topics."""
    name = f"tenant-{secrets.token_hex(4)}"
    admin = await create_tenant(db, queries, name)
    made = Tenant(id=admin.tenant_id, name=name, keys={"admin": admin.api_key})
    for scope in ("check", "read"):
        made.keys[scope] = (await create_api_key(db, queries, admin.tenant_id, [scope])).api_key
    topic_ids: dict[str | None, int] = {None: 0}
    for name_, soft in (("news", False), ("offers", True)):
        topic_ids[name_] = await db.fetchval(
            "INSERT INTO topics (tenant_id, name, soft_opt_in) VALUES ($1, $2, $3) RETURNING id",
            made.id, name_, soft,
        )  # fmt: skip
    return made, topic_ids


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
async def test_the_recipient_view_decides_as_the_check_does(
    client: Client,
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
    agreeing: tuple[Tenant, dict[str | None, int]],
    history: dict[str, Any],
) -> None:
    tenant, topic_ids = agreeing
    n = next(_numbers)
    channel = history["channel"]
    address = f"prop{n}@example.no" if channel == "email" else f"+479{n:07d}"
    await set_validity(client, tenant, history["validity"])
    await write_history(Writer(pool, queries), tenant.id, topic_ids, hasher.hash(channel, address), address,
                        history, datetime.now(UTC))  # fmt: skip
    body = await view(client, tenant, address, channel)
    for scope in SCOPES:
        checked = await decision(client, tenant, address, channel=channel, topic=scope)
        assert shown(body, scope) == checked, (scope, history)


_numbers = itertools.count(1)


async def test_openapi_documents_the_objection_and_its_lift(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    lift = schema["paths"]["/v1/customers/{customer_ref}/objection/lift"]["post"]
    assert "admin" in lift["description"] and "note" in lift["description"]
    assert "objected" in schema["paths"]["/v1/customers/{customer_ref}/object"]["post"]["description"]
    assert schema["components"]["schemas"]["LiftObjectionIn"]["required"] == ["note"]
    reasons = schema["components"]["schemas"]["CheckResult"]["properties"]["reason"]
    assert "objected" in str(reasons)


async def test_the_migration_carries_objections_and_consent_times_over(server_database_url: str) -> None:
    """Objections recorded before (as `objected` events per address) become the customer's, and
    reach its addresses; the projection learns when each consent was given."""
    name = f"suppress_decisions_migration_{os.getpid()}"
    admin = await asyncpg.connect(server_database_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(server_database_url.rsplit("/", 1)[0] + "/" + name)
    try:
        files = migration_files()
        [ours] = [version for version, file_name, _ in files if file_name == "decision_inputs"]
        with tempfile.TemporaryDirectory() as before:
            for version, _, path in files:
                if version < ours:
                    (Path(before) / path.name).write_text(path.read_text())
            await migrate(conn, Path(before))
        tenant_id = await conn.fetchval("INSERT INTO tenants (name) VALUES ('old') RETURNING id")
        objected = datetime(2026, 3, 1, tzinfo=UTC)
        granted = datetime(2026, 2, 1, tzinfo=UTC)
        await conn.execute(
            "INSERT INTO customers (tenant_id, customer_ref) VALUES ($1, 'OLD-1'), ($1, 'OLD-2')", tenant_id
        )
        for n, ref in ((1, "OLD-1"), (2, "OLD-1"), (3, "OLD-2")):
            digest = bytes([n]) * 32
            await conn.execute(
                "INSERT INTO recipients (tenant_id, channel, address_hash, consent_topics) VALUES ($1, 'email', $2, '{0}')",
                tenant_id, digest,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO customer_addresses (tenant_id, customer_ref, channel, address_hash, collected_in_sale) "
                "VALUES ($1, $2, 'email', $3, true)",
                tenant_id, ref, digest,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO consents (tenant_id, channel, address_hash, topic_id, source, granted_at, event_id) "
                "VALUES ($1, 'email', $2, 0, 'form', $3, $4)",
                tenant_id, digest, granted, n,
            )  # fmt: skip
        await conn.execute(
            """INSERT INTO events (tenant_id, channel, address_hash, kind, source, occurred_at, data)
               VALUES ($1, 'email', $2, 'objected', 'api', $3, $4)""",
            tenant_id, bytes([1]) * 32, objected, json.dumps({"customer_ref": "OLD-1", "via": "objection"}),
        )  # fmt: skip
        await migrate(conn)
        customers = dict(await conn.fetch("SELECT customer_ref, objected_at FROM customers ORDER BY 1"))
        assert customers == {"OLD-1": objected, "OLD-2": None}
        rows = await conn.fetch(
            "SELECT address_hash, objected_at, consent_granted FROM recipients ORDER BY 1"
        )
        assert [(r["objected_at"], r["consent_granted"]) for r in rows] == [
            (objected, [granted]),
            (objected, [granted]),
            (None, [granted]),
        ]
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
