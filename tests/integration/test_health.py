"""List health: the counting effect (idempotent), the per-tenant refresh (the same decisions as
policy.decide), GET /v1/health, the real worker, pruning, rebuilding, and the read plans."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from arq import create_pool as create_arq_pool
from arq.worker import Worker
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.health import (
    prune_health,
    refresh_job_id,
    refresh_tenant_health,
    schedule_health_refresh,
    update_health,
)
from workers.settings import EFFECTS, WorkerSettings

from suppress.config import Settings
from suppress.db import create_pool
from suppress.effects import EffectBatch
from suppress.health import (
    DAILY_METRICS,
    LATENCY_BOUNDS,
    PENDING_COUNT_LIMIT,
    ComplaintThresholds,
    HealthReport,
    HealthService,
    campaign_alert,
    latency_summary,
)
from suppress.policy import MessageContext, RecipientState, TenantPolicy, decide
from suppress.queue import JOB_REFRESH_HEALTH, enqueue, redis_settings
from suppress.rollups import STATE_FIELDS, rebuild_event_counters, refresh_tenant
from suppress.sql import Queries
from suppress.unsubscribe import UnsubscribeOrder, apply_order
from tests.conftest import Tenant, post_json
from tests.support import ONE_CLICK, check, consent, customer, flush_check_counts, link, suppress, topic

Client = AsyncTestClient[Litestar]
DAY = timedelta(days=1)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    made = await create_pool(settings.require_database_url(), size=4)
    yield made
    await made.close()


@pytest.fixture
def ctx(pool: asyncpg.Pool, queries: Queries) -> dict[str, Any]:
    return {"pool": pool, "queries": queries}


async def event_ids(db: asyncpg.Connection, tenant: Tenant) -> list[int]:
    rows = await db.fetch("SELECT id FROM events WHERE tenant_id = $1 ORDER BY id", tenant.id)
    return [r["id"] for r in rows]


async def run_effect(ctx: dict[str, Any], tenant: Tenant, ids: list[int]) -> None:
    batch = EffectBatch(tenant_id=tenant.id, event_ids=ids, claimed_at=datetime.now(UTC))
    async with ctx["pool"].acquire() as conn, conn.transaction():
        await update_health(ctx, conn, batch)


async def counters(db: asyncpg.Connection, tenant: Tenant) -> dict[str, Any]:
    """Every event-derived counter of a tenant, for comparing two ways of filling them."""
    daily = await db.fetch(
        "SELECT day, channel, metric, n FROM health_daily WHERE tenant_id = $1 ORDER BY 1, 2, 3", tenant.id
    )
    latency = await db.fetch(
        "SELECT day, bucket, n FROM health_latency WHERE tenant_id = $1 ORDER BY 1, 2", tenant.id
    )
    campaigns = await db.fetch(
        "SELECT c.name, h.unsubscribed, h.complained FROM health_campaigns h"
        " JOIN campaigns c ON c.id = h.campaign_id WHERE h.tenant_id = $1 ORDER BY 1",
        tenant.id,
    )
    return {
        "daily": [tuple(r) for r in daily],
        "latency": [tuple(r) for r in latency],
        "campaigns": [tuple(r) for r in campaigns],
    }


async def report(pool: asyncpg.Pool, queries: Queries, tenant: Tenant, **kw: Any) -> HealthReport:
    return await HealthService(pool, queries).report(tenant.id, datetime.now(UTC), **kw)


def today_email(rep: HealthReport) -> dict[str, int]:
    [day] = [d for d in rep.daily if d.day == datetime.now(UTC).date() and d.channel == "email"]
    return {m: getattr(day, m) for m in DAILY_METRICS}


async def activity(client: Client, tenant: Tenant) -> None:
    """One of each kind of event, two of them attributed to the campaign `spring`."""
    await topic(client, tenant, "news", soft_opt_in=False)
    for address in ("a@example.no", "b@example.no", "w@example.no"):
        await consent(client, tenant, address)
    url = await link(client, tenant, "a@example.no", topic="news", campaign="spring")
    response = await client.post(url, data=ONE_CLICK)
    assert response.status_code == 200
    await suppress(client, tenant, "b@example.no", "complained", campaign="spring")
    await suppress(client, tenant, "b@example.no", "complained", campaign="spring")  # a repeated report
    await suppress(client, tenant, "hard@example.no", "hard_bounced")
    await suppress(client, tenant, "soft@example.no", "soft_bounced")
    await suppress(client, tenant, "manual@example.no", "manual")
    await post_json(client, tenant, "/v1/consents/withdraw", {"channel": "email", "address": "w@example.no"})
    await customer(client, tenant, "c@example.no", "agreement_started")
    await customer(client, tenant, "c@example.no", "agreement_ended")
    await customer(client, tenant, "c@example.no", "purchase")
    await flush_check_counts(client)  # the link's check, counted for `spring`


EXPECTED_TODAY = {
    "unsubscribed": 2,  # the one-click from news, the withdrawal
    "complained": 2,  # two reports (the campaign counts the person once)
    "hard_bounced": 1,
    "soft_bounced": 1,
    "manual": 1,
    "erased": 0,
    "restricted": 0,
    "lifted": 0,
    "consents_given": 3,
    # the withdrawal ended w's consent; the one-click left the topic `news` and a's all-topics consent
    "consents_withdrawn": 1,
    "relationships_started": 1,
    "relationships_ended": 1,
    "purchases": 1,
}


# -- the effect ----------------------------------------------------------------------------------


async def test_every_event_counts_once_however_often_its_effect_runs(
    db: asyncpg.Connection, client: Client, tenant: Tenant, ctx: dict[str, Any], queries: Queries
) -> None:
    await activity(client, tenant)
    ids = await event_ids(db, tenant)
    await run_effect(ctx, tenant, ids)
    first = await counters(db, tenant)
    await run_effect(ctx, tenant, ids)  # a second run, as after a retry or a sweep
    # and concurrent runs of the same events on two connections
    await asyncio.gather(run_effect(ctx, tenant, ids), run_effect(ctx, tenant, list(reversed(ids))))
    assert await counters(db, tenant) == first

    rep = await report(ctx["pool"], queries, tenant)
    counts = today_email(rep)
    # the one-click unsubscribed from the topic only, so a's all-topics consent lives on
    assert counts == EXPECTED_TODAY
    [spring] = rep.campaigns
    assert (spring.campaign, spring.unsubscribed, spring.complained) == ("spring", 1, 1)
    assert rep.unsubscribe_latency_seconds.count == 2


async def test_all_effects_are_registered_and_counting_is_one_of_them() -> None:
    assert update_health in EFFECTS
    registered = {getattr(f, "name", None) or getattr(f, "__name__", None) for f in WorkerSettings.functions}
    assert JOB_REFRESH_HEALTH in registered


async def test_rebuilding_from_the_ledger_gives_the_same_counters(
    db: asyncpg.Connection, client: Client, tenant: Tenant, ctx: dict[str, Any], queries: Queries
) -> None:
    await activity(client, tenant)
    await run_effect(ctx, tenant, await event_ids(db, tenant))
    by_effect = await counters(db, tenant)
    assert by_effect["daily"]
    counted = await rebuild_event_counters(ctx["pool"], queries, tenant.id, batch=3)
    assert counted == len(await event_ids(db, tenant))
    assert await counters(db, tenant) == by_effect
    await run_effect(ctx, tenant, await event_ids(db, tenant))  # the effect after a rebuild adds nothing
    assert await counters(db, tenant) == by_effect


async def test_a_real_worker_runs_the_effects_and_the_refresh(
    db: asyncpg.Connection,
    client: Client,
    tenant: Tenant,
    settings: Settings,
    ctx: dict[str, Any],
    queries: Queries,
) -> None:
    await activity(client, tenant)
    await check(client, tenant, ["b@example.no", "hard@example.no", "new@example.no"], campaign="autumn")
    await flush_check_counts(client)
    arq = await create_arq_pool(redis_settings(settings.require_redis_url()))
    try:
        # the API enqueued the tenant's effects drain; the refresh goes through the cron's fan-out
        assert await schedule_health_refresh({**ctx, "redis": arq}) >= 1
        assert not await enqueue(arq, JOB_REFRESH_HEALTH, tenant.id, job_id=refresh_job_id(tenant.id))
        worker = Worker(
            functions=WorkerSettings.functions,
            on_startup=WorkerSettings.on_startup,
            on_shutdown=WorkerSettings.on_shutdown,
            redis_settings=redis_settings(settings.require_redis_url()),
            ctx={"settings": settings},
            burst=True,
            poll_delay=0.05,
            handle_signals=False,
        )
        try:
            await worker.main()
        finally:
            await worker.close()
        assert worker.jobs_complete >= 2 and worker.jobs_failed == 0
    finally:
        await arq.aclose()
    assert await db.fetchval("SELECT count(*) FROM pending_effects WHERE tenant_id = $1", tenant.id) == 0
    after_worker = await counters(db, tenant)
    await run_effect(ctx, tenant, await event_ids(db, tenant))
    assert await counters(db, tenant) == after_worker
    rep = await report(ctx["pool"], queries, tenant)
    assert today_email(rep) == EXPECTED_TODAY
    assert rep.snapshot_at is not None
    autumn = next(c for c in rep.campaigns if c.campaign == "autumn")
    assert (autumn.checked, autumn.allowed, autumn.denied) == (
        3,
        0,
        {"complained": 1, "hard_bounced": 1, "no_basis": 1},
    )


# -- the snapshot ----------------------------------------------------------------------------------


@pytest.mark.parametrize("validity", [None, 30])
async def test_the_snapshot_decides_exactly_like_the_policy(
    db: asyncpg.Connection, tenant: Tenant, pool: asyncpg.Pool, queries: Queries, validity: int | None
) -> None:
    """Random projection rows, with every time just before, at and after the lines the decision
    draws (consent validity and objections included); the snapshot's counts must equal
    policy.decide() run on each row."""
    rng = random.Random(20261129)
    now = datetime.now(UTC).replace(microsecond=123456)
    window = 200
    await db.execute(
        "UPDATE tenants SET relationship_window_days = $2, soft_opt_in_without_topic = true, "
        "consent_validity_days = $3 WHERE id = $1",
        tenant.id,
        window,
        validity,
    )
    soft = await db.fetchval(
        "INSERT INTO topics (tenant_id, name, soft_opt_in) VALUES ($1, 'soft', true) RETURNING id", tenant.id
    )
    hard = await db.fetchval(
        "INSERT INTO topics (tenant_id, name, soft_opt_in) VALUES ($1, 'hard', false) RETURNING id", tenant.id
    )
    edges = [
        None,
        now - DAY,
        now - timedelta(microseconds=1),
        now,
        now + timedelta(microseconds=1),
        now + DAY,
    ]
    line = now - timedelta(days=window)
    purchases = [None, line - DAY, line - timedelta(microseconds=1), line, line + timedelta(days=3), now]
    reasons = ["unsubscribed", "complained", "hard_bounced", "soft_bounced", "manual"]
    # consents lapse at `lapse` (with a validity); objections and consent times around it and each other
    lapse = now - timedelta(days=validity or 30)
    us = timedelta(microseconds=1)
    objections = [lapse - DAY, lapse - us, lapse, lapse + us, lapse + DAY, now - us]
    granted = sorted({t + d for t in objections for d in (-us, timedelta(0), us)})
    rows = []
    for i in range(4000):
        chosen = rng.sample(reasons, rng.choice([0, 0, 0, 1, 1, 2]))
        consent_topics = rng.sample([0, soft, hard], rng.choice([0, 0, 1, 2]))
        rows.append(
            (
                tenant.id,
                rng.choice(["email", "sms"]),
                i.to_bytes(4, "big"),
                chosen,
                [rng.choice(edges) for _ in chosen],
                rng.sample([soft, hard], rng.choice([0, 0, 0, 1])),
                consent_topics,
                [rng.choice(granted) for _ in consent_topics],
                rng.choice(objections) if rng.random() < 0.3 else None,
                [t for t in consent_topics if rng.random() < 0.3],
                rng.random() < 0.6,
                rng.random() < 0.15,
                rng.choice(purchases),
                now if rng.random() < 0.03 else None,
                now if rng.random() < 0.03 else None,
            )
        )
    await db.copy_records_to_table(
        "recipients",
        records=rows,
        columns=[
            "tenant_id", "channel", "address_hash", "suppression_reasons", "suppression_expires",
            "unsubscribed_topics", "consent_topics", "consent_granted", "objected_at", "partner_consent_topics",
            "collected_in_sale", "agreement_open", "last_purchase_at", "restricted_at", "erased_at",
        ],
    )  # fmt: skip
    done = await refresh_tenant(pool, queries, tenant.id, now)
    assert done is not None and done.recipients == 4000 and done.groups < 4000

    policy = TenantPolicy(
        relationship_window_days=window, soft_opt_in_without_topic=True, consent_validity_days=validity
    )
    messages = {
        None: MessageContext(),
        "soft": MessageContext(topic_id=soft, topic_soft_opt_in=True),
        "hard": MessageContext(topic_id=hard, topic_soft_opt_in=False),
    }
    expected: Counter[tuple[str, str | None, str]] = Counter()
    lapsing: Counter[tuple[str, date]] = Counter()
    for r in rows:
        state = RecipientState(
            suppression_reasons=r[3],
            suppression_expires=r[4],
            unsubscribed_topics=r[5],
            consent_topics=r[6],
            consent_granted=r[7],
            objected_at=r[8],
            partner_consent_topics=r[9],
            collected_in_sale=r[10],
            agreement_open=r[11],
            last_purchase_at=r[12],
            restricted=r[13] is not None,
            erased=r[14] is not None,
        )
        for name, message in messages.items():
            d = decide(policy, message, state, now)
            expected[(r[1], name, (d.basis if d.allowed else d.reason) or "")] += 1
        lapses = None if r[12] is None else r[12] + timedelta(days=window)
        if (
            r[10]
            and not r[11]
            and lapses is not None
            and now <= lapses < now + timedelta(days=30)
            and decide(policy, MessageContext(), state, now).allowed
        ):
            lapsing[(r[1], lapses.date())] += 1
    snapshot = await db.fetchrow(
        "SELECT audience, lapsing FROM health_snapshots WHERE tenant_id = $1", tenant.id
    )
    assert snapshot is not None
    got = Counter(
        {(c["channel"], c["topic"], c["outcome"]): c["n"] for c in json.loads(snapshot["audience"])}
    )
    assert got == expected
    got_lapsing = Counter(
        {(c["channel"], date.fromisoformat(c["day"])): c["n"] for c in json.loads(snapshot["lapsing"])}
    )
    assert got_lapsing == lapsing and sum(lapsing.values()) > 0

    rep = await HealthService(pool, queries).report(tenant.id, now)
    email = rep.reachable.email
    assert email.consent == expected[("email", None, "consent")]
    assert email.customer_relationship == expected[("email", None, "customer_relationship")]
    assert rep.suppressed.sms.complained == expected[("sms", None, "complained")]
    assert [t.topic for t in email.topics] == ["hard", "soft"]
    assert email.topics[0].customer_relationship == 0  # no soft opt-in on `hard`
    assert rep.suppressed.email.objected == expected[("email", None, "objected")] > 0
    if validity:  # some consents lapsed, some given after an objection count
        assert expected[("email", None, "consent")] > 0


def test_the_snapshot_reads_every_decision_input_and_policy_setting() -> None:
    """A new input of the decision must get a column in health_audience_groups (and a setting in
    health_refresh_inputs): this fails until it does."""
    assert set(STATE_FIELDS) == {
        "suppression_reasons", "suppression_expires", "unsubscribed_topics", "consent_topics",
        "partner_consent_topics", "collected_in_sale", "agreement_open", "last_purchase_at",
        "restricted", "erased", "consent_granted", "objected_at",
    }  # fmt: skip
    assert set(TenantPolicy.__struct_fields__) == {
        "relationship_window_days",
        "soft_opt_in_without_topic",
        "transactional_blocked_by",
        "consent_validity_days",
    }


async def test_relationships_lapsing_within_30_days(
    client: Client, tenant: Tenant, pool: asyncpg.Pool, queries: Queries
) -> None:
    now = datetime.now(UTC)
    await topic(client, tenant, "offers", soft_opt_in=True)
    bought = now - timedelta(days=350)
    await customer(client, tenant, "soon@example.no", "purchase", at=bought, ref="C-1")
    await customer(client, tenant, "later@example.no", "purchase", at=now - timedelta(days=10), ref="C-2")
    await customer(client, tenant, "member@example.no", "agreement_started", ref="C-3")
    await customer(client, tenant, "gone@example.no", "purchase", at=bought, ref="C-4")
    await suppress(client, tenant, "gone@example.no", "unsubscribed")
    await customer(client, tenant, "notsale@example.no", "purchase", at=bought, ref="C-5", collected=False)
    await refresh_tenant(pool, queries, tenant.id, now)
    rep = await HealthService(pool, queries).report(tenant.id, now)
    exp = rep.expiring_relationships
    assert (exp.total, exp.email, exp.sms) == (1, 1, 0)
    assert [(d.day, d.channel, d.recipients) for d in exp.by_day] == [
        ((bought + timedelta(days=365)).astimezone(UTC).date(), "email", 1)
    ]
    [offers] = rep.reachable.email.topics
    assert offers.customer_relationship == 3 and rep.reachable.email.customer_relationship == 0


# -- campaigns and latency ------------------------------------------------------------------------


async def _campaign_with(
    db: asyncpg.Connection, client: Client, tenant: Tenant, name: str, allowed: int, complaints: int
) -> None:
    await check(client, tenant, ["x@example.no"], campaign=name)  # creates it (denied, no basis)
    await flush_check_counts(client)
    campaign_id = await db.fetchval(
        "SELECT id FROM campaigns WHERE tenant_id = $1 AND name = $2", tenant.id, name
    )
    await db.execute(
        "INSERT INTO check_counts VALUES ($1, current_date - 3, 'email', $2, true, 'consent', $3)",
        tenant.id,
        campaign_id,
        allowed,
    )
    for i in range(complaints):
        await suppress(client, tenant, f"c{i}@example.no", "complained", campaign=name)


async def test_campaign_rates_and_alerts_follow_the_tenant_lines(
    db: asyncpg.Connection,
    client: Client,
    tenant: Tenant,
    ctx: dict[str, Any],
    pool: asyncpg.Pool,
    queries: Queries,
) -> None:
    await _campaign_with(db, client, tenant, "calm", 2000, 1)  # 0.05 %
    await _campaign_with(db, client, tenant, "edge-warn", 1000, 1)  # exactly 0.1 %
    await _campaign_with(db, client, tenant, "edge-stop", 1000, 3)  # exactly 0.3 %
    await run_effect(ctx, tenant, await event_ids(db, tenant))
    await refresh_tenant(pool, queries, tenant.id, datetime.now(UTC))
    rep = await report(pool, queries, tenant)
    by_name = {c.campaign: c for c in rep.campaigns}
    assert {n: c.alert for n, c in by_name.items()} == {
        "calm": "ok",
        "edge-warn": "warn",
        "edge-stop": "stop",
    }
    calm = by_name["calm"]
    assert (calm.checked, calm.allowed, calm.denied, calm.complained) == (2001, 2000, {"no_basis": 1}, 1)
    assert calm.complaint_rate == 1 / 2000 and calm.unsubscribe_rate == 0
    assert rep.complaint_thresholds == ComplaintThresholds(warn=0.001, stop=0.003)

    await db.execute("UPDATE tenants SET complaint_alert_rate = 0.0004 WHERE id = $1", tenant.id)
    rep = await report(pool, queries, tenant)
    assert {c.campaign: c.alert for c in rep.campaigns}["calm"] == "warn"
    assert [c.campaign for c in (await report(pool, queries, tenant, campaigns=2)).campaigns] == [
        c.campaign for c in rep.campaigns[:2]
    ]


def test_alert_lines() -> None:
    lines = ComplaintThresholds(warn=0.001, stop=0.003)
    assert campaign_alert(0, 0, lines) == "ok"
    assert campaign_alert(0, 10, lines) == "ok"
    assert campaign_alert(1, 0, lines) == "stop"  # complaints without any allowed recipient
    assert campaign_alert(1, 1001, lines) == "ok"
    assert campaign_alert(1, 1000, lines) == "warn"
    assert campaign_alert(2, 667, lines) == "warn"  # 0.2999 %
    assert campaign_alert(2, 666, lines) == "stop"
    assert campaign_alert(3, 1000, lines) == "stop"
    assert campaign_alert(3, 1001, lines) == "warn"


def test_latency_percentiles_are_bucket_upper_bounds() -> None:
    assert latency_summary({}).p50 is None and latency_summary({}).count == 0
    one_fast = latency_summary({1: 1})  # [0.01, 0.025)
    assert (one_fast.p50, one_fast.p99) == (0.025, 0.025)
    hours_50 = LATENCY_BOUNDS.index(48 * 3600.0)
    mixed = latency_summary({0: 98, hours_50: 2})
    assert mixed.p50 == 0.01 and mixed.p99 == 72 * 3600 and mixed.over_48h == 2 and mixed.count == 100
    assert latency_summary({0: 99, hours_50: 1}).p99 == 0.01
    last = len(LATENCY_BOUNDS) - 1
    assert latency_summary({last: 1}).p99 == LATENCY_BOUNDS[last]


async def test_unsubscribe_latency_against_the_48_hour_rule(
    db: asyncpg.Connection,
    client: Client,
    tenant: Tenant,
    app: Litestar,
    ctx: dict[str, Any],
    queries: Queries,
) -> None:
    await consent(client, tenant, "late@example.no")
    await consent(client, tenant, "quick@example.no")
    now = datetime.now(UTC)
    for address, asked in (("late@example.no", now - timedelta(hours=50)), ("quick@example.no", now)):
        path = await link(client, tenant, address)
        claims = app.state.keyring.verify(path.rsplit("/", 1)[1])
        order = UnsubscribeOrder(
            tenant_id=tenant.id,
            channel="email",
            address_hash=claims.address_hash,
            topic_id=0,
            campaign_id=None,
            source="one_click",
            requested_at=asked,
            token_issued_at=claims.issued_at,
            spooled=asked < now,
        )
        assert await apply_order(ctx["pool"], queries, order) is not None
    await run_effect(ctx, tenant, await event_ids(db, tenant))
    latency = (await report(ctx["pool"], queries, tenant)).unsubscribe_latency_seconds
    assert (latency.count, latency.over_48h) == (2, 1)
    assert latency.p99 == 72 * 3600 and latency.p50 is not None and latency.p50 <= 1


# -- GET /v1/health --------------------------------------------------------------------------------


async def test_get_health_json_contract(
    client: Client, tenant: Tenant, ctx: dict[str, Any], db: asyncpg.Connection, queries: Queries
) -> None:
    await activity(client, tenant)
    await run_effect(ctx, tenant, await event_ids(db, tenant))
    before = (await client.get("/v1/health", headers=tenant.auth("read"))).json()
    assert before["snapshot_at"] is None and before["reachable"]["email"]["total"] == 0
    await refresh_tenant(ctx["pool"], queries, tenant.id, datetime.now(UTC))
    response = await client.get("/v1/health?days=7", headers=tenant.auth("read"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "tenant", "generated_at", "snapshot_at", "days", "reachable", "suppressed", "daily", "campaigns",
        "complaint_thresholds", "unsubscribe_thresholds", "unsubscribe_latency_seconds",
        "expiring_relationships", "freshness",
    }  # fmt: skip
    assert body["tenant"] == tenant.name and body["days"] == 7 and body["snapshot_at"] is not None
    assert len(body["daily"]) == 14 and body["daily"][-1]["day"] == datetime.now(UTC).date().isoformat()
    assert set(body["unsubscribe_latency_seconds"]) >= {"p50", "p99"}
    [spring] = body["campaigns"]
    assert spring == {
        "campaign": "spring",
        "checked": 1,
        "allowed": 1,
        "denied": {},
        "unsubscribed": 1,
        "complained": 1,
        "unsubscribe_rate": 1.0,
        "complaint_rate": 1.0,
        "alert": "stop",
        "alert_reasons": ["complaint_rate", "unsubscribe_rate"],
    }
    assert body["unsubscribe_thresholds"] == {"warn": 0.005}
    assert set(body["freshness"]) == {
        "snapshot_age_seconds", "pending_effects", "pending_effects_capped", "oldest_pending_at",
        "oldest_pending_seconds", "behind",
    }  # fmt: skip
    email = body["reachable"]["email"]
    # b complained, w withdrew, a left `news` only: a is reachable without a topic, not on `news`
    assert (email["consent"], email["total"]) == (1, 1)
    assert email["topics"] == [
        {"consent": 0, "customer_relationship": 0, "total": 0, "topic": "news", "unsubscribed": 2}
    ]
    assert body["suppressed"]["email"]["complained"] == 1
    assert set(body["reachable"]["email"]) == {
        "consent",
        "customer_relationship",
        "total",
        "no_basis",
        "topics",
    }
    assert set(body["suppressed"]["sms"]) >= {"unsubscribed", "complained", "hard_bounced", "total"}


@pytest.mark.parametrize("days", ["0", "367", "-1", "seven", "1.5"])
async def test_days_outside_1_to_366_is_a_400(client: Client, tenant: Tenant, days: str) -> None:
    response = await client.get(f"/v1/health?days={days}", headers=tenant.auth("read"))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_parameter"


async def test_health_needs_the_read_scope(client: Client, tenant: Tenant) -> None:
    assert (await client.get("/v1/health")).status_code == 401
    assert (await client.get("/v1/health", headers=tenant.auth("check"))).status_code == 403
    assert (await client.get("/v1/health?days=366", headers=tenant.auth("admin"))).status_code == 200


async def test_openapi_documents_the_health_report(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/v1/health"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"days", "campaigns"}
    days = next(p for p in operation["parameters"] if p["name"] == "days")
    assert (days["schema"]["minimum"], days["schema"]["maximum"]) == (1, 366)
    components = schema["components"]["schemas"]
    report = next(v for k, v in components.items() if k.endswith("HealthReport"))
    assert set(report["properties"]) >= {
        "reachable",
        "suppressed",
        "daily",
        "campaigns",
        "expiring_relationships",
    }
    campaign = next(v for k, v in components.items() if k.endswith("CampaignHealth"))
    assert campaign["properties"]["alert"]["enum"] == ["ok", "warn", "stop"]
    assert "/dashboard" not in schema["paths"]


# -- upkeep and read plans ------------------------------------------------------------------------


async def test_prune_forgets_only_counted_events_whose_effects_are_long_done(
    db: asyncpg.Connection, tenant: Tenant, ctx: dict[str, Any]
) -> None:
    old = datetime.now(UTC) - timedelta(days=2)
    await db.executemany(
        "INSERT INTO health_counted_events (tenant_id, event_id, counted_at) VALUES ($1, $2, $3)",
        [(tenant.id, -1, old), (tenant.id, -2, old), (tenant.id, -3, datetime.now(UTC))],
    )
    await db.execute("INSERT INTO pending_effects (tenant_id, event_id) VALUES ($1, -2)", tenant.id)
    try:
        assert await prune_health(ctx) >= 1
        left = await db.fetch(
            "SELECT event_id FROM health_counted_events WHERE tenant_id = $1 AND event_id < 0 ORDER BY 1",
            tenant.id,
        )
        assert [r["event_id"] for r in left] == [-3, -2]
    finally:
        await db.execute("DELETE FROM pending_effects WHERE tenant_id = $1 AND event_id = -2", tenant.id)


async def test_the_refresh_job_for_a_tenant_that_is_gone(ctx: dict[str, Any]) -> None:
    assert await refresh_tenant_health(ctx, 2_000_000_000) == "gone"


# Each read, the tables it must reach through an index, and the key columns one of which that
# index lookup must be on. Properties, not index names: PostgreSQL 15 and 18 pick different
# (equally good) indexes for the same read.
READS: dict[str, dict[str, tuple[str, ...]]] = {
    "health_overview": {"health_snapshots": ("tenant_id",), "pending_effects": ("tenant_id",)},
    "health_daily_counts": {"health_daily": ("tenant_id",)},
    "health_latency_counts": {"health_latency": ("tenant_id",)},
    "health_campaign_rows": {"health_campaigns": ("tenant_id",)},
    "dashboard_session_viewer": {"dashboard_sessions": ("id_hash",), "api_keys": ("id", "tenant_id")},
}
_INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


def _lookup_condition(node: dict[str, Any]) -> str:
    """The condition an index scan looks its rows up by (a bitmap scan's is on its index child)."""
    if node["Node Type"] == "Bitmap Heap Scan":
        return " AND ".join(_lookup_condition(child) for child in _plan_nodes(node)[1:])
    return str(node.get("Index Cond", ""))


@pytest.mark.parametrize(("name", "lookups"), list(READS.items()))
async def test_health_reads_are_index_lookups(
    db: asyncpg.Connection,
    queries: Queries,
    tenant: Tenant,
    name: str,
    lookups: dict[str, tuple[str, ...]],
) -> None:
    """Each read finds its tenant's rows by an index lookup on their key, never a scan of a table.

    Seq scans are priced out, as on a big table.
    """
    args: dict[str, tuple[Any, ...]] = {
        "health_overview": (tenant.id, PENDING_COUNT_LIMIT),
        "health_daily_counts": (tenant.id, date.today()),
        "health_latency_counts": (tenant.id, date.today()),
        "health_campaign_rows": (tenant.id, datetime.now(UTC), 100),
        "dashboard_session_viewer": (b"\x00" * 32, datetime.now(UTC)),
    }
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        statement = await db.prepare("EXPLAIN (FORMAT JSON) " + getattr(queries, name))
        raw = await statement.fetchval(*args[name])
    nodes = _plan_nodes(json.loads(raw)[0]["Plan"])
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes
    for table, keys in lookups.items():
        scans = [n for n in nodes if n.get("Relation Name") == table]
        assert scans, (table, nodes)
        for scan in scans:
            assert scan["Node Type"] in _INDEX_SCANS, (table, nodes)
            condition = _lookup_condition(scan)
            assert any(re.search(rf"\b{key} = ", condition) for key in keys), (table, condition)


@pytest.mark.e2e  # runs a real process
async def test_the_operator_command_refreshes_and_rebuilds(
    db: asyncpg.Connection, client: Client, tenant: Tenant, settings: Settings
) -> None:
    await activity(client, tenant)
    env = {**os.environ, "SUPPRESS_DATABASE_URL": settings.require_database_url()}
    for command in ("refresh", "rebuild"):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "suppress.rollups", command, str(tenant.id), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        if command == "rebuild":
            assert int(out) == len(await event_ids(db, tenant))
    assert await db.fetchval("SELECT count(*) FROM health_snapshots WHERE tenant_id = $1", tenant.id) == 1
    assert (
        await db.fetchval(
            "SELECT sum(n) FROM health_daily WHERE tenant_id = $1 AND metric = 'complained'", tenant.id
        )
        == 2
    )
