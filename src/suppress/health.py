"""List health as marketers see it: the report GET /v1/health and /dashboard serve.

Read side only: everything here comes from rollup tables that workers keep current
(`suppress.rollups`, `workers/health.py`); a report is four indexed SELECTs, whatever the size of
the ledger (docs/health.md):

- `health_overview`: the tenant's alert lines, its state snapshot (reachable audience by basis per
  channel and topic, suppressed recipients by reason, relationships lapsing soon) and the worker's
  backlog (events whose counting is still pending), which says how fresh the counters are;
- `health_daily_counts`: new unsubscribes, complaints, bounces, consents ... per day and channel;
- `health_latency_counts`: the unsubscribe-latency histogram over the same days;
- `health_campaign_rows`: per campaign, check totals and attributed unsubscribes and complaints.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from msgspec import Meta

from suppress.errors import NotFound
from suppress.models import CHANNELS, Channel
from suppress.replicas import Reads
from suppress.sql import Queries

# Daily counters, in the order reports list them (names as stored in health_daily.metric).
DAILY_METRICS: tuple[str, ...] = (
    "unsubscribed",
    "complained",
    "hard_bounced",
    "soft_bounced",
    "manual",
    "erased",
    "restricted",
    "lifted",
    "consents_given",
    "consents_withdrawn",
    "relationships_started",
    "relationships_ended",
    "purchases",
)
_DAILY_METRIC_SET = frozenset(DAILY_METRICS)
# Why a recipient cannot get a marketing message without a topic, strongest first (decision order).
SUPPRESSED_REASONS: tuple[str, ...] = (
    "erased",
    "restricted",
    "complained",
    "hard_bounced",
    "unsubscribed",
    "manual",
    "soft_bounced",
    "objected",
)
# Lower bounds (seconds) of the unsubscribe-latency buckets; bucket i is [b[i], b[i + 1]), the last
# is open. Stored by index: only ever append (a change would reinterpret stored counts).
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 4 * 3600.0, 12 * 3600.0, 24 * 3600.0, 36 * 3600.0, 48 * 3600.0, 72 * 3600.0,
    7 * 86400.0, 30 * 86400.0,
)  # fmt: skip
# Mailbox providers' rule (POLICY.md M1): unsubscribes honoured within 48 hours.
UNSUBSCRIBE_DEADLINE_SECONDS = 48 * 3600
LAPSE_HORIZON_DAYS = 30
MAX_DAYS = 366
DEFAULT_DAYS = 30
MAX_CAMPAIGNS = 1000
DEFAULT_CAMPAIGNS = 100
# The worker is behind when an event has waited this long for its effects (its counting among
# them; a drain normally takes them within a second or two) ...
BEHIND_AFTER_SECONDS = 60
# ... or when the snapshot, refreshed every minute, is this old.
SNAPSHOT_STALE_SECONDS = 5 * 60
# Pending effects are counted up to this many: the count is an index range scan, bounded.
PENDING_COUNT_LIMIT = 100_000

Days = Annotated[int, Meta(ge=1, le=MAX_DAYS)]
Alert = Literal["ok", "warn", "stop"]
AlertReason = Literal["complaint_rate", "unsubscribe_rate"]


class Reach(msgspec.Struct, frozen=True, kw_only=True):
    """Recipients a marketing message (own offer) may go to now, by legal basis."""

    consent: int = 0
    customer_relationship: int = 0
    total: int = 0


class TopicReach(Reach, frozen=True, kw_only=True):
    """Reach of a message on one topic; `unsubscribed` counts those who left it (or everything)."""

    topic: str
    unsubscribed: int = 0


class ChannelReach(Reach, frozen=True, kw_only=True):
    """Reach of a message without a topic, the recipients with no basis for one, and each topic."""

    no_basis: int = 0
    topics: list[TopicReach] = msgspec.field(default_factory=list)


class Reachable(msgspec.Struct, frozen=True, kw_only=True):
    email: ChannelReach
    sms: ChannelReach


class Suppressed(msgspec.Struct, frozen=True, kw_only=True):
    """Known recipients no marketing may reach, each under the strongest reason that applies."""

    erased: int = 0
    restricted: int = 0
    complained: int = 0
    hard_bounced: int = 0
    unsubscribed: int = 0
    manual: int = 0
    soft_bounced: int = 0
    objected: int = 0  # the customer objected to direct marketing (GDPR Art. 21)
    total: int = 0


class SuppressedByChannel(msgspec.Struct, frozen=True, kw_only=True):
    email: Suppressed
    sms: Suppressed


class DailyCounts(msgspec.Struct, frozen=True, kw_only=True):
    """What happened on one UTC day on one channel (events as recorded that day)."""

    day: date
    channel: Channel
    unsubscribed: int = 0
    complained: int = 0
    hard_bounced: int = 0
    soft_bounced: int = 0
    manual: int = 0
    erased: int = 0
    restricted: int = 0
    lifted: int = 0
    consents_given: int = 0
    consents_withdrawn: int = 0
    relationships_started: int = 0
    relationships_ended: int = 0
    purchases: int = 0


class CampaignHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One campaign: recipients checked, allowed and denied (by reason), and the unsubscribes and
    complaints attributed to it; rates are fractions of `allowed` (null when nothing was allowed)."""

    campaign: str
    checked: int
    allowed: int
    denied: dict[str, int]
    unsubscribed: int
    complained: int
    unsubscribe_rate: float | None
    complaint_rate: float | None
    alert: Alert
    alert_reasons: list[AlertReason]  # the rates at or above one of the tenant's lines


