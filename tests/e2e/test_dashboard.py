"""The dashboard: sign-in, what a person sees in a real headless Chromium (the system's, driven by
Playwright) served by a real `suppress serve`, the CSV download, and the session cookie's rules.

Data is made through the server's HTTP API; the rollups are then brought up to date the way the
worker does it (the counting effect for every event, one refresh of the tenant).
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from axe_playwright_python.async_playwright import Axe
from litestar import Litestar
from litestar.testing import AsyncTestClient
from playwright.async_api import Browser, Page, ViewportSize, expect

from suppress.api.dashboard import SESSION_SECONDS
from suppress.api.dashboard_pages import campaigns_csv
from suppress.config import Settings
from suppress.db import create_pool
from suppress.health import CampaignHealth
from suppress.rollups import count_events, refresh_tenant
from suppress.sql import Queries
from tests.conftest import Tenant
from tests.live import PHONE, api, assert_png, open_page

PHONE_390: ViewportSize = {"width": 390, "height": 844}
LAPTOP: ViewportSize = {"width": 1280, "height": 800}
SMS_PEOPLE = ["+4791234560", "+4791234561", "+4791234562"]
FORMULA = '=HYPERLINK("https://evil.example","click")'
MARKUP = "<b>Bold</b> & co"
SPRING = "Spring sale"


# -- a tenant with some history -----------------------------------------------------------------


async def checked(http: httpx.AsyncClient, tenant: Tenant, campaign: str, recipients: list[str]) -> list[Any]:
    body = {"channel": "email", "purpose": "marketing", "campaign": campaign, "recipients": recipients}
    results: list[Any] = (await api(http, tenant, "/v1/checks", body, "check"))["results"]
    return results


async def history(http: httpx.AsyncClient, tenant: Tenant, settings: Settings, queries: Queries) -> None:
    """Consents, customers, three campaigns (one over the stop line), an unsubscribe, bounces; then
    the counting effect for every event and one refresh, as the worker would."""
    await api(http, tenant, "/v1/topics", {"name": "offers", "soft_opt_in": True})
    people = [f"person{i}@example.no" for i in range(40)]
    for address in people:
        await api(http, tenant, "/v1/consents", {"channel": "email", "address": address, "source": "signup"})
    for number in SMS_PEOPLE:  # a small SMS audience beside 40-odd email recipients
        await api(http, tenant, "/v1/consents", {"channel": "sms", "address": number, "source": "signup"})
    long_ago = (datetime.now(UTC) - timedelta(days=350)).isoformat()
    for i in range(4):
        body = {
            "customer_ref": f"C-{i}",
            "event": "purchase",
            "at": long_ago,
            "addresses": [{"channel": "email", "address": f"buyer{i}@example.no", "collected_in_sale": True}],
        }
        await api(http, tenant, "/v1/customers", body)
    spring = await checked(http, tenant, SPRING, people[:20])
    await checked(http, tenant, FORMULA, people[20:])
    await checked(http, tenant, MARKUP, [*people[:5], "nobody@example.no"])
    for address in people[:2]:
        suppression = {"channel": "email", "address": address, "reason": "complained", "campaign": SPRING}
        await api(http, tenant, "/v1/suppressions", suppression)
    one_click = await http.post(spring[5]["unsubscribe_url"], data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    for address, reason in (("bounce@example.no", "hard_bounced"), ("full@example.no", "soft_bounced")):
        await api(
            http, tenant, "/v1/suppressions", {"channel": "email", "address": address, "reason": reason}
        )
    pool = await create_pool(settings.require_database_url(), size=2)
    try:
        # The server adds the checks' outcome counts to check_counts within a second: wait for them.
        counted = "SELECT coalesce(sum(recipients), 0) FROM check_counts WHERE tenant_id = $1"
        deadline = asyncio.get_running_loop().time() + 30
        while await pool.fetchval(counted, tenant.id) < 46:  # 20 + 20 + 6 recipients checked
            assert asyncio.get_running_loop().time() < deadline, "the check counts were never flushed"
            await asyncio.sleep(0.1)
        ids = [r["id"] for r in await pool.fetch("SELECT id FROM events WHERE tenant_id = $1", tenant.id)]
        for event_id in ids:
            await count_events(pool, queries, tenant.id, [event_id])
        await refresh_tenant(pool, queries, tenant.id, datetime.now(UTC))
    finally:
        await pool.close()


async def sign_in(page: Any, server: str, key: str) -> None:
    await page.goto(f"{server}/dashboard")
    await expect(page).to_have_url(f"{server}/dashboard/login")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()


# -- in the browser ---------------------------------------------------------------------------------


async def test_sign_in_read_the_dashboard_download_csv_and_sign_out(
    browser: Browser,
    http: httpx.AsyncClient,
    server: str,
    tenant: Tenant,
    settings: Settings,
    queries: Queries,
    tmp_path: Path,
) -> None:
    await history(http, tenant, settings, queries)
    async with open_page(browser, viewport={"width": 1366, "height": 900}, accept_downloads=True) as page:
        await sign_in(page, server, "sk_" + "x" * 43)
        await expect(page.get_by_role("alert")).to_have_text("That API key is not valid.")
        await page.get_by_label("API key").fill(tenant.keys["check"])
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_have_text("That API key lacks the read scope.")
        assert await page.context.cookies() == []

        await page.get_by_label("API key").fill(tenant.keys["read"])
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(f"{server}/dashboard")
        await expect(page.get_by_role("heading", level=1)).to_have_text(f"List health · {tenant.name}")

        [cookie] = await page.context.cookies()
        assert (
            cookie["name"] == "suppress_dashboard" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        )
        assert not cookie["secure"]  # plain http here; https public URLs get Secure and __Host- (below)
        lifetime = cookie["expires"] - datetime.now(UTC).timestamp()
        assert SESSION_SECONDS - 60 < lifetime <= SESSION_SECONDS
        assert tenant.keys["read"] not in cookie["value"] and tenant.keys["read"][3:12] not in cookie["value"]

        text = await page.locator("main").inner_text()
        for heading in (
            "Reachable audience by basis",
            "Suppressions by reason",
            "Campaigns",
            "Unsubscribe latency",
            "Relationships about to lapse",
        ):
            await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        assert "Every unsubscribe in this period (1) was applied within 48 hours." in text
        assert "4 recipients lose their customer-relationship basis in the next 30 days" in text
        spring = page.get_by_role("row").filter(has_text=SPRING)
        await expect(spring).to_contain_text("stop")
        await expect(spring).to_contain_text("10.00 %")  # 2 complaints of 20 allowed
        await expect(page.get_by_role("row").filter(has_text=FORMULA)).to_contain_text("ok")
        await expect(page.get_by_role("row").filter(has_text=MARKUP)).to_be_visible()  # text, not markup
        assert await page.locator("main b").count() == 0
        charts = page.locator("svg[role=img]")
        assert await charts.count() >= 4
        for chart in await charts.all():
            assert (await chart.locator("title").first.text_content() or "").strip()
        await expect(page.get_by_role("img", name="Complaint rate by campaign")).to_be_visible()
        shot = tmp_path / "dashboard-laptop.png"
        await page.screenshot(path=shot, full_page=True)
        assert_png(shot)

        async with page.expect_download() as info:
            await page.get_by_role("link", name="Download CSV").click()
        download = await info.value
        target = tmp_path / download.suggested_filename
        await download.save_as(target)
        assert target.name.startswith("campaigns-") and target.suffix == ".csv"
        rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8-sig"))))
        by_name = {r["campaign"]: r for r in rows}
        assert set(by_name) == {SPRING, "'" + FORMULA, MARKUP}
        assert by_name[SPRING]["complained"] == "2" and by_name[SPRING]["alert"] == "stop"
        assert by_name[SPRING]["allowed"] == "20" and by_name[MARKUP]["denied_no_basis"] == "1"

        await page.get_by_role("button", name="Sign out").click()
        await expect(page).to_have_url(f"{server}/dashboard/login")
        assert await page.context.cookies() == []
        await page.goto(f"{server}/dashboard")
        await expect(page).to_have_url(f"{server}/dashboard/login")


async def test_on_a_phone_nothing_needs_sideways_scrolling(
    browser: Browser,
    http: httpx.AsyncClient,
    server: str,
    tenant: Tenant,
    settings: Settings,
    queries: Queries,
    tmp_path: Path,
) -> None:
    await history(http, tenant, settings, queries)
    async with open_page(
        browser, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    ) as page:
        await sign_in(page, server, tenant.keys["read"])
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        width = await page.evaluate("window.innerWidth")
        assert width == PHONE["width"]
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        for chart in await page.locator("svg[role=img]").all():
            box = await chart.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box
        shot = tmp_path / "dashboard-phone.png"
        await page.screenshot(path=shot, full_page=True)
        assert_png(shot)


async def test_on_a_390_px_phone_the_campaign_alerts_stay_in_view(
    browser: Browser,
    http: httpx.AsyncClient,
    server: str,
    tenant: Tenant,
    settings: Settings,
    queries: Queries,
    tmp_path: Path,
) -> None:
    """The Alert column is the one a marketer looks for: it must not sit beyond the table's scroll."""
    await history(http, tenant, settings, queries)
    async with open_page(
        browser, viewport=PHONE_390, device_scale_factor=2, is_mobile=True, has_touch=True
    ) as page:
        await sign_in(page, server, tenant.keys["read"])
        table = page.get_by_role("table", name="Campaigns active in the last 30 days, most recent first")
        await expect(table).to_be_visible()
        box = await table.locator("xpath=..").bounding_box()  # the scrolling box around the table
        assert box is not None
        right = min(box["x"] + box["width"], PHONE_390["width"])
        alert_header = table.get_by_role("columnheader", name="Alert")
        cells = [alert_header, *(await table.locator("tbody td.alert").all())]
        assert len(cells) == 4  # the header and three campaigns
        for cell in cells:
            await expect(cell).to_be_visible()
            cell_box = await cell.bounding_box()
            assert cell_box is not None
            assert box["x"] <= cell_box["x"] and cell_box["x"] + cell_box["width"] <= right, (cell_box, box)
        spring = table.get_by_role("row").filter(has_text=SPRING)
        await expect(spring.locator("td.alert")).to_have_text("stop (complaints, unsubscribes)")
        shot = tmp_path / "dashboard-390.png"
        await page.screenshot(path=shot, full_page=True)
        assert_png(shot)


