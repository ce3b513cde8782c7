"""The write API and the recipient read, through HTTP, checked against the rows it leaves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Tenant, post_json
from tests.support import check, consent, customer, decision, suppress, topic

Client = AsyncTestClient[Litestar]


async def ledger(db: asyncpg.Connection, tenant: Tenant) -> list[tuple[str, dict[str, Any]]]:
    """Each event's kind and its data with the personal fields merged back in."""
    rows = await db.fetch(
        "SELECT kind, data || coalesce(personal, '{}') AS data FROM events WHERE tenant_id = $1 ORDER BY id",
        tenant.id,
    )
    return [(r["kind"], json.loads(r["data"])) for r in rows]


async def test_topic_create_then_update(client: Client, tenant: Tenant) -> None:
    first = await client.post(
        "/v1/topics", json={"name": "news", "soft_opt_in": False}, headers=tenant.auth("write")
    )
    again = await client.post(
        "/v1/topics", json={"name": "news", "soft_opt_in": True}, headers=tenant.auth("write")
    )
    assert (first.status_code, again.status_code) == (201, 200)
    listed = (await client.get("/v1/topics", headers=tenant.auth("read"))).json()
    assert [(t["name"], t["soft_opt_in"]) for t in listed] == [("news", True)]


async def test_suppression_appends_event_and_updates_projection(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    result = await post_json(
        client,
        tenant,
        "/v1/suppressions",
        {
            "channel": "email",
            "address": " Kari@Example.NO ",
            "reason": "manual",
            "note": "asked by phone",
        },
    )
    assert result["address"] == "kari@example.no" and result["event_id"] > 0
    row = await db.fetchrow(
        "SELECT address, suppression_reasons FROM recipients WHERE tenant_id = $1", tenant.id
    )
    assert (
        row is not None and row["address"] == "kari@example.no" and row["suppression_reasons"] == ["manual"]
    )
    [(kind, data)] = await ledger(db, tenant)
    assert kind == "suppression_added" and data["reason"] == "manual"


async def test_unsubscribe_suppression_ends_consents(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await consent(client, tenant, "quit@example.no", partners=True)
    result = await post_json(
        client,
        tenant,
        "/v1/suppressions",
        {"channel": "email", "address": "quit@example.no", "reason": "unsubscribed"},
    )
    assert result["consents_ended"] == 1
    assert await db.fetchval("SELECT count(*) FROM consents WHERE tenant_id = $1", tenant.id) == 0
    row = await db.fetchrow(
        "SELECT consent_topics, partner_consent_topics FROM recipients WHERE tenant_id = $1",
        tenant.id,
    )
    assert row is not None and row["consent_topics"] == [] and row["partner_consent_topics"] == []


async def test_repeated_suppression_keeps_first_time_and_longest_expiry(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    later = datetime.now(UTC) + timedelta(days=10)
    sooner = datetime.now(UTC) + timedelta(days=2)
    await suppress(client, tenant, "temp@example.no", "manual", expires_at=later.isoformat())
    first = await db.fetchrow(
        "SELECT created_at, expires_at FROM suppressions WHERE tenant_id = $1", tenant.id
    )
    await suppress(client, tenant, "temp@example.no", "manual", expires_at=sooner.isoformat())
    second = await db.fetchrow(
        "SELECT created_at, expires_at FROM suppressions WHERE tenant_id = $1", tenant.id
    )
    assert first is not None and second is not None
    assert second["created_at"] == first["created_at"]
    assert abs((second["expires_at"] - later).total_seconds()) < 1
    await suppress(client, tenant, "temp@example.no", "manual")
    assert await db.fetchval("SELECT expires_at FROM suppressions WHERE tenant_id = $1", tenant.id) is None
    assert await db.fetchval(
        "SELECT suppression_expires FROM recipients WHERE tenant_id = $1", tenant.id
    ) == [None]


async def test_soft_bounce_expires_after_the_tenant_period(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await suppress(client, tenant, "full@example.no", "soft_bounced")
    expires = await db.fetchval("SELECT expires_at FROM suppressions WHERE tenant_id = $1", tenant.id)
    assert abs((expires - datetime.now(UTC)) - timedelta(days=30)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"channel": "email", "address": "nope", "reason": "manual"}, "invalid_address"),
        (
            {"channel": "email", "address": "a@example.no", "reason": "manual", "topic": "news"},
            "invalid_input",
        ),
        (
            {
                "channel": "email",
                "address": "a@example.no",
                "reason": "unsubscribed",
                "topic": "missing",
            },
            "unknown_topic",
        ),
        (
            {
                "channel": "email",
                "address": "a@example.no",
                "reason": "manual",
                "expires_at": "2001-01-01T00:00:00Z",
            },
            "invalid_input",
        ),
        ({"channel": "email", "address": "a@example.no", "reason": "erased"}, "invalid_request"),
        (
            {
                "channel": "email",
                "address": "a@example.no",
                "reason": "manual",
                "expires_at": "2099-01-01T00:00:00",
            },
            "invalid_request",
        ),
    ],
)
async def test_bad_suppressions_change_nothing(
    db: asyncpg.Connection, client: Client, tenant: Tenant, body: dict[str, Any], code: str
) -> None:
    response = await client.post("/v1/suppressions", json=body, headers=tenant.auth("write"))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id) == 0
    assert await db.fetchval("SELECT count(*) FROM recipients WHERE tenant_id = $1", tenant.id) == 0


