"""The unsubscribe page in a real headless Chromium (Playwright), served by a real `suppress serve`.

The browser is the system's Chromium (Debian's /usr/bin/chromium, installed by .ci/run); Playwright
never downloads one. The server is a separate process on a free port, pointed at the session's
database and Redis; data is created through its HTTP API, and every outcome is read back with a
pre-send check, as a sender would see it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import httpx
from playwright.async_api import Browser, expect

from tests.conftest import Tenant
from tests.live import PHONE, api, assert_png, open_page

ALLOWED = (True, "consent", None)
UNSUBSCRIBED = (False, None, "unsubscribed")

# -- data through the server's API ---------------------------------------------------------------


async def setup_recipient(http: httpx.AsyncClient, tenant: Tenant, address: str, topics: list[str]) -> None:
    """Topics (no soft opt-in) and a consent to all of them."""
    for name in topics:
        await api(http, tenant, "/v1/topics", {"name": name, "soft_opt_in": False})
    await api(http, tenant, "/v1/consents", {"channel": "email", "address": address, "source": "signup_form"})


async def check(http: httpx.AsyncClient, tenant: Tenant, address: str, topic: str) -> dict[str, Any]:
    body = {"channel": "email", "purpose": "marketing", "topic": topic, "recipients": [address]}
    [result] = (await api(http, tenant, "/v1/checks", body, scope="check"))["results"]
    assert isinstance(result, dict)
    return result


async def decision(
    http: httpx.AsyncClient, tenant: Tenant, address: str, topic: str
) -> tuple[bool, str | None, str | None]:
    result = await check(http, tenant, address, topic)
    return result["allowed"], result["basis"], result["reason"]


async def unsubscribe_url(
    http: httpx.AsyncClient, server: str, tenant: Tenant, address: str, topic: str
) -> str:
    result = await check(http, tenant, address, topic)
    assert result["allowed"], result
    url: str = result["unsubscribe_url"]
    assert url.startswith(f"{server}/u/"), url
    return url


async def test_norwegian_page_unsubscribe_from_topic_then_undo(
    browser: Browser, http: httpx.AsyncClient, server: str, tenant: Tenant, tmp_path: Path
) -> None:
    address = "kari.nordmann@example.no"
    await setup_recipient(http, tenant, address, ["nyheter", "tilbud"])
    url = await unsubscribe_url(http, server, tenant, address, "nyheter")

    async with open_page(browser, locale="nb-NO") as page:
        response = await page.goto(url)
        assert response is not None and response.status == 200
        assert await page.get_attribute("html", "lang") == "nb"
        await expect(page.get_by_role("heading", level=1)).to_have_text("Avmelding")
        text = await page.locator("body").inner_text()
        assert tenant.name in text and "k•••n@example.no" in text
        assert address not in text and "kari.nordmann" not in await page.content()
        shot = tmp_path / "laptop-nb.png"
        await page.screenshot(path=shot, full_page=True)
        assert_png(shot)

        await page.get_by_role("button", name="Meld meg av «nyheter»").click()
        await expect(page.get_by_role("status")).to_have_text("Du er meldt av «nyheter».")
        undo = page.get_by_role("button", name="Angre avmeldingen fra «nyheter»")
        await expect(undo).to_be_visible()
        assert await decision(http, tenant, address, "nyheter") == UNSUBSCRIBED
        assert await decision(http, tenant, address, "tilbud") == ALLOWED

        await undo.click()
        await expect(page.get_by_role("status")).to_have_text(
            "Avmeldingen er angret. Alt er som før du meldte deg av."
        )
        assert await decision(http, tenant, address, "nyheter") == ALLOWED


async def test_english_preferences_untick_one_topic(
    browser: Browser, http: httpx.AsyncClient, server: str, tenant: Tenant
) -> None:
    address = "choosy@example.com"
    await setup_recipient(http, tenant, address, ["news", "offers", "events"])
    url = await unsubscribe_url(http, server, tenant, address, "news")

    async with open_page(browser, locale="en-US") as page:
        await page.goto(url)
        assert await page.get_attribute("html", "lang") == "en"
        offers = page.get_by_role("checkbox", name="offers")
        await expect(offers).to_be_checked()
        await offers.uncheck()
        await page.get_by_role("button", name="Save my choices").click()
        await expect(page.get_by_role("status")).to_have_text("Your choices are saved.")

        assert await decision(http, tenant, address, "offers") == UNSUBSCRIBED
        assert await decision(http, tenant, address, "news") == ALLOWED
        assert await decision(http, tenant, address, "events") == ALLOWED

        await page.goto(url)  # the page shows the saved choice: offers is no longer received
        await expect(page.get_by_role("checkbox", name="offers")).to_have_count(0)
        await expect(page.get_by_role("listitem").filter(has_text="offers")).to_contain_text(
            "You unsubscribed on"
        )
        await expect(page.get_by_role("checkbox", name="news")).to_be_checked()


async def test_loading_the_page_changes_nothing(
    browser: Browser, http: httpx.AsyncClient, server: str, tenant: Tenant, db: asyncpg.Connection
) -> None:
    address = "just.looking@example.no"
    await setup_recipient(http, tenant, address, ["news"])
    url = await unsubscribe_url(http, server, tenant, address, "news")
    events_before = await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id)

    async with open_page(browser, locale="nb-NO") as page:
        methods: list[str] = []
        page.on("request", lambda request: methods.append(request.method))
        for _ in range(3):
            response = await page.goto(url)
            assert response is not None and response.status == 200
            await expect(page.get_by_role("button", name="Meld meg av «news»")).to_be_visible()
        assert methods == ["GET"] * 3

    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id) == events_before
    assert await decision(http, tenant, address, "news") == ALLOWED


async def test_phone_viewport_needs_no_horizontal_scrolling(
    browser: Browser, http: httpx.AsyncClient, server: str, tenant: Tenant, tmp_path: Path
) -> None:
    address = "mobil@example.no"
    topic = "manedlig_nyhetsbrev_om_hagearbeid_og_planter"  # a long unbreakable slug must still wrap
    await setup_recipient(http, tenant, address, [topic, "tilbud"])
    url = await unsubscribe_url(http, server, tenant, address, topic)

    async with open_page(
        browser,
        locale="nb-NO",
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    ) as page:
        await page.goto(url)
        buttons = page.get_by_role("button")
        await expect(buttons).to_have_count(3)  # topic, everything, save choices
        # with is_mobile, Chromium widens the layout viewport (zooms out) to fit content that is too
        # wide, so innerWidth alone would hide an overflow: it must still be the phone's width
        width = await page.evaluate("window.innerWidth")
        assert width == PHONE["width"]
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        for button in await buttons.all():
            await expect(button).to_be_visible()
            box = await button.bounding_box()
            assert box is not None
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
            assert box["height"] >= 44, box  # a comfortable tap target
        await expect(page.get_by_role("button", name=f"Meld meg av «{topic}»")).to_be_in_viewport()
        shot = tmp_path / "phone-nb.png"
        await page.screenshot(path=shot, full_page=True)
        assert_png(shot)


async def test_tampered_token_shows_the_friendly_not_valid_page(
    browser: Browser, http: httpx.AsyncClient, server: str, tenant: Tenant
) -> None:
    address = "tamper@example.com"
    await setup_recipient(http, tenant, address, ["news"])
    url = await unsubscribe_url(http, server, tenant, address, "news")
    base, token = url.rsplit("/", 1)
    middle = len(token) // 2
    tampered = token[:middle] + ("B" if token[middle] != "B" else "C") + token[middle + 1 :]

    async with open_page(browser, locale="en-US") as page:
        response = await page.goto(f"{base}/{tampered}")
        assert response is not None and response.status == 400
        await expect(page.get_by_role("heading", level=1)).to_have_text("This link does not work")
        await expect(page.locator("p")).to_contain_text("This unsubscribe link is not valid.")
        await expect(page.get_by_role("button")).to_have_count(0)

    assert await decision(http, tenant, address, "news") == ALLOWED