async def _bar_width(page: Page, prefix: str) -> float:
    """The drawn width of the audience chart's row `prefix` (all its stacked segments)."""
    total = 0.0
    for rect in await page.locator("svg[role=img] rect").all():
        title = await rect.locator("title").text_content() if await rect.locator("title").count() else ""
        if title and title.startswith(prefix + ":"):
            box = await rect.bounding_box()
            assert box is not None
            total += box["width"]
    return total


async def test_sms_has_its_own_scale_in_the_audience_chart(
    browser: Browser,
    http: httpx.AsyncClient,
    server: str,
    tenant: Tenant,
    settings: Settings,
    queries: Queries,
) -> None:
    """3 SMS recipients beside 40-odd email ones: drawn on the email scale they would be a sliver."""
    await history(http, tenant, settings, queries)
    async with open_page(browser, viewport=LAPTOP) as page:
        await sign_in(page, server, tenant.keys["read"])
        email = await _bar_width(page, "Email · no topic")
        sms = await _bar_width(page, "SMS · no topic")
        assert email > 100, email
        assert sms > 0.9 * email, (sms, email)  # each channel's largest row fills its own chart
        chart = page.get_by_role("img", name="Reachable SMS audience by basis")
        await expect(chart).to_be_visible()
        # each axis says where its own scale ends: 3 SMS recipients, 40-odd by email
        sms_axis = await chart.locator("text").last.text_content()
        email_axis = (
            await page.get_by_role("img", name="Reachable email audience by basis")
            .locator("text")
            .last.text_content()
        )
        assert sms_axis == "3" and email_axis is not None and int(email_axis) > 40, (sms_axis, email_axis)