async def test_lift_suppression_and_admin_only_reasons(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await consent(client, tenant, "lift@example.no")
    await suppress(client, tenant, "lift@example.no", "manual")
    await suppress(client, tenant, "lift@example.no", "complained")
    path = "/v1/suppressions/email/lift@example.no"
    refused = await client.delete(path, headers=tenant.auth("write"))
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert await db.fetchval("SELECT count(*) FROM suppressions WHERE tenant_id = $1", tenant.id) == 2
    partial = await client.delete(path + "?reason=manual", headers=tenant.auth("write"))
    assert partial.status_code == 200 and partial.json()["lifted"] == ["manual"]
    assert await decision(client, tenant, "lift@example.no") == (False, None, "complained")
    done = await client.delete(path + "?note=confirmed%20by%20support", headers=tenant.auth("admin"))
    assert done.json()["lifted"] == ["complained"]
    assert await decision(client, tenant, "lift@example.no") == (True, "consent", None)
    kinds = [kind for kind, _ in await ledger(db, tenant)]
    assert kinds.count("suppression_lifted") == 2
    missing = await client.delete(path, headers=tenant.auth("admin"))
    assert missing.status_code == 404


async def test_list_suppressions_pages_with_a_cursor(client: Client, tenant: Tenant) -> None:
    for i in range(7):
        await suppress(client, tenant, f"p{i}@example.no", "manual" if i % 2 else "hard_bounced")
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/suppressions?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=tenant.auth("read"))).json()
        seen += [item["address"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"p{i}@example.no" for i in range(7)) and len(seen) == 7
    only = (await client.get("/v1/suppressions?reason=hard_bounced", headers=tenant.auth("read"))).json()
    assert len(only["items"]) == 4 and all(i["reason"] == "hard_bounced" for i in only["items"])
    bad = await client.get("/v1/suppressions?cursor=garbage!!", headers=tenant.auth("read"))
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_input"
    wrong = await client.get("/v1/suppressions?limit=0", headers=tenant.auth("read"))
    assert wrong.status_code == 400 and wrong.json()["code"] == "invalid_parameter"


async def test_later_consent_lifts_unsubscribe_of_same_scope_only(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", False)
    await suppress(client, tenant, "back@example.no", "unsubscribed", topic="news")
    await suppress(client, tenant, "back@example.no", "hard_bounced")
    result = await consent(client, tenant, "back@example.no", topic="news")
    assert result["lifted_unsubscribe"] is True
    # the topic unsubscribe is gone, the hard bounce stays
    assert await decision(client, tenant, "back@example.no", topic="news") == (
        False,
        None,
        "hard_bounced",
    )
    reasons = await db.fetch("SELECT reason, topic_id FROM suppressions WHERE tenant_id = $1", tenant.id)
    assert [r["reason"] for r in reasons] == ["hard_bounced"]


async def test_all_topics_consent_does_not_lift_a_topic_unsubscribe(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", False)
    await suppress(client, tenant, "scope@example.no", "unsubscribed", topic="news")
    result = await consent(client, tenant, "scope@example.no")
    assert result["lifted_unsubscribe"] is False
    assert await decision(client, tenant, "scope@example.no", topic="news") == (
        False,
        None,
        "unsubscribed",
    )


@pytest.mark.parametrize("reason", ["complained", "hard_bounced", "manual"])
async def test_consent_never_lifts_other_reasons(client: Client, tenant: Tenant, reason: str) -> None:
    await suppress(client, tenant, "no@example.no", reason)
    assert (await consent(client, tenant, "no@example.no"))["lifted_unsubscribe"] is False
    assert await decision(client, tenant, "no@example.no") == (False, None, reason)


async def test_consent_older_than_the_unsubscribe_does_not_lift_it(client: Client, tenant: Tenant) -> None:
    await suppress(client, tenant, "old@example.no", "unsubscribed")
    long_ago = (datetime.now(UTC) - timedelta(days=365)).isoformat()
    assert (await consent(client, tenant, "old@example.no", granted_at=long_ago))[
        "lifted_unsubscribe"
    ] is False
    assert await decision(client, tenant, "old@example.no") == (False, None, "unsubscribed")


async def test_consent_keeps_its_evidence(db: asyncpg.Connection, client: Client, tenant: Tenant) -> None:
    evidence = {"ip": "192.0.2.1", "user_agent": "Firefox", "form": "footer"}
    await consent(client, tenant, "proof@example.no", notice_version="2026-03", evidence=evidence)
    row = await db.fetchrow(
        "SELECT source, notice_version, evidence FROM consents WHERE tenant_id = $1", tenant.id
    )
    assert row is not None and row["notice_version"] == "2026-03" and row["source"] == "signup_form"
    [(kind, data)] = await ledger(db, tenant)
    assert kind == "consent_given" and data["evidence"] == evidence and data["notice_version"] == "2026-03"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"granted_at": "2999-01-01T00:00:00Z"}, "invalid_input"),
        ({"evidence": {"blob": "x" * 20_000}}, "invalid_input"),
        ({"topic": "missing"}, "unknown_topic"),
        ({"source": ""}, "invalid_request"),
    ],
)
async def test_bad_consents_change_nothing(
    db: asyncpg.Connection, client: Client, tenant: Tenant, extra: dict[str, Any], code: str
) -> None:
    body = {"channel": "email", "address": "c@example.no", "source": "form", **extra}
    response = await client.post("/v1/consents", json=body, headers=tenant.auth("write"))
    assert response.status_code == 422 and response.json()["code"] == code
    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id) == 0


