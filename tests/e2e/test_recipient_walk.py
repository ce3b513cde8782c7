"""The recipient's pages walked in a real headless Chromium against a real `suppress serve`, in
Norwegian and English, on a phone-wide (390 px) and a laptop-wide (1280 px) viewport: unsubscribe
from a topic, revisit, undo, unsubscribe from all, undo, preferences with mixed bases, re-subscribe
without and with the tenant's consent notice. After every step the test reads both what the page
says and the recipient's state (a pre-send check through the API, the consents in the database), and
axe-core checks the page for serious or critical accessibility violations.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, ViewportSize, expect

from tests.conftest import Tenant
from tests.live import api, open_page

ADDRESS = "walk@example.no"
CONSENT_DAY = "2026-03-02"
NOTICE = {
    "nb": {
        "text": "Vi sender deg nyheter, tilbud og invitasjoner på e-post til du melder deg av.",
        "version": "nb-1",
    },
    "en": {
        "text": "We send you news, offers and invitations by email until you unsubscribe.",
        "version": "en-1",
    },
}
TOPICS: dict[str, dict[str, Any]] = {
    "news": {
        "soft_opt_in": True,
        "display": {
            "nb": {"label": "Nyhetsbrev", "description": "Nytt fra butikken hver måned."},
            "en": {"label": "Newsletter", "description": "News from the shop every month."},
        },
    },
    "offers": {
        "soft_opt_in": False,
        "display": {
            "nb": {"label": "Tilbud", "description": "Rabatter og kampanjer."},
            "en": {"label": "Offers", "description": "Discounts and sales."},
        },
    },
    "events": {
        "soft_opt_in": False,
        "display": {
            "nb": {"label": "Arrangementer", "description": "Invitasjoner til kurs og kvelder."},
            "en": {"label": "Events", "description": "Invitations to courses and evenings."},
        },
    },
}
SAYS: dict[str, dict[str, str]] = {
    "nb": {
        "locale": "nb-NO",
        "heading": "Avmelding",
        "intro": "E‑post fra Hagebutikken AS til w•••k@example.no.",
        "unsubscribe_news": "Meld meg av «Nyhetsbrev»",
        "unsubscribed_news": "Du er meldt av «Nyhetsbrev».",
        "undo_news": "Angre avmeldingen fra «Nyhetsbrev»",
        "undone": "Avmeldingen er angret. Alt er som før du meldte deg av.",
        "all": "Meld meg av all markedsføring på e‑post",
        "unsubscribed_all": "Du er meldt av all markedsføring på e‑post fra Hagebutikken AS.",
        "undo_all": "Angre avmeldingen fra all markedsføring",
        "customer": "Du får dette fordi du er kunde.",
        "said_yes": f"Du får dette fordi du sa ja {CONSENT_DAY}.",
        "no_basis": "Du har ikke sagt ja til dette.",
        "not_sent": "Sendes ikke til deg",
        "save": "Lagre valgene",
        "saved": "Valgene dine er lagret.",
        "other_language": "English",
    },
    "en": {
        "locale": "en-GB",
        "heading": "Unsubscribe",
        "intro": "Email from Hagebutikken AS to w•••k@example.no.",
        "unsubscribe_news": "Unsubscribe me from “Newsletter”",
        "unsubscribed_news": "You are unsubscribed from “Newsletter”.",
        "undo_news": "Undo my unsubscribe from “Newsletter”",
        "undone": "Your unsubscribe is undone. Everything is as it was before you unsubscribed.",
        "all": "Unsubscribe me from all marketing by email",
        "unsubscribed_all": "You are unsubscribed from all marketing by email from Hagebutikken AS.",
        "undo_all": "Undo my unsubscribe from all marketing",
        "customer": "You get this because you are a customer.",
        "said_yes": f"You get this because you said yes on {CONSENT_DAY}.",
        "no_basis": "You have not said yes to this.",
        "not_sent": "Not sent to you",
        "save": "Save my choices",
        "saved": "Your choices are saved.",
        "other_language": "Norsk",
    },
}
VIEWPORTS: dict[str, ViewportSize] = {
    "phone": {"width": 390, "height": 844},
    "laptop": {"width": 1280, "height": 800},
}


async def axe_clean(page: Page) -> None:
    """No serious or critical axe-core violation on the page as it is now."""
    results = await Axe().run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, results.generate_report()


async def fits(page: Page, width: int) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth") <= width


async def decisions(
    http: httpx.AsyncClient, tenant: Tenant
) -> dict[str, tuple[bool, str | None, str | None]]:
    found = {}
    for name in TOPICS:
        body = {"channel": "email", "purpose": "marketing", "topic": name, "recipients": [ADDRESS]}
        [result] = (await api(http, tenant, "/v1/checks", body, scope="check"))["results"]
        found[name] = (result["allowed"], result["basis"], result["reason"])
    return found


async def consents(db: asyncpg.Connection, tenant: Tenant) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT k.topic_id, k.source, k.notice_version, k.granted_at, k.event_id FROM consents k"
        " WHERE k.tenant_id = $1 ORDER BY k.topic_id",
        tenant.id,
    )
    return [tuple(r) for r in rows]


async def setup(http: httpx.AsyncClient, tenant: Tenant) -> str:
    """Three topics with labels; a customer (a basis for `news` only) who said yes to `offers`."""
    for name, topic in TOPICS.items():
        await api(http, tenant, "/v1/topics", {"name": name, **topic})
    patched = await http.patch(
        "/v1/settings", json={"display_name": "Hagebutikken AS"}, headers=tenant.auth()
    )
    assert patched.status_code == 200, patched.text
    customer = {
        "customer_ref": "K-1",
        "event": "agreement_started",
        "addresses": [{"channel": "email", "address": ADDRESS, "collected_in_sale": True}],
    }
    await api(http, tenant, "/v1/customers", customer)
    await api(
        http,
        tenant,
        "/v1/consents",
        {
            "channel": "email",
            "address": ADDRESS,
            "topic": "offers",
            "source": "signup_form",
            "granted_at": f"{CONSENT_DAY}T09:30:00+00:00",
        },
    )
    body = {"channel": "email", "purpose": "marketing", "topic": "news", "recipients": [ADDRESS]}
    [result] = (await api(http, tenant, "/v1/checks", body, scope="check"))["results"]
    url: str = result["unsubscribe_url"]
    return url


CUSTOMER = (True, "customer_relationship", None)
CONSENT = (True, "consent", None)
UNSUBSCRIBED = (False, None, "unsubscribed")
NO_BASIS = (False, None, "no_basis")


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("lang", ["nb", "en"])
async def test_recipient_walk(
    browser: Browser,
    http: httpx.AsyncClient,
    server: str,
    tenant: Tenant,
    db: asyncpg.Connection,
    lang: str,
    viewport: str,
) -> None:
    says = SAYS[lang]
    size = VIEWPORTS[viewport]
    url = await setup(http, tenant)
    start = await consents(db, tenant)
    assert await decisions(http, tenant) == {"news": CUSTOMER, "offers": CONSENT, "events": NO_BASIS}

    async with open_page(browser, locale=says["locale"], viewport=size) as page:
        status = page.get_by_role("status")
        # the page: sender by display name, what is received and why, nothing ticked that is not
        await page.goto(url)
        assert await page.get_attribute("html", "lang") == lang
        await expect(page.get_by_role("heading", level=1)).to_have_text(says["heading"])
        await expect(page.get_by_text(says["intro"])).to_be_visible()
        news = page.get_by_role("checkbox", name=TOPICS["news"]["display"][lang]["label"])
        offers = page.get_by_role("checkbox", name=TOPICS["offers"]["display"][lang]["label"])
        events_label = TOPICS["events"]["display"][lang]["label"]
        await expect(news).to_be_checked()
        await expect(news).to_have_accessible_description(
            f"{TOPICS['news']['display'][lang]['description']} {says['customer']}"
        )
        await expect(offers).to_be_checked()
        await expect(offers).to_have_accessible_description(
            f"{TOPICS['offers']['display'][lang]['description']} {says['said_yes']}"
        )
        await expect(page.get_by_role("checkbox", name=events_label)).to_have_count(0)
        await expect(page.get_by_role("heading", name=says["not_sent"])).to_be_visible()
        await expect(page.get_by_role("listitem").filter(has_text=events_label)).to_contain_text(
            says["no_basis"]
        )
        await fits(page, size["width"])
        await axe_clean(page)

        # unsubscribe from the link's topic
        await page.get_by_role("button", name=says["unsubscribe_news"]).click()
        await expect(status).to_have_text(says["unsubscribed_news"])
        assert await decisions(http, tenant) == {"news": UNSUBSCRIBED, "offers": CONSENT, "events": NO_BASIS}
        assert await consents(db, tenant) == start
        await axe_clean(page)

        # revisit the link: it says what is true and offers the undo, not the same button again
        await page.goto(url)
        await expect(page.get_by_text(says["unsubscribed_news"])).to_be_visible()
        await expect(page.get_by_role("button", name=says["unsubscribe_news"])).to_have_count(0)
        undo = page.get_by_role("button", name=says["undo_news"])
        await expect(undo).to_be_visible()
        await axe_clean(page)

        # undo: exactly the state before, no consent given
        await undo.click()
        await expect(status).to_have_text(says["undone"])
        assert await decisions(http, tenant) == {"news": CUSTOMER, "offers": CONSENT, "events": NO_BASIS}
        assert await consents(db, tenant) == start
        await expect(page.get_by_role("button", name=says["unsubscribe_news"])).to_be_visible()
        await axe_clean(page)

        # unsubscribe from everything: the consent ends
        await page.get_by_role("button", name=says["all"]).click()
        await expect(status).to_have_text(says["unsubscribed_all"])
        assert await decisions(http, tenant) == {n: UNSUBSCRIBED for n in TOPICS}
        assert await consents(db, tenant) == []
        await expect(page.get_by_role("checkbox")).to_have_count(0)
        await axe_clean(page)

        # undo: the relationship and the very consent come back, and nothing more
        await page.get_by_role("button", name=says["undo_all"]).click()
        await expect(status).to_have_text(says["undone"])
        assert await decisions(http, tenant) == {"news": CUSTOMER, "offers": CONSENT, "events": NO_BASIS}
        assert await consents(db, tenant) == start
        await expect(news).to_be_checked()
        await expect(offers).to_be_checked()

        # without a tenant notice the page offers no way to say yes to `events`
        await expect(page.get_by_role("checkbox", name=events_label)).to_have_count(0)

        # with one: `events` can be ticked, under the notice shown, and that is a consent
        notice = await http.patch("/v1/settings", json={"consent_notice": NOTICE}, headers=tenant.auth())
        assert notice.status_code == 200, notice.text
        await page.goto(url)
        events = page.get_by_role("checkbox", name=events_label)
        await expect(events).not_to_be_checked()
        await expect(page.get_by_text(NOTICE[lang]["text"])).to_be_visible()
        await axe_clean(page)
        await events.check()
        await page.get_by_role("button", name=says["save"]).click()
        await expect(status).to_have_text(says["saved"])
        await expect(events).to_be_checked()
        assert await decisions(http, tenant) == {"news": CUSTOMER, "offers": CONSENT, "events": CONSENT}
        added = [c for c in await consents(db, tenant) if c not in start]
        assert [(c[1], c[2]) for c in added] == [("preference_page", NOTICE[lang]["version"])]
        await fits(page, size["width"])
        await axe_clean(page)

        # the language switch beside Accept-Language
        await page.get_by_role("link", name=says["other_language"]).click()
        assert await page.get_attribute("html", "lang") == ("en" if lang == "nb" else "nb")
        await axe_clean(page)


async def test_every_other_recipient_page_passes_axe(
    browser: Browser, http: httpx.AsyncClient, server: str, tenant: Tenant
) -> None:
    """The pages the walk does not reach: a bad link, the one-click answer, a refused choice."""
    url = await setup(http, tenant)
    base, token = url.rsplit("/", 1)
    async with open_page(browser, locale="nb-NO", viewport=VIEWPORTS["phone"]) as page:
        response = await page.goto(f"{base}/{token[:-3]}AAA")
        assert response is not None and response.status == 400
        await axe_clean(page)
        one_click = await http.post(url, data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 200
        await page.set_content(one_click.text)
        await axe_clean(page)
        refused = await http.post(url, data={"action": "preferences", "topic": "nonexistent"})
        assert refused.status_code == 400
        await page.set_content(refused.text)
        await axe_clean(page)