class ComplaintThresholds(msgspec.Struct, frozen=True, kw_only=True):
    """The tenant's complaint-rate lines: `warn` from this rate on, `stop` from that one."""

    warn: float
    stop: float


class UnsubscribeThresholds(msgspec.Struct, frozen=True, kw_only=True):
    """The tenant's unsubscribe-rate line: `warn` from this rate on (`unsubscribe_alert_rate`)."""

    warn: float


class Freshness(msgspec.Struct, frozen=True, kw_only=True):
    """How current the report is: the snapshot's age and the events still waiting to be counted.

    `behind` when the oldest waiting event has waited BEHIND_AFTER_SECONDS or more, or the snapshot
    is SNAPSHOT_STALE_SECONDS old: the counters (daily, campaigns, latency) then leave out the
    `pending_effects` events until the worker catches up.
    """

    snapshot_age_seconds: float | None
    pending_effects: int
    pending_effects_capped: bool  # counting stopped at PENDING_COUNT_LIMIT: at least that many
    oldest_pending_at: datetime | None
    oldest_pending_seconds: float | None
    behind: bool


class Latency(msgspec.Struct, frozen=True, kw_only=True):
    """Seconds from an unsubscribe request to its being applied, over the report's days.

    p50 and p99 are the upper bounds of the histogram buckets they fall in (a safe overestimate).
    """

    p50: float | None
    p99: float | None
    count: int
    over_48h: int
    deadline: int = UNSUBSCRIBE_DEADLINE_SECONDS


class LapsingDay(msgspec.Struct, frozen=True, kw_only=True):
    day: date
    channel: Channel
    recipients: int


class ExpiringRelationships(msgspec.Struct, frozen=True, kw_only=True):
    """Reachable recipients whose customer relationship (no open agreement) lapses within `days`."""

    days: int = LAPSE_HORIZON_DAYS
    total: int = 0
    email: int = 0
    sms: int = 0
    by_day: list[LapsingDay] = msgspec.field(default_factory=list)


