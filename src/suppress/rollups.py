"""Keeping the list-health rollups current (the worker side of `suppress.health`).

- `count_events`: the effect every ledger event goes through. One statement adds the event to the
  daily counters, the unsubscribe-latency histogram and its campaign's unsubscribes and
  complaints, and remembers the event in `health_counted_events`, so a second run adds nothing.
- `refresh_tenant`: the per-tenant cron job. It recomputes the check totals of recently checked
  campaigns from `check_counts`, and the state snapshot: what a marketing check (own offer) would
  answer for every known recipient, per channel and topic, with `policy.decide` itself run once
  per group of recipients whose decision inputs compare alike with now (`health_audience_groups`),
  plus the customer relationships lapsing in the next 30 days.
- `prune_counted_events`: forgets counted events whose effects are done.
- `rebuild_event_counters`: counts a tenant's whole ledger again (after restoring a backup, or to
  fill the counters for events recorded before the rollups existed).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from suppress.decisions import tenant_policy
from suppress.health import LAPSE_HORIZON_DAYS, LATENCY_BOUNDS, AudienceCount, LapsingCount
from suppress.models import Channel
from suppress.policy import MessageContext, RecipientState, TenantPolicy, decide
from suppress.sql import Queries

# The decision inputs the snapshot query returns per group, by name: a field added to
# RecipientState without a column in `health_audience_groups` fails loudly (KeyError), never silently.
STATE_FIELDS: tuple[str, ...] = RecipientState.__struct_fields__
REBUILD_BATCH = 50_000
PRUNE_BATCH = 10_000
# A counted event is forgotten this long after its effects are done (a late duplicate run of the
# effects job, e.g. from the sweeper, must still find it).
COUNTED_KEEP = timedelta(days=1)


class TopicInfo(msgspec.Struct, frozen=True):
    id: int
    name: str
    soft_opt_in: bool


class Refresh(msgspec.Struct, frozen=True, kw_only=True):
    """What one tenant's refresh did."""

    tenant_id: int
    groups: int
    recipients: int
    duration_ms: int


async def count_events(
    conn: asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy[Any],
    queries: Queries,
    tenant_id: int,
    event_ids: Sequence[int],
) -> int:
    """Add events to the counters (each at most once, ever); returns how many were new."""
    counted: int = await conn.fetchval(
        queries.count_health_events, tenant_id, list(event_ids), list(LATENCY_BOUNDS)
    )
    return counted


async def rebuild_event_counters(
    pool: asyncpg.Pool, queries: Queries, tenant_id: int, *, batch: int = REBUILD_BATCH
) -> int:
    """Drop the tenant's event counters and count every event again, in one transaction (effects
    running meanwhile wait for it, then find their events counted). Returns the events counted."""
    counted = 0
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(queries.forget_health_events, tenant_id)
        bounds = await conn.fetchrow(queries.tenant_event_id_range, tenant_id)
        if bounds is None or bounds["first_id"] is None:
            return 0
        for start in range(bounds["first_id"], bounds["last_id"] + 1, batch):
            ids = await conn.fetchval(queries.event_ids_between, tenant_id, start, start + batch)
            if ids:
                counted += await count_events(conn, queries, tenant_id, ids)
    return counted


async def prune_counted_events(
    pool: asyncpg.Pool, queries: Queries, now: datetime, *, keep: timedelta = COUNTED_KEEP
) -> int:
    """Forget counted events older than `keep` whose effects are done; returns how many."""
    pruned = 0
    while True:
        status = await pool.execute(queries.prune_health_counted_events, now - keep, PRUNE_BATCH)
        deleted = int(status.split()[-1])
        pruned += deleted
        if deleted < PRUNE_BATCH:
            return pruned