async def _serious_violations(page: Page) -> list[str]:
    results = await Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("viewport", [PHONE_390, LAPTOP], ids=["390px", "1280px"])
async def test_every_dashboard_page_passes_axe(
    browser: Browser,
    http: httpx.AsyncClient,
    server: str,
    tenant: Tenant,
    settings: Settings,
    queries: Queries,
    viewport: ViewportSize,
) -> None:
    """axe-core (bundled with axe-playwright-python, no network): no serious or critical violation
    on the sign-in form, its error, an empty dashboard, a full one, and one with the worker behind."""
    found: dict[str, list[str]] = {}
    async with open_page(browser, viewport=viewport) as page:
        await page.goto(f"{server}/dashboard/login")
        found["sign-in"] = await _serious_violations(page)
        await page.get_by_label("API key").fill("sk_" + "x" * 43)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_be_visible()
        found["sign-in error"] = await _serious_violations(page)
        await page.get_by_label("API key").fill(tenant.keys["read"])
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(f"{server}/dashboard")
        found["empty dashboard"] = await _serious_violations(page)
        await history(http, tenant, settings, queries)
        await page.goto(f"{server}/dashboard?days=7")
        found["dashboard"] = await _serious_violations(page)
        pool = await create_pool(settings.require_database_url(), size=1)
        try:
            # the server runs no worker: the events' effects are pending; make them old
            await pool.execute(
                "UPDATE pending_effects SET created_at = now() - interval '5 minutes' WHERE tenant_id = $1",
                tenant.id,
            )
        finally:
            await pool.close()
        await page.goto(f"{server}/dashboard")
        await expect(page.get_by_text("The worker is behind")).to_be_visible()
        found["dashboard, worker behind"] = await _serious_violations(page)
    assert found == {name: [] for name in found}


