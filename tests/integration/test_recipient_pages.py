"""The recipient's pages through the app: undo is a reversal and nothing more, the preference page
ticks only what a check would allow, and a link gives consent only under the tenant's notice."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Tenant
from tests.support import ONE_CLICK, consent, customer, decision, link, topic

Client = AsyncTestClient[Litestar]
EN = {"Accept-Language": "en"}
NOTICE = {
    "nb": {
        "text": "Vi sender deg nyheter og tilbud på e-post. Du kan melde deg av når som helst.",
        "version": "nb-3",
    },
    "en": {
        "text": "We send you news and offers by email. You can unsubscribe at any time.",
        "version": "en-3",
    },
}


async def consent_rows(db: asyncpg.Connection, tenant: Tenant) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT channel, topic_id, partners, source, notice_version, evidence, granted_at, event_id"
        " FROM consents WHERE tenant_id = $1 ORDER BY channel, address_hash, topic_id",
        tenant.id,
    )
    return [{k: _json(v) if k == "evidence" else v for k, v in r.items()} for r in rows]


def _json(value: Any) -> Any:
    return msgspec.json.decode(value) if isinstance(value, str) else value


async def suppression_rows(db: asyncpg.Connection, tenant: Tenant) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT channel, topic_id, reason FROM suppressions WHERE tenant_id = $1 ORDER BY 1, 2, 3", tenant.id
    )
    return [tuple(r) for r in rows]


async def event_count(db: asyncpg.Connection, tenant: Tenant, kind: str | None = None) -> int:
    n: int = await db.fetchval(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND ($2::text IS NULL OR kind = $2)",
        tenant.id,
        kind,
    )
    return n


async def last_unsubscribe(db: asyncpg.Connection, tenant: Tenant) -> int:
    event_id: int = await db.fetchval(
        "SELECT max(id) FROM events WHERE tenant_id = $1 AND kind = 'unsubscribed'", tenant.id
    )
    return event_id


def undo_event_in(page: str) -> str | None:
    found = re.search(r'name="event" value="(\d+)"', page)
    return found.group(1) if found else None


async def set_notice(client: Client, tenant: Tenant, notice: Any = NOTICE) -> None:
    response = await client.patch(
        "/v1/settings", json={"consent_notice": notice}, headers=tenant.auth("admin")
    )
    assert response.status_code == 200, response.text


# -- undo is a reversal --------------------------------------------------------------------------------


async def test_undo_after_unsubscribe_from_all_gives_back_only_the_customer_relationship(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", True)
    await topic(client, tenant, "offers", False)
    await customer(client, tenant, "buyer@example.no", "purchase")
    path = await link(client, tenant, "buyer@example.no", topic="news")
    await client.post(path, data={"action": "all"}, headers=EN)
    assert await decision(client, tenant, "buyer@example.no", topic="news") == (False, None, "unsubscribed")
    event = await last_unsubscribe(db, tenant)
    undone = await client.post(path, data={"action": "undo", "scope": "all", "event": str(event)}, headers=EN)
    assert await decision(client, tenant, "buyer@example.no", topic="news") == (
        True,
        "customer_relationship",
        None,
    )
    assert await decision(client, tenant, "buyer@example.no", topic="offers") == (False, None, "no_basis")
    assert await decision(client, tenant, "buyer@example.no") == (False, None, "no_basis")
    assert await consent_rows(db, tenant) == []
    assert await event_count(db, tenant, "consent_given") == 0
    assert undone.status_code == 200 and "Your unsubscribe is undone" in undone.text


async def test_undo_restores_the_ended_consents_exactly_and_gives_none(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", False)
    await topic(client, tenant, "offers", False)
    evidence = {"form": "signup-2026", "ip": "192.0.2.4"}
    validity = await client.patch("/v1/settings", json={"consent_validity_days": 400}, headers=tenant.auth())
    assert validity.status_code == 200
    await consent(client, tenant, "kept@example.no", topic="news", notice_version="v7", evidence=evidence)
    await consent(client, tenant, "kept@example.no", topic="offers", notice_version="v7", partners=True)
    before = await consent_rows(db, tenant)
    assert before[1]["partners"] is True
    path = await link(client, tenant, "kept@example.no", topic="news")
    done = await client.post(path, data={"action": "all"}, headers=EN)
    assert await consent_rows(db, tenant) == []
    event = undo_event_in(done.text)
    assert event is not None and int(event) == await last_unsubscribe(db, tenant)
    await client.post(path, data={"action": "undo", "event": event}, headers=EN)
    assert await consent_rows(db, tenant) == before
    assert await suppression_rows(db, tenant) == []
    assert await decision(client, tenant, "kept@example.no", topic="offers") == (True, "consent", None)
    assert await event_count(db, tenant, "consent_given") == 2
    [lifted] = await db.fetch(
        "SELECT source, actor, data FROM events WHERE tenant_id = $1 AND kind = 'suppression_lifted'",
        tenant.id,
    )
    data = _json(lifted["data"])
    assert lifted["source"] == "unsubscribe_undo" and lifted["actor"] == "recipient"
    assert data["cause"] == "undo" and data["undoes"] == int(event) and len(data["consents_restored"]) == 2


async def test_undo_keeps_a_consent_given_since(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", False)
    await consent(client, tenant, "since@example.no", topic="news", notice_version="old")
    path = await link(client, tenant, "since@example.no", topic="news")
    await client.post(path, data={"action": "all"})
    await consent(client, tenant, "since@example.no", topic="news", notice_version="new")
    assert await decision(client, tenant, "since@example.no", topic="news") == (False, None, "unsubscribed")
    await client.post(path, data={"action": "undo", "event": str(await last_unsubscribe(db, tenant))})
    [row] = await consent_rows(db, tenant)
    assert row["notice_version"] == "new"
    assert await decision(client, tenant, "since@example.no", topic="news") == (True, "consent", None)


async def test_undo_of_a_topic_unsubscribe_keeps_an_earlier_topic_unsubscribe(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    for name in ("news", "offers"):
        await topic(client, tenant, name, False)
    await consent(client, tenant, "two@example.no")
    offers_link = await link(client, tenant, "two@example.no", topic="offers")
    news_link = await link(client, tenant, "two@example.no", topic="news")
    await client.post(offers_link, data=ONE_CLICK)
    await client.post(news_link, data={"action": "topic"})
    await client.post(news_link, data={"action": "undo", "event": str(await last_unsubscribe(db, tenant))})
    assert await decision(client, tenant, "two@example.no", topic="news") == (True, "consent", None)
    assert await decision(client, tenant, "two@example.no", topic="offers") == (False, None, "unsubscribed")


async def test_undo_without_an_unsubscribe_changes_nothing_and_says_so(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", True)
    await customer(client, tenant, "never@example.no", "purchase")
    path = await link(client, tenant, "never@example.no", topic="news")
    before = await event_count(db, tenant)
    forms = ({"action": "undo", "scope": "all"}, {"action": "undo", "scope": "topic"}, {"action": "undo"})
    answers = [await client.post(path, data=form, headers=EN) for form in forms]
    assert await event_count(db, tenant) == before
    assert await consent_rows(db, tenant) == []
    assert all(a.status_code == 200 and "nothing to undo" in a.text for a in answers)
    assert await decision(client, tenant, "never@example.no", topic="news") == (
        True,
        "customer_relationship",
        None,
    )


async def test_second_undo_and_ninety_undos_change_nothing(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", False)
    await consent(client, tenant, "many@example.no", topic="news")
    path = await link(client, tenant, "many@example.no", topic="news")
    await client.post(path, data={"action": "topic"})
    event = str(await last_unsubscribe(db, tenant))
    first = await client.post(path, data={"action": "undo", "event": event}, headers=EN)
    consents, events = await consent_rows(db, tenant), await event_count(db, tenant)
    again = {"action": "undo", "event": event, "scope": "all"}
    answers = [await client.post(path, data=again, headers=EN) for _ in range(90)]
    assert await event_count(db, tenant, "consent_given") == 1
    assert await event_count(db, tenant) == events
    assert await consent_rows(db, tenant) == consents
    assert "Your unsubscribe is undone" in first.text
    assert all(a.status_code == 200 and "nothing to undo" in a.text for a in answers)


async def test_undo_binds_to_the_link_the_unsubscribe_came_through(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", False)
    await consent(client, tenant, "bound@example.no")
    await consent(client, tenant, "other@example.no")
    spring = await link(client, tenant, "bound@example.no", campaign="spring")
    autumn = await link(client, tenant, "bound@example.no", campaign="autumn")
    stranger = await link(client, tenant, "other@example.no", campaign="spring")
    await client.post(spring, data=ONE_CLICK)
    event = str(await last_unsubscribe(db, tenant))
    before = await event_count(db, tenant)
    answers = [
        await client.post(p, data={"action": "undo", "event": event}, headers=EN) for p in (autumn, stranger)
    ]
    assert await event_count(db, tenant) == before
    assert all(a.status_code == 200 and "nothing to undo" in a.text for a in answers)
    api = await client.post(
        "/v1/suppressions",
        json={"channel": "email", "address": "other@example.no", "reason": "unsubscribed"},
        headers=tenant.auth("write"),
    )
    assert api.status_code == 201
    api_event = str(await db.fetchval("SELECT max(id) FROM events WHERE tenant_id = $1", tenant.id))
    await client.post(stranger, data={"action": "undo", "event": api_event})
    assert await event_count(db, tenant) == before + 1
    assert await decision(client, tenant, "bound@example.no") == (False, None, "unsubscribed")
    assert await decision(client, tenant, "other@example.no") == (False, None, "unsubscribed")
    revisit = (await client.get(spring, headers=EN)).text
    assert undo_event_in(revisit) == event and "Undo my unsubscribe from all marketing" in revisit
    assert undo_event_in((await client.get(autumn, headers=EN)).text) is None


async def test_bad_undo_event_is_refused(db: asyncpg.Connection, client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "junk@example.no")
    path = await link(client, tenant, "junk@example.no")
    before = await event_count(db, tenant)
    response = await client.post(path, data={"action": "undo", "event": "1 OR 1=1"})
    assert response.status_code == 400
    assert await event_count(db, tenant) == before


# -- the preference page tells the truth -------------------------------------------------------------


def checkbox(page: str, name: str) -> str | None:
    """'checked', 'unchecked', or None when the page shows no checkbox for the topic."""
    found = re.search(rf'<input type="checkbox" name="topic" value="{re.escape(name)}"( checked)?', page)
    if found is None:
        return None
    return "checked" if found.group(1) else "unchecked"


async def test_customer_without_a_basis_for_offers_does_not_see_offers_ticked(
    client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", True)
    await topic(client, tenant, "offers", False)
    await customer(client, tenant, "customer@example.no", "purchase")
    path = await link(client, tenant, "customer@example.no", topic="news")
    page = (await client.get(path, headers=EN)).text
    assert checkbox(page, "offers") is None
    assert checkbox(page, "news") == "checked" and "You get this because you are a customer." in page
    assert "Not sent to you" in page and "You have not said yes to this." in page


async def test_sms_consent_to_one_topic_ticks_only_that_topic(client: Client, tenant: Tenant) -> None:
    for name in ("events", "newsletter", "offers"):
        await topic(client, tenant, name, False)
    await consent(
        client, tenant, "+4791234567", channel="sms", topic="offers", granted_at="2026-03-02T10:00:00+00:00"
    )
    path = await link(client, tenant, "+4791234567", channel="sms", topic="offers")
    page = (await client.get(path, headers=EN)).text
    assert checkbox(page, "events") is None and checkbox(page, "newsletter") is None
    assert (
        checkbox(page, "offers") == "checked" and "You get this because you said yes on 2026-03-02." in page
    )
    assert "Text messages from" in page
    norsk = (await client.get(path + "?lang=nb", headers=EN)).text
    assert 'lang="nb"' in norsk and "Du får dette fordi du sa ja 2026-03-02." in norsk


async def test_topic_labels_and_sender_display_name_on_the_page(client: Client, tenant: Tenant) -> None:
    display = {
        "nb": {"label": "Nyhetsbrev", "description": "Hver måned: nytt fra butikken."},
        "en": {"label": "Newsletter", "description": "Monthly: what is new in the shop."},
    }
    response = await client.post(
        "/v1/topics",
        json={"name": "news", "soft_opt_in": False, "display": display},
        headers=tenant.auth("write"),
    )
    assert response.status_code == 201 and response.json()["display"] == display
    patched = await client.patch(
        "/v1/settings", json={"display_name": "Hagebutikken AS"}, headers=tenant.auth()
    )
    assert patched.status_code == 200 and patched.json()["display_name"] == "Hagebutikken AS"
    await consent(client, tenant, "label@example.no")
    path = await link(client, tenant, "label@example.no", topic="news")
    page = (await client.get(path + "?lang=en")).text
    assert "Email from Hagebutikken AS" in page and tenant.name not in page
    assert "Unsubscribe me from “Newsletter”" in page and "Monthly: what is new in the shop." in page
    nb = (await client.get(path, headers={"Accept-Language": "nb"})).text
    assert "Meld meg av «Nyhetsbrev»" in nb and "Hver måned: nytt fra butikken." in nb
    unsubscribed = await client.post(path, data={"action": "topic", "lang": "en"})
    assert "You are unsubscribed from “Newsletter”." in unsubscribed.text
    # an update without `display` keeps the texts; listing shows them
    await client.post("/v1/topics", json={"name": "news", "soft_opt_in": True}, headers=tenant.auth("write"))
    [listed] = (await client.get("/v1/topics", headers=tenant.auth("read"))).json()
    assert listed["display"] == display and listed["soft_opt_in"] is True


async def test_bad_topic_display_is_422(client: Client, tenant: Tenant) -> None:
    for display in (
        {"de": {"label": "x"}},
        {"nb": {"label": ""}},
        {"en": {"label": "x", "description": "y" * 301}},
    ):
        response = await client.post(
            "/v1/topics",
            json={"name": "t", "soft_opt_in": False, "display": display},
            headers=tenant.auth("write"),
        )
        assert response.status_code == 422, display


async def test_revisiting_a_used_link_shows_the_current_state(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", False)
    await consent(client, tenant, "again@example.no")
    path = await link(client, tenant, "again@example.no", topic="news")
    await client.post(path, data=ONE_CLICK)
    page = (await client.get(path, headers=EN)).text
    assert "You are unsubscribed from “news”." in page
    assert "Unsubscribe me from “news”" not in page
    assert "Undo my unsubscribe from “news”" in page
    assert "You unsubscribed on " in page


async def test_unticking_is_an_opt_out_and_ticking_without_a_notice_is_refused(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    for name in ("news", "offers", "events"):
        await topic(client, tenant, name, False)
    await consent(client, tenant, "prefs@example.no")
    path = await link(client, tenant, "prefs@example.no", topic="news")
    saved = await client.post(path, data={"action": "preferences", "topic": ["news", "events"]}, headers=EN)
    assert saved.status_code == 200 and "Your choices are saved." in saved.text
    assert checkbox(saved.text, "offers") is None and "You unsubscribed on" in saved.text
    assert await decision(client, tenant, "prefs@example.no", topic="offers") == (False, None, "unsubscribed")
    assert await decision(client, tenant, "prefs@example.no", topic="news") == (True, "consent", None)
    before = await event_count(db, tenant)
    refused = await client.post(
        path, data={"action": "preferences", "topic": ["news", "events", "offers"]}, headers=EN
    )
    assert refused.status_code == 400 and "Nothing was changed" in refused.text
    assert await event_count(db, tenant) == before
    assert await decision(client, tenant, "prefs@example.no", topic="offers") == (False, None, "unsubscribed")


@pytest.mark.parametrize(
    "form",
    [
        {"action": "preferences", "topic": ["news", "nonexistent"]},
        {"action": "preferences", "topic": ["news"], "channel": "sms"},
        {"action": "preferences", "topic": ["news"], "partners": "true"},
        {"action": "preferences", "topic": ["news"], "offer": "partner"},
        {"action": "all", "channel": "sms"},
        {"action": "undo", "event": "1", "topic": "news", "channel": "sms"},
    ],
)
async def test_forged_fields_are_refused_and_change_nothing(
    db: asyncpg.Connection, client: Client, tenant: Tenant, form: dict[str, Any]
) -> None:
    await topic(client, tenant, "news", False)
    await topic(client, tenant, "offers", False)
    await set_notice(client, tenant)
    await consent(client, tenant, "forger@example.no", topic="news")
    path = await link(client, tenant, "forger@example.no", topic="news")
    before = await event_count(db, tenant)
    response = await client.post(path, data={**form, "notice_version": "en-3"}, headers=EN)
    assert 400 <= response.status_code < 500
    assert await event_count(db, tenant) == before


async def test_re_subscribe_under_the_tenant_notice_records_its_version_and_evidence(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", True)
    await topic(client, tenant, "offers", False)
    await customer(client, tenant, "optin@example.no", "purchase")
    path = await link(client, tenant, "optin@example.no", topic="news")
    without = (await client.get(path, headers=EN)).text
    assert checkbox(without, "offers") is None and "you agree to this" not in without
    await set_notice(client, tenant)
    page = (await client.get(path, headers=EN)).text
    assert checkbox(page, "offers") == "unchecked" and NOTICE["en"]["text"] in page
    assert 'name="notice_version" value="en-3"' in page
    stale = await client.post(
        path,
        data={"action": "preferences", "topic": ["news", "offers"], "notice_version": "en-2"},
        headers=EN,
    )
    assert stale.status_code == 409 and await consent_rows(db, tenant) == []
    saved = await client.post(
        path,
        data={"action": "preferences", "topic": ["news", "offers"], "notice_version": "en-3"},
        headers={**EN, "User-Agent": "Browser/9"},
    )
    assert saved.status_code == 200 and checkbox(saved.text, "offers") == "checked"
    assert await decision(client, tenant, "optin@example.no", topic="offers") == (True, "consent", None)
    assert await decision(client, tenant, "optin@example.no", topic="offers", offer="partner") == (
        False,
        None,
        "no_basis",
    )
    [row] = await consent_rows(db, tenant)
    assert row["channel"] == "email" and row["partners"] is False and row["source"] == "preference_page"
    assert row["notice_version"] == "en-3" and row["topic_id"] != 0
    assert (
        row["evidence"]["user_agent"] == "Browser/9"
        and row["evidence"]["notice_text"] == NOTICE["en"]["text"]
    )
    assert row["evidence"]["language"] == "en" and row["evidence"]["page"] == "preferences"


async def test_consent_notice_setting_is_validated(client: Client, tenant: Tenant) -> None:
    for bad in (
        {"nb": NOTICE["nb"]},
        {"nb": NOTICE["nb"], "en": {"text": "", "version": "1"}},
        {"nb": NOTICE["nb"], "en": {"text": "x", "version": ""}},
        {"nb": NOTICE["nb"], "en": {"text": "x" * 2001, "version": "1"}},
        {"nb": NOTICE["nb"], "en": NOTICE["en"], "de": NOTICE["en"]},
    ):
        response = await client.patch("/v1/settings", json={"consent_notice": bad}, headers=tenant.auth())
        assert response.status_code in (400, 422), bad
    assert (await client.get("/v1/settings", headers=tenant.auth("read"))).json()["consent_notice"] is None
    await set_notice(client, tenant)
    assert (await client.get("/v1/settings", headers=tenant.auth("read"))).json()["consent_notice"] == NOTICE
    cleared = await client.patch("/v1/settings", json={"consent_notice": None}, headers=tenant.auth())
    assert cleared.json()["consent_notice"] is None
    refused = await client.patch("/v1/settings", json={"display_name": "x"}, headers=tenant.auth("write"))
    assert refused.status_code == 403


async def test_openapi_describes_topic_texts_and_the_notice(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    components = schema["components"]["schemas"]
    assert {"label", "description"} <= set(components["TopicText"]["properties"])
    assert {"nb", "en"} <= set(components["ConsentNotice"]["properties"])
    assert "display_name" in components["TenantSettings"]["properties"]
    page = schema["paths"]["/u/{token}"]["get"]
    assert any(p["name"] == "lang" and p["in"] == "query" for p in page["parameters"])
