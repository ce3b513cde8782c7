"""The dashboard's HTML in-process: how fresh it says it is (the snapshot's age, the worker's
backlog of uncounted events) and the unsubscribe-rate alert beside the complaint alert, read from
the real rollups and tenant settings."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.effects import drain_effects
from workers.health import update_health

from suppress.config import Settings
from suppress.db import create_pool
from suppress.health import ComplaintThresholds
from suppress.rollups import refresh_tenant
from suppress.sql import Queries
from tests.conftest import Tenant
from tests.support import check, consent, suppress

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    made = await create_pool(settings.require_database_url(), size=2)
    yield made
    await made.close()


def text_of(html: str) -> str:
    """The page's text as a reader gets it: tags gone, entities decoded, spaces collapsed."""
    html = re.sub(r"<style>.*?</style>", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


async def dashboard(client: Client, tenant: Tenant) -> str:
    response = await client.get("/dashboard", headers=tenant.auth("read"))
    assert response.status_code == 200, response.text
    return text_of(response.text)


async def some_events(client: Client, tenant: Tenant, n: int) -> None:
    for i in range(n):
        await consent(client, tenant, f"person{i}@example.no")


# -- freshness ---------------------------------------------------------------------------------------


async def test_a_worker_behind_is_shown_with_its_backlog(
    client: Client, tenant: Tenant, db: asyncpg.Connection, pool: asyncpg.Pool, queries: Queries
) -> None:
    """After a big import the counters lag for minutes: the page says so, with the backlog."""
    await some_events(client, tenant, 12)
    await refresh_tenant(pool, queries, tenant.id, datetime.now(UTC))
    # the events are still waiting for the worker, the oldest since 7 minutes ago
    await db.execute(
        "UPDATE pending_effects SET created_at = now() - interval '7 minutes' WHERE tenant_id = $1",
        tenant.id,
    )
    pending = await db.fetchval("SELECT count(*) FROM pending_effects WHERE tenant_id = $1", tenant.id)
    assert pending == 12

    text = await dashboard(client, tenant)
    assert "The worker is behind" in text
    assert "12 events are waiting to be counted, the oldest for 7 minutes" in text
    assert "within seconds" not in text

    body = (await client.get("/v1/health", headers=tenant.auth("read"))).json()
    freshness = body["freshness"]
    assert freshness["behind"] is True and freshness["pending_effects"] == 12
    assert 7 * 60 <= freshness["oldest_pending_seconds"] < 8 * 60
    assert freshness["snapshot_age_seconds"] < 60


async def test_a_worker_keeping_up_shows_no_warning_and_the_real_age(
    client: Client, tenant: Tenant, db: asyncpg.Connection, pool: asyncpg.Pool, queries: Queries
) -> None:
    await some_events(client, tenant, 3)
    ctx: dict[str, Any] = {"pool": pool, "queries": queries, "effects": [update_health]}
    assert await drain_effects(ctx, tenant.id) == 3
    await refresh_tenant(pool, queries, tenant.id, datetime.now(UTC) - timedelta(minutes=3))
    text = await dashboard(client, tenant)
    assert "The worker is behind" not in text
    assert "Audience snapshot updated 3 minutes ago" in text
    assert "Counters are up to date: no events are waiting." in text
    body = (await client.get("/v1/health", headers=tenant.auth("read"))).json()
    assert body["freshness"]["behind"] is False and body["freshness"]["pending_effects"] == 0
    assert body["freshness"]["oldest_pending_seconds"] is None
    assert 180 <= body["freshness"]["snapshot_age_seconds"] < 240

    # a few events just written are being counted: said, without a warning
    await some_events(client, tenant, 2)
    text = await dashboard(client, tenant)
    assert "The worker is behind" not in text and "2 events are being counted" in text


async def test_an_old_snapshot_is_a_worker_behind_too(
    client: Client, tenant: Tenant, pool: asyncpg.Pool, queries: Queries
) -> None:
    await refresh_tenant(pool, queries, tenant.id, datetime.now(UTC) - timedelta(minutes=20))
    text = await dashboard(client, tenant)
    assert "The worker is behind" in text
    assert "The audience snapshot is 20 minutes old" in text


def test_ages_in_human_units() -> None:
    from suppress.api.dashboard_pages import human_age
    from suppress.health import BEHIND_AFTER_SECONDS

    assert human_age(0) == "just now"
    assert human_age(4.9) == "just now"
    assert human_age(5) == "5 seconds ago"
    assert human_age(59) == "59 seconds ago"
    assert human_age(60) == "1 minute ago"
    assert human_age(3 * 60 + 59) == "3 minutes ago"
    assert human_age(3600) == "1 hour ago"
    assert human_age(5 * 3600 + 1) == "5 hours ago"
    assert human_age(86400 * 2) == "2 days ago"
    assert BEHIND_AFTER_SECONDS == 60


# -- the unsubscribe-rate alert ----------------------------------------------------------------------


async def _campaign(
    db: asyncpg.Connection, client: Client, tenant: Tenant, name: str, allowed: int, unsubscribes: int
) -> None:
    await check(client, tenant, ["x@example.no"], campaign=name)  # creates it (denied, no basis)
    campaign_id = await db.fetchval(
        "SELECT id FROM campaigns WHERE tenant_id = $1 AND name = $2", tenant.id, name
    )
    await db.execute(
        "INSERT INTO check_counts VALUES ($1, current_date - 3, 'email', $2, true, 'consent', $3)",
        tenant.id,
        campaign_id,
        allowed,
    )
    for i in range(unsubscribes):
        await suppress(client, tenant, f"u{i}@example.no", "unsubscribed", campaign=name)


async def test_an_unsubscribe_rate_over_the_tenant_line_is_an_alert(
    client: Client, tenant: Tenant, db: asyncpg.Connection, pool: asyncpg.Pool, queries: Queries
) -> None:
    await _campaign(db, client, tenant, "quiet", 1000, 4)  # 0.4 %
    await _campaign(db, client, tenant, "loud", 1000, 5)  # 0.5 %: the default line
    ctx: dict[str, Any] = {"pool": pool, "queries": queries, "effects": [update_health]}
    await drain_effects(ctx, tenant.id)
    await refresh_tenant(pool, queries, tenant.id, datetime.now(UTC))

    body = (await client.get("/v1/health", headers=tenant.auth("read"))).json()
    assert body["unsubscribe_thresholds"] == {"warn": 0.005}
    by_name = {c["campaign"]: c for c in body["campaigns"]}
    assert (by_name["loud"]["alert"], by_name["loud"]["alert_reasons"]) == ("warn", ["unsubscribe_rate"])
    assert (by_name["quiet"]["alert"], by_name["quiet"]["alert_reasons"]) == ("ok", [])
    text = await dashboard(client, tenant)
    assert "loud warn (unsubscribes)" in text
    assert "Unsubscribes: warn from 0.5 %" in text
    assert "Campaigns at stop / warn 0 / 1" in text

    # the line is a tenant setting
    patched = await client.patch(
        "/v1/settings", headers=tenant.auth("admin"), json={"unsubscribe_alert_rate": 0.004}
    )
    assert patched.status_code == 200 and patched.json()["unsubscribe_alert_rate"] == 0.004
    body = (await client.get("/v1/health", headers=tenant.auth("read"))).json()
    assert {c["campaign"]: c["alert"] for c in body["campaigns"]} == {"loud": "warn", "quiet": "warn"}
    assert "quiet warn (unsubscribes)" in await dashboard(client, tenant)
    csv_text = (await client.get("/dashboard/campaigns.csv", headers=tenant.auth("read"))).text
    header, *rows = csv_text.lstrip("\ufeff").splitlines()
    assert header.endswith(',"alert","alert_reasons"')
    assert all(r.endswith(',"warn","unsubscribe_rate"') for r in rows), rows

    # complaints over their line as well: both reasons, the worst level
    for i in range(3):
        await suppress(client, tenant, f"u{i}@example.no", "complained", campaign="loud")
    await drain_effects(ctx, tenant.id)
    body = (await client.get("/v1/health", headers=tenant.auth("read"))).json()
    loud = next(c for c in body["campaigns"] if c["campaign"] == "loud")
    assert (loud["alert"], loud["alert_reasons"]) == ("stop", ["complaint_rate", "unsubscribe_rate"])
    assert "loud stop (complaints, unsubscribes)" in await dashboard(client, tenant)


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "high", None])
async def test_the_unsubscribe_line_is_validated(client: Client, tenant: Tenant, bad: Any) -> None:
    response = await client.patch(
        "/v1/settings", headers=tenant.auth("admin"), json={"unsubscribe_alert_rate": bad}
    )
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    current = (await client.get("/v1/settings", headers=tenant.auth("read"))).json()
    assert current["unsubscribe_alert_rate"] == 0.005