def tally_audience(
    policy: TenantPolicy, topics: Iterable[TopicInfo], groups: Iterable[Any], now: datetime
) -> tuple[list[AudienceCount], list[LapsingCount]]:
    """Decide each group for a message without a topic and for each topic; count the outcomes.

    Lapsing relationships count the recipients whose relationship lapses soon and who are not
    blocked (erased, restricted, suppressed) for a message without a topic.
    """
    messages: list[tuple[str | None, MessageContext]] = [(None, MessageContext(purpose="marketing"))]
    messages += [
        (t.name, MessageContext(purpose="marketing", topic_id=t.id, topic_soft_opt_in=t.soft_opt_in))
        for t in topics
    ]
    # "Not blocked" = allowed when any basis would do (consent, or a relationship for any message).
    lenient = msgspec.structs.replace(policy, soft_opt_in_without_topic=True)
    audience: Counter[tuple[Channel, str | None, str]] = Counter()
    lapsing: Counter[tuple[Channel, date]] = Counter()
    for group in groups:
        state = RecipientState(**{name: group[name] for name in STATE_FIELDS})
        channel: Channel = group["channel"]
        n: int = group["recipients"]
        for topic, message in messages:
            decision = decide(policy, message, state, now)
            audience[(channel, topic, (decision.basis if decision.allowed else decision.reason) or "")] += n
        if group["lapses_on"] is not None and decide(lenient, messages[0][1], state, now).allowed:
            lapsing[(channel, group["lapses_on"])] += n
    return (
        [AudienceCount(c, t, o, n) for (c, t, o), n in sorted(audience.items(), key=_sort_key)],
        [LapsingCount(c, d, n) for (c, d), n in sorted(lapsing.items())],
    )


def _sort_key(item: tuple[tuple[Channel, str | None, str], int]) -> tuple[str, str, str]:
    (channel, topic, outcome), _ = item
    return channel, topic or "", outcome


async def refresh_tenant(
    pool: asyncpg.Pool, queries: Queries, tenant_id: int, now: datetime
) -> Refresh | None:
    """Recompute one tenant's campaign check totals and state snapshot; None when it is gone."""
    started = time.perf_counter()
    inputs = await pool.fetchrow(queries.health_refresh_inputs, tenant_id)
    if inputs is None:
        return None
    policy = tenant_policy(inputs)
    topics = msgspec.convert(inputs["topics"], list[TopicInfo])
    previous: date | None = inputs["checks_through"]
    # From the day before the last refresh: a check counted just before midnight may commit after it.
    since = previous - timedelta(days=1) if previous else date.min
    window = timedelta(days=policy.relationship_window_days)
    async with pool.acquire() as conn:
        await conn.execute(queries.refresh_campaign_checks, tenant_id, since, now)
        async with conn.transaction(readonly=True):
            await conn.execute(queries.prefer_hash_aggregate)
            groups = await conn.fetch(
                queries.health_audience_groups,
                tenant_id,
                now,
                now - window,  # a purchase at or after this keeps the relationship active now
                window.total_seconds(),
                now + timedelta(days=LAPSE_HORIZON_DAYS) - window,  # ... and lapses within the horizon
                # a consent given at or before this has lapsed now (the tenant's validity, as decide())
                None
                if policy.consent_validity_days is None
                else now - timedelta(days=policy.consent_validity_days),
            )
    audience, lapsing = tally_audience(policy, topics, groups, now)
    duration_ms = round((time.perf_counter() - started) * 1000)
    await pool.execute(
        queries.save_health_snapshot,
        tenant_id,
        now,
        duration_ms,
        now.astimezone(UTC).date(),
        audience,
        lapsing,
    )
    return Refresh(
        tenant_id=tenant_id,
        groups=len(groups),
        recipients=sum(g["recipients"] for g in groups),
        duration_ms=duration_ms,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m suppress.rollups rebuild|refresh TENANT_ID`: rebuild a tenant's event counters
    from its ledger, or refresh its snapshot and campaign check totals now."""
    import argparse
    import asyncio

    from suppress.config import Settings
    from suppress.db import create_pool
    from suppress.sql import load_queries

    parser = argparse.ArgumentParser(prog="python -m suppress.rollups", description=main.__doc__)
    parser.add_argument("command", choices=("rebuild", "refresh"))
    parser.add_argument("tenant_id", type=int)
    args = parser.parse_args(argv)

    async def run() -> object:
        pool = await create_pool(Settings.from_env().require_database_url(), size=2)
        try:
            if args.command == "rebuild":
                return await rebuild_event_counters(pool, load_queries(), args.tenant_id)
            return await refresh_tenant(pool, load_queries(), args.tenant_id, datetime.now(UTC))
        finally:
            await pool.close()

    print(asyncio.run(run()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
