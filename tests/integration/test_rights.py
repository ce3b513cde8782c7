"""GDPR rights through the API: access, erasure (down to a pg_dump), restriction, objection, and the
tenant settings for consent quality."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.devstack.embedded import postgres_binary
from tests.conftest import Tenant, post_json
from tests.integration.providers.conftest import POSTMARK_BOUNCE, basic
from tests.support import check, consent, decision, suppress, topic

Client = AsyncTestClient[Litestar]
ADDRESS = "Kari.Nordmann@Example.no"
NORMALISED = "kari.nordmann@example.no"
EVIDENCE = {"ip": "203.0.113.77", "user_agent": "Evidence-Browser/9.9", "form": "winter-signup"}


@dataclass
class Person:
    """Everything personal one test writes, unique to its tenant so a whole-database dump can be searched."""

    email: str
    phone: str
    customer_ref: str
    evidence: dict[str, str]
    note: str

    @classmethod
    def of(cls, tenant: Tenant) -> Person:
        tag = tenant.name.removeprefix("tenant-")
        digits = str(int(tag, 16) % 10_000_000).zfill(7)
        return cls(
            email=f"Kari.{tag}@Example.no",
            phone=f"+479{digits}",
            customer_ref=f"CUST-{tag}",
            evidence={
                "ip": f"203.0.113.{int(tag[:2], 16) % 250}",
                "user_agent": f"Browser-{tag}/9.9",
                "form": f"form-{tag}",
            },
            note=f"Kari {tag} rang on 2026-11-02",
        )


async def rich_history(client: Client, tenant: Tenant, person: Person | None = None) -> Person:
    """Consent with evidence, a noted suppression, a customer with two addresses, an unsubscribe click."""
    p = person or Person(ADDRESS, "+4791777666", "CUST-KARI-771", EVIDENCE, "Kari rang on 2026-11-02")
    await topic(client, tenant, "news", True)
    await consent(client, tenant, p.email, evidence=p.evidence, notice_version="2026-02", topic="news")
    await suppress(
        client,
        tenant,
        p.email,
        "manual",
        note=p.note,
        expires_at=(datetime.now(UTC) + timedelta(days=3)).isoformat(),
    )
    await post_json(
        client,
        tenant,
        "/v1/customers",
        {
            "customer_ref": p.customer_ref,
            "event": "purchase",
            "addresses": [
                {"channel": "email", "address": p.email, "collected_in_sale": True},
                {"channel": "sms", "address": p.phone, "collected_in_sale": True},
            ],
        },
    )
    [result] = await check(client, tenant, [p.phone], channel="sms", topic="news")
    assert result["allowed"]
    await client.post(
        result["unsubscribe_url"].split("example.test")[1],
        data={"action": "topic"},
        headers={"User-Agent": p.evidence["user_agent"]},
    )
    return p


async def test_access_export_holds_everything(client: Client, tenant: Tenant) -> None:
    await rich_history(client, tenant)
    export = (await client.get(f"/v1/recipients/email/{ADDRESS}/export", headers=tenant.auth("read"))).json()
    assert export["controller"] == tenant.name and export["address"] == NORMALISED and export["known"]
    assert (
        export["consents"][0]["evidence"] == EVIDENCE and export["consents"][0]["notice_version"] == "2026-02"
    )
    assert export["suppressions"][0]["note"] == "Kari rang on 2026-11-02"
    assert export["customers"][0]["customer_ref"] == "CUST-KARI-771"
    assert {e["kind"] for e in export["events"]} >= {
        "consent_given",
        "suppression_added",
        "customer_purchase",
    }
    assert any((e["personal"] or {}).get("evidence") == EVIDENCE for e in export["events"])
    assert export["state"]["address"] == NORMALISED
    whole = (await client.get("/v1/customers/CUST-KARI-771/export", headers=tenant.auth("read"))).json()
    assert {a["channel"] for a in whole["addresses"]} == {"email", "sms"} and whole["customer"][
        "last_purchase_at"
    ]
    assert (await client.get("/v1/customers/NOPE/export", headers=tenant.auth("read"))).status_code == 404
    unknown = (
        await client.get("/v1/recipients/email/nobody@example.no/export", headers=tenant.auth("read"))
    ).json()
    assert unknown["known"] is False and unknown["events"] == []


def _pg_dump(database_url: str) -> str:
    return subprocess.run(
        [str(postgres_binary("pg_dump")), "--data-only", "--no-owner", database_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


@pytest.mark.e2e  # runs a real process
async def test_erasure_leaves_no_trace_in_a_database_dump(
    db: asyncpg.Connection, client: Client, tenant: Tenant, database_url: str
) -> None:
    person = await rich_history(client, tenant, Person.of(tenant))
    # a provider's bounce report naming the person, still waiting for a worker: a copy outside the ledger
    provider = await post_json(
        client, tenant, "/v1/providers", {"kind": "postmark", "username": "pm", "password": "p" * 20}
    )
    bounce = {**POSTMARK_BOUNCE, "Email": person.email, "ID": 77001}
    stored = await client.post(
        urlsplit(provider["inbound_url"]).path, json=bounce, headers={"Authorization": basic("pm", "p" * 20)}
    )
    assert stored.status_code == 200 and stored.json()["stored"] == 1
    traces = (
        person.email.lower(),
        person.phone,
        person.phone[1:],
        person.evidence["ip"],
        person.evidence["user_agent"],
        person.evidence["form"],
        person.note,
        person.customer_ref,
    )
    before = _pg_dump(database_url)
    assert all(trace in before for trace in traces)
    response = await client.post(f"/v1/customers/{person.customer_ref}/erase", headers=tenant.auth("admin"))
    assert response.status_code == 200 and response.json()["addresses"] == 2
    dump = _pg_dump(database_url)
    for trace in traces:
        assert trace not in dump, trace
    assert await db.fetchval("SELECT count(*) FROM customers WHERE tenant_id = $1", tenant.id) == 0


async def test_erased_address_is_denied_in_any_spelling_and_cannot_consent(
    client: Client, tenant: Tenant
) -> None:
    await rich_history(client, tenant)
    response = await client.post(f"/v1/recipients/email/{ADDRESS}/erase", headers=tenant.auth("admin"))
    assert response.status_code == 200
    for spelling in (ADDRESS, NORMALISED, f"  {NORMALISED.upper()} "):
        assert await decision(client, tenant, spelling, topic="news") == (False, None, "erased")
        assert await decision(client, tenant, spelling, purpose="transactional") == (False, None, "erased")
    refused = await client.post(
        "/v1/consents",
        headers=tenant.auth("write"),
        json={"channel": "email", "address": ADDRESS, "source": "form"},
    )
    assert refused.status_code == 409 and refused.json()["code"] == "conflict"
    assert await decision(client, tenant, ADDRESS) == (False, None, "erased")
    path = f"/v1/suppressions/email/{NORMALISED}?reason=erased"
    assert (await client.delete(path, headers=tenant.auth("write"))).status_code == 403
    assert (await client.delete(path, headers=tenant.auth("admin"))).status_code == 422  # no reason given
    lifted = await client.delete(
        path + "&note=person%20asked%20to%20be%20contacted", headers=tenant.auth("admin")
    )
    assert lifted.status_code == 200 and lifted.json()["lifted"] == ["erased"]
    await consent(client, tenant, ADDRESS)
    assert await decision(client, tenant, ADDRESS) == (True, "consent", None)


async def test_erasure_needs_admin_and_a_valid_address(client: Client, tenant: Tenant) -> None:
    assert (
        await client.post("/v1/recipients/email/a@example.no/erase", headers=tenant.auth("write"))
    ).status_code == 403
    assert (
        await client.post("/v1/recipients/email/nonsense/erase", headers=tenant.auth("admin"))
    ).status_code == 422
    assert (await client.post("/v1/customers/NOPE/erase", headers=tenant.auth("admin"))).status_code == 404


async def test_erasing_an_unknown_address_still_blocks_it(client: Client, tenant: Tenant) -> None:
    response = await client.post(
        "/v1/recipients/email/never-seen@example.no/erase", headers=tenant.auth("admin")
    )
    assert response.status_code == 200
    assert await decision(client, tenant, "never-seen@example.no") == (False, None, "erased")


async def test_restriction_denies_everything_until_lifted(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "paused@example.no")
    first = await client.post(
        "/v1/recipients/email/paused@example.no/restrict",
        headers=tenant.auth("write"),
        json={"note": "accuracy contested"},
    )
    assert first.status_code == 200 and first.json()["changed"] is True
    again = await client.post("/v1/recipients/email/paused@example.no/restrict", headers=tenant.auth("write"))
    assert again.json()["changed"] is False
    for purpose in ("marketing", "transactional"):
        assert await decision(client, tenant, "paused@example.no", purpose=purpose) == (
            False,
            None,
            "restricted",
        )
    lifted = await client.post(
        "/v1/recipients/email/paused@example.no/unrestrict", headers=tenant.auth("write")
    )
    assert lifted.json()["changed"] is True
    assert await decision(client, tenant, "paused@example.no") == (True, "consent", None)
    assert (
        await client.post("/v1/recipients/email/paused@example.no/restrict", headers=tenant.auth("read"))
    ).status_code == 403


async def test_objection_suppresses_every_address_and_topic(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", True)
    await post_json(
        client,
        tenant,
        "/v1/customers",
        {
            "customer_ref": "OBJ-1",
            "event": "agreement_started",
            "addresses": [
                {"channel": "email", "address": "obj@example.no", "collected_in_sale": True},
                {"channel": "sms", "address": "+4790001000", "collected_in_sale": True},
            ],
        },
    )
    await consent(client, tenant, "obj@example.no", partners=True)
    response = await client.post("/v1/customers/OBJ-1/object", headers=tenant.auth("write"))
    assert response.status_code == 200 and response.json()["addresses"] == 2
    assert await decision(client, tenant, "obj@example.no", topic="news") == (False, None, "objected")
    assert await decision(client, tenant, "obj@example.no") == (False, None, "objected")
    assert await decision(client, tenant, "obj@example.no", offer="partner") == (False, None, "objected")
    assert await decision(client, tenant, "+4790001000", channel="sms", topic="news") == (
        False,
        None,
        "objected",
    )
    kinds = await db.fetch(
        "SELECT kind, personal FROM events WHERE tenant_id = $1 AND kind = 'objected'", tenant.id
    )
    assert len(kinds) == 2 and all("OBJ-1" in k["personal"] for k in kinds)
    objected_at = await db.fetchval(
        "SELECT objected_at FROM customers WHERE tenant_id = $1 AND customer_ref = 'OBJ-1'", tenant.id
    )
    assert objected_at is not None
    exported = (await client.get("/v1/customers/OBJ-1/export", headers=tenant.auth("read"))).json()
    assert exported["customer"]["objected_at"] is not None
    assert (await client.post("/v1/customers/NOPE/object", headers=tenant.auth("write"))).status_code == 404


async def test_settings_read_and_patch(client: Client, tenant: Tenant) -> None:
    current = (await client.get("/v1/settings", headers=tenant.auth("read"))).json()
    assert current["relationship_window_days"] == 365 and current["consent_validity_days"] is None
    patched = await client.patch(
        "/v1/settings", headers=tenant.auth("admin"), json={"relationship_window_days": 180}
    )
    assert patched.status_code == 200 and patched.json()["relationship_window_days"] == 180
    assert (
        await client.patch(
            "/v1/settings", headers=tenant.auth("write"), json={"require_notice_version": True}
        )
    ).status_code == 403
    for bad in (
        {"relationship_window_days": 0},
        {"default_region": "norway"},
        {"unknown": 1},
        {"complaint_alert_rate": 0.5, "complaint_stop_rate": 0.1},
        {"transactional_blocked_by": ["erased"]},
    ):
        response = await client.patch("/v1/settings", headers=tenant.auth("admin"), json=bad)
        assert response.status_code == 422, (bad, response.text)
    assert (await client.get("/v1/settings", headers=tenant.auth("read"))).json()[
        "relationship_window_days"
    ] == 180


async def test_notice_version_can_be_required(client: Client, tenant: Tenant) -> None:
    await client.patch("/v1/settings", headers=tenant.auth("admin"), json={"require_notice_version": True})
    missing = await client.post(
        "/v1/consents",
        headers=tenant.auth("write"),
        json={"channel": "email", "address": "n@example.no", "source": "form"},
    )
    assert missing.status_code == 422 and "notice_version" in missing.json()["detail"]
    await consent(client, tenant, "n@example.no", notice_version="v3")


async def test_consents_lapse_after_the_tenant_validity(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await client.patch("/v1/settings", headers=tenant.auth("admin"), json={"consent_validity_days": 30})
    old = (datetime.now(UTC) - timedelta(days=31)).isoformat()
    await consent(client, tenant, "stale@example.no", granted_at=old)
    await consent(client, tenant, "fresh@example.no")
    assert await decision(client, tenant, "stale@example.no") == (False, None, "no_basis")
    assert await decision(client, tenant, "fresh@example.no") == (True, "consent", None)
    # nothing about the end is stored: the setting in force when deciding applies
    await client.patch("/v1/settings", headers=tenant.auth("admin"), json={"consent_validity_days": None})
    assert await decision(client, tenant, "stale@example.no") == (True, "consent", None)
    granted = await db.fetchval(
        "SELECT consent_granted FROM recipients WHERE tenant_id = $1 AND address = 'stale@example.no'",
        tenant.id,
    )
    assert granted == [datetime.fromisoformat(old)]