def test_alert_levels_and_reasons() -> None:
    from suppress.health import campaign_alerts

    lines = ComplaintThresholds(warn=0.001, stop=0.003)
    assert campaign_alerts(0, 0, 0, lines, 0.005) == ("ok", [])
    assert campaign_alerts(0, 4, 1000, lines, 0.005) == ("ok", [])
    assert campaign_alerts(0, 5, 1000, lines, 0.005) == ("warn", ["unsubscribe_rate"])
    assert campaign_alerts(0, 1, 0, lines, 0.005) == ("warn", ["unsubscribe_rate"])  # none allowed
    assert campaign_alerts(1, 0, 1000, lines, 0.005) == ("warn", ["complaint_rate"])
    assert campaign_alerts(3, 9, 1000, lines, 0.005) == ("stop", ["complaint_rate", "unsubscribe_rate"])


async def test_openapi_documents_freshness_and_the_unsubscribe_alert(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    components = schema["components"]["schemas"]

    def component(suffix: str) -> dict[str, Any]:
        found: dict[str, Any] = next(v for k, v in components.items() if k.endswith(suffix))
        return found

    assert set(component("HealthReport")["properties"]) >= {"freshness", "unsubscribe_thresholds"}
    assert set(component("Freshness")["properties"]) == {
        "snapshot_age_seconds", "pending_effects", "pending_effects_capped", "oldest_pending_at",
        "oldest_pending_seconds", "behind",
    }  # fmt: skip
    reasons = component("CampaignHealth")["properties"]["alert_reasons"]
    assert reasons["items"]["enum"] == ["complaint_rate", "unsubscribe_rate"]
    line = component("TenantSettings")["properties"]["unsubscribe_alert_rate"]
    assert (line["exclusiveMinimum"], line["maximum"]) == (0, 1)
