"""One decision for one recipient everywhere: the check, the recipient view and the list-health
snapshot read the same decision input (suppress.decisions), the tenant's consent validity applies
at decision time, and an objection is a fact about the customer that reaches every address linked
to it, before or after."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.addresses import AddressHasher
from suppress.imports.runs import run_import
from suppress.intents import CustomerIntent, ObjectionIntent
from suppress.sql import Queries
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
        assert shown(await view(client, tenant, address, channel), "offers") == (False, None, "objected")
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