async def test_withdraw_is_recorded_as_withdrawal(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await consent(client, tenant, "w@example.no")
    response = await client.post(
        "/v1/consents/withdraw",
        json={"channel": "email", "address": "w@example.no"},
        headers=tenant.auth("write"),
    )
    assert response.status_code == 200
    assert [k for k, _ in await ledger(db, tenant)] == ["consent_given", "consent_withdrawn"]
    assert await decision(client, tenant, "w@example.no") == (False, None, "unsubscribed")


async def test_customer_with_several_addresses(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", True)
    body = {
        "customer_ref": "C-42",
        "event": "agreement_started",
        "addresses": [
            {"channel": "email", "address": "home@example.no", "collected_in_sale": True},
            {"channel": "sms", "address": "+4791111111", "collected_in_sale": True},
            {"channel": "email", "address": "work@example.no", "collected_in_sale": False},
        ],
    }
    result = await post_json(client, tenant, "/v1/customers", body)
    assert result["agreement_open"] is True and result["addresses"] == 3
    assert await decision(client, tenant, "home@example.no", topic="news") == (
        True,
        "customer_relationship",
        None,
    )
    assert await decision(client, tenant, "91111111", topic="news", channel="sms") == (
        True,
        "customer_relationship",
        None,
    )
    assert await decision(client, tenant, "work@example.no", topic="news") == (
        False,
        None,
        "no_basis",
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND kind = 'customer_agreement_started'",
            tenant.id,
        )
        == 3
    )


async def test_out_of_order_agreement_events_keep_the_latest(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", True)
    now = datetime.now(UTC)
    await customer(
        client,
        tenant,
        "late@example.no",
        "agreement_started",
        at=now - timedelta(days=1),
        ref="C-9",
    )
    await customer(
        client, tenant, "late@example.no", "agreement_ended", at=now - timedelta(days=30), ref="C-9"
    )
    assert await decision(client, tenant, "late@example.no", topic="news") == (
        True,
        "customer_relationship",
        None,
    )


async def test_address_shared_by_two_customers(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", True)
    await customer(client, tenant, "family@example.no", "agreement_started", ref="C-a")
    await customer(
        client,
        tenant,
        "family@example.no",
        "purchase",
        ref="C-b",
        at=datetime.now(UTC) - timedelta(days=500),
    )
    await customer(client, tenant, "family@example.no", "agreement_ended", ref="C-a")
    assert await decision(client, tenant, "family@example.no", topic="news") == (
        False,
        None,
        "no_basis",
    )
    await customer(client, tenant, "family@example.no", "purchase", ref="C-b")
    assert await decision(client, tenant, "family@example.no", topic="news") == (
        True,
        "customer_relationship",
        None,
    )


async def test_recipient_view_explains_the_decision(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", False)
    await consent(client, tenant, "why@example.no", notice_version="v1")
    await suppress(client, tenant, "why@example.no", "unsubscribed", topic="news")
    view = (await client.get("/v1/recipients/email/WHY@example.no", headers=tenant.auth("read"))).json()
    assert view["known"] and view["address"] == "why@example.no"
    by_topic = {d["topic"]: (d["allowed"], d["basis"], d["reason"]) for d in view["marketing"]}
    assert by_topic == {None: (True, "consent", None), "news": (False, None, "unsubscribed")}
    assert [e["kind"] for e in view["events"]] == ["consent_given", "suppression_added"]
    assert view["consents"][0]["notice_version"] == "v1"
    assert view["suppressions"][0]["topic"] == "news"
    unknown = (await client.get("/v1/recipients/email/nobody@example.no", headers=tenant.auth("read"))).json()
    assert unknown["known"] is False and unknown["marketing"][0]["reason"] == "no_basis"
    bad = await client.get("/v1/recipients/email/not-an-address", headers=tenant.auth("read"))
    assert bad.status_code == 422
    bad_channel = await client.get("/v1/recipients/fax/x@example.no", headers=tenant.auth("read"))
    assert bad_channel.status_code == 400


async def test_checks_see_writes_immediately(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "now@example.no")
    assert (await check(client, tenant, ["now@example.no"]))[0]["allowed"]
    await post_json(
        client, tenant, "/v1/consents/withdraw", {"channel": "email", "address": "now@example.no"}
    )
    assert not (await check(client, tenant, ["now@example.no"]))[0]["allowed"]