# -- over plain HTTP ----------------------------------------------------------------------------------


async def test_a_bearer_key_gets_the_dashboard_and_the_csv_without_a_session(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    page = await http.get("/dashboard", headers=tenant.auth("read"))
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "set-cookie" not in page.headers
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text and "http://" not in page.text.replace('xmlns="http://www.w3.org', "")
    download = await http.get("/dashboard/campaigns.csv?days=7", headers=tenant.auth("read"))
    assert download.status_code == 200 and download.headers["content-type"] == "text/csv; charset=utf-8"
    assert download.headers["content-disposition"].startswith('attachment; filename="campaigns-')
    assert download.text.lstrip("\ufeff").startswith('"campaign","checked","allowed","denied",')
    assert (await http.get("/dashboard", headers=tenant.auth("check"))).status_code == 403
    assert (await http.get("/dashboard?days=0", headers=tenant.auth("read"))).status_code == 400


async def test_without_a_session_the_dashboard_sends_people_to_sign_in(http: httpx.AsyncClient) -> None:
    for path in ("/dashboard", "/dashboard/campaigns.csv"):
        response = await http.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"
    login = await http.get("/dashboard/login")
    assert login.status_code == 200 and 'type="password"' in login.text


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}],
)
async def test_sign_in_from_another_site_is_refused(
    http: httpx.AsyncClient, tenant: Tenant, headers: dict[str, str]
) -> None:
    response = await http.post("/dashboard/login", data={"api_key": tenant.keys["read"]}, headers=headers)
    assert response.status_code == 403 and "set-cookie" not in response.headers


async def test_signed_out_copied_forged_and_revoked_sessions_are_refused(
    http: httpx.AsyncClient, tenant: Tenant, db: asyncpg.Connection
) -> None:
    async def status(value: str) -> int:
        response = await http.get("/dashboard", headers={"Cookie": f"suppress_dashboard={value}"})
        http.cookies.clear()
        return response.status_code

    async def sign_in() -> str:
        response = await http.post("/dashboard/login", data={"api_key": tenant.keys["read"]})
        assert response.status_code == 303, response.text
        value = response.cookies["suppress_dashboard"]
        http.cookies.clear()
        return value

    first, second = await sign_in(), await sign_in()
    assert first != second and await status(first) == 200 and await status(second) == 200
    assert await status(first[:-2] + ("AA" if first[-2:] != "AA" else "BB")) == 303  # altered
    assert await status("garbage") == 303
    # signing out ends that session for every copy of its cookie, and only that one
    out = await http.post("/dashboard/logout", headers={"Cookie": f"suppress_dashboard={first}"})
    http.cookies.clear()
    assert out.status_code == 303
    assert await status(first) == 303 and await status(second) == 200
    await db.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND scopes = '{read}'", tenant.id
    )
    assert await status(second) == 303


# -- in-process: the https cookie, and the CSV ------------------------------------------------------


async def test_with_an_https_public_url_the_cookie_is_secure_and_host_only(
    client: AsyncTestClient[Litestar], tenant: Tenant
) -> None:
    response = await client.post(
        "/dashboard/login", data={"api_key": tenant.keys["read"]}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-suppress_dashboard=")
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/", f"Max-Age={SESSION_SECONDS}"):
        assert attribute in cookie, cookie
    assert tenant.keys["read"] not in cookie


def test_csv_quotes_properly_and_never_starts_a_formula() -> None:
    def campaign(name: str) -> CampaignHealth:
        return CampaignHealth(
            campaign=name,
            checked=3,
            allowed=2,
            denied={"no_basis": 1, "new_reason": 0},
            unsubscribed=1,
            complained=0,
            unsubscribe_rate=0.5,
            complaint_rate=0.0,
            alert="ok",
            alert_reasons=[],
        )

    names = ["=1+1", "+SUM(A1)", "-2", "@cmd", "\tx", "plain, with comma", 'say "hi"', "line\nbreak", "ok"]
    text = campaigns_csv([campaign(n) for n in names])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0][:4] == ["campaign", "checked", "allowed", "denied"] and "denied_new_reason" in rows[0]
    assert rows[0][-2:] == ["alert", "alert_reasons"]
    assert [r[0] for r in rows[1:]] == [
        "'=1+1", "'+SUM(A1)", "'-2", "'@cmd", "'\tx", "plain, with comma", 'say "hi"', "line\nbreak", "ok",
    ]  # fmt: skip
    assert all(len(r) == len(rows[0]) for r in rows)
    assert text.endswith("\r\n")