class HealthReport(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/health: the tenant's list health, from rollups at most about a minute old."""

    tenant: str
    generated_at: datetime
    snapshot_at: datetime | None  # when `reachable`, `suppressed` and the lapsing were computed
    days: int
    reachable: Reachable
    suppressed: SuppressedByChannel
    daily: list[DailyCounts]
    campaigns: list[CampaignHealth]
    complaint_thresholds: ComplaintThresholds
    unsubscribe_thresholds: UnsubscribeThresholds
    unsubscribe_latency_seconds: Latency
    expiring_relationships: ExpiringRelationships
    freshness: Freshness


class AudienceCount(msgspec.Struct, frozen=True):
    """One snapshot cell: recipients of a channel whose decision for a topic (None = no topic) is
    `outcome` (a basis when allowed, else the reason)."""

    channel: Channel
    topic: str | None
    outcome: str
    n: int


class LapsingCount(msgspec.Struct, frozen=True):
    """One snapshot cell: reachable recipients of a channel whose relationship lapses on `day`."""

    channel: Channel
    day: date
    n: int


class Viewer(msgspec.Struct, frozen=True, kw_only=True):
    """Who looks at a dashboard session: the API key it was opened with and its tenant."""

    key_id: int
    tenant_id: int
    tenant_name: str


def campaign_alert(complained: int, allowed: int, thresholds: ComplaintThresholds) -> Alert:
    """ok / warn / stop by complaint rate; complaints with nothing allowed are an infinite rate."""
    if complained == 0:
        return "ok"
    if allowed == 0:
        return "stop"
    rate = complained / allowed
    if rate >= thresholds.stop:
        return "stop"
    return "warn" if rate >= thresholds.warn else "ok"


def unsubscribe_alert(unsubscribed: int, allowed: int, warn: float) -> Alert:
    """ok / warn by unsubscribe rate (never stop: people leaving do not hurt delivery the way
    complaints do); unsubscribes with nothing allowed are an infinite rate."""
    if unsubscribed == 0:
        return "ok"
    return "warn" if allowed == 0 or unsubscribed / allowed >= warn else "ok"


_LEVELS: dict[Alert, int] = {"ok": 0, "warn": 1, "stop": 2}


def campaign_alerts(
    complained: int, unsubscribed: int, allowed: int, complaints: ComplaintThresholds, unsubscribe_warn: float
) -> tuple[Alert, list[AlertReason]]:
    """A campaign's alert (the worse of its complaint and unsubscribe alerts) and the rates behind it."""
    by_reason: list[tuple[AlertReason, Alert]] = [
        ("complaint_rate", campaign_alert(complained, allowed, complaints)),
        ("unsubscribe_rate", unsubscribe_alert(unsubscribed, allowed, unsubscribe_warn)),
    ]
    worst = max((level for _, level in by_reason), key=_LEVELS.__getitem__)
    return worst, [reason for reason, level in by_reason if level != "ok"]


def freshness(
    now: datetime, snapshot_at: datetime | None, pending: int, oldest_pending_at: datetime | None
) -> Freshness:
    """The report's freshness from the snapshot time and the backlog of pending effects."""
    snapshot_age = None if snapshot_at is None else max((now - snapshot_at).total_seconds(), 0.0)
    waited = None if oldest_pending_at is None else max((now - oldest_pending_at).total_seconds(), 0.0)
    behind = (waited is not None and waited >= BEHIND_AFTER_SECONDS) or (
        snapshot_age is not None and snapshot_age >= SNAPSHOT_STALE_SECONDS
    )
    return Freshness(
        snapshot_age_seconds=snapshot_age,
        pending_effects=pending,
        pending_effects_capped=pending >= PENDING_COUNT_LIMIT,
        oldest_pending_at=oldest_pending_at,
        oldest_pending_seconds=waited,
        behind=behind,
    )


def latency_summary(buckets: Mapping[int, int]) -> Latency:
    """p50/p99 (bucket upper bounds), count and how many took longer than 48 hours."""
    count = sum(buckets.values())
    last = len(LATENCY_BOUNDS) - 1
    over = sum(n for i, n in buckets.items() if LATENCY_BOUNDS[min(i, last)] >= UNSUBSCRIBE_DEADLINE_SECONDS)

    def quantile(q: float) -> float | None:
        if count == 0:
            return None
        rank, seen = max(1, math.ceil(q * count - 1e-9)), 0
        for i in sorted(buckets):
            seen += buckets[i]
            if seen >= rank:
                return LATENCY_BOUNDS[min(i + 1, last)]
        return LATENCY_BOUNDS[last]

    return Latency(p50=quantile(0.5), p99=quantile(0.99), count=count, over_48h=over)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _reachable(audience: Iterable[AudienceCount]) -> tuple[Reachable, SuppressedByChannel]:
    general: dict[str, dict[str, int]] = {c: defaultdict(int) for c in CHANNELS}
    per_topic: dict[str, dict[str, dict[str, int]]] = {c: {} for c in CHANNELS}
    for cell in audience:
        if cell.topic is None:
            general[cell.channel][cell.outcome] += cell.n
        else:
            counts = per_topic[cell.channel].setdefault(cell.topic, defaultdict(int))
            counts[cell.outcome] += cell.n

    def channel_reach(channel: str) -> ChannelReach:
        g = general[channel]
        topics = [
            TopicReach(
                topic=name,
                consent=t["consent"],
                customer_relationship=t["customer_relationship"],
                total=t["consent"] + t["customer_relationship"],
                unsubscribed=t["unsubscribed"],
            )
            for name, t in sorted(per_topic[channel].items())
        ]
        return ChannelReach(
            consent=g["consent"],
            customer_relationship=g["customer_relationship"],
            total=g["consent"] + g["customer_relationship"],
            no_basis=g["no_basis"],
            topics=topics,
        )

    def suppressed(channel: str) -> Suppressed:
        g = general[channel]
        counts = {r: g[r] for r in SUPPRESSED_REASONS}
        return Suppressed(**counts, total=sum(counts.values()))

    return (
        Reachable(email=channel_reach("email"), sms=channel_reach("sms")),
        SuppressedByChannel(email=suppressed("email"), sms=suppressed("sms")),
    )


def _expiring(lapsing: Iterable[LapsingCount]) -> ExpiringRelationships:
    by_day = sorted(
        (LapsingDay(day=c.day, channel=c.channel, recipients=c.n) for c in lapsing),
        key=lambda d: (d.day, d.channel),
    )
    per_channel = {c: sum(d.recipients for d in by_day if d.channel == c) for c in CHANNELS}
    return ExpiringRelationships(
        total=sum(per_channel.values()), email=per_channel["email"], sms=per_channel["sms"], by_day=by_day
    )


def _daily(rows: Iterable[asyncpg.Record], first: date, last: date) -> list[DailyCounts]:
    """Every day of the window on every channel, zero where nothing happened."""
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    counts: dict[tuple[date, str], dict[str, int]] = {(d, c): {} for d in days for c in CHANNELS}
    known = _DAILY_METRIC_SET
    for day, channel, metric, n in rows:
        cell = counts.get((day, channel))
        if cell is not None and metric in known:
            cell[metric] = n
    return [
        DailyCounts(day=day, channel=channel, **cell)  # type: ignore[arg-type]
        for (day, channel), cell in counts.items()
    ]


def _campaign(
    row: asyncpg.Record, complaints: ComplaintThresholds, unsubscribe_warn: float
) -> CampaignHealth:
    alert, reasons = campaign_alerts(
        row["complained"], row["unsubscribed"], row["allowed"], complaints, unsubscribe_warn
    )
    return CampaignHealth(
        campaign=row["campaign"],
        checked=row["checked"],
        allowed=row["allowed"],
        denied=dict(sorted(row["denied"].items())),
        unsubscribed=row["unsubscribed"],
        complained=row["complained"],
        unsubscribe_rate=_rate(row["unsubscribed"], row["allowed"]),
        complaint_rate=_rate(row["complained"], row["allowed"]),
        alert=alert,
        alert_reasons=reasons,
    )


class HealthService:
    """Reads the rollups into reports; one instance per process."""

    def __init__(self, pool: asyncpg.Pool, queries: Queries, reads: Reads | None = None) -> None:
        self._pool = pool
        self._reads = reads or Reads(pool)
        self._q = queries

    async def report(
        self, tenant_id: int, now: datetime, *, days: int = DEFAULT_DAYS, campaigns: int = DEFAULT_CAMPAIGNS
    ) -> HealthReport:
        """The tenant's list health over the last `days` UTC days (today included)."""
        today = now.astimezone(UTC).date()
        first = today - timedelta(days=days - 1)
        since = datetime.combine(first, time(), UTC)

        # Four round trips on one connection; no transaction around them (BEGIN and COMMIT would be
        # two more): each rollup is current on its own, none needs to agree with another to the event.
        async def read(pool: asyncpg.Pool) -> tuple[Any, list[Any], list[Any], list[Any]]:
            async with pool.acquire() as conn:
                overview = await conn.fetchrow(self._q.health_overview, tenant_id, PENDING_COUNT_LIMIT)
                daily = await conn.fetch(self._q.health_daily_counts, tenant_id, first)
                latency = await conn.fetch(self._q.health_latency_counts, tenant_id, first)
                rows = await conn.fetch(self._q.health_campaign_rows, tenant_id, since, campaigns)
            return overview, daily, latency, rows

        # Rollups are up to a minute old anyway: any replica within the lag bound serves them.
        overview, daily, latency, campaign_rows = await self._reads.run(None, read)
        if overview is None:
            raise NotFound(f"no tenant with id {tenant_id}")
        thresholds = ComplaintThresholds(warn=overview["alert_rate"], stop=overview["stop_rate"])
        unsubscribe_warn: float = overview["unsubscribe_alert_rate"]
        audience = msgspec.convert(overview["audience"] or [], list[AudienceCount])
        lapsing = msgspec.convert(overview["lapsing"] or [], list[LapsingCount])
        reachable, suppressed = _reachable(audience)
        return HealthReport(
            tenant=overview["tenant_name"],
            generated_at=now,
            snapshot_at=overview["computed_at"],
            days=days,
            reachable=reachable,
            suppressed=suppressed,
            daily=_daily(daily, first, today),
            campaigns=[_campaign(r, thresholds, unsubscribe_warn) for r in campaign_rows],
            complaint_thresholds=thresholds,
            unsubscribe_thresholds=UnsubscribeThresholds(warn=unsubscribe_warn),
            unsubscribe_latency_seconds=latency_summary({r["bucket"]: r["n"] for r in latency}),
            expiring_relationships=_expiring(lapsing),
            freshness=freshness(
                now, overview["computed_at"], overview["pending_effects"], overview["oldest_pending_at"]
            ),
        )
