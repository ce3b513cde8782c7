"""The dashboard's HTML (server-rendered, no script, readable on a phone) and its CSV export."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from html import escape

from suppress.api.dashboard_charts import (
    Series,
    latency_scale,
    legend,
    rate_bars,
    stacked_columns,
    stacked_rows,
)
from suppress.health import (
    BEHIND_AFTER_SECONDS,
    DAILY_METRICS,
    SNAPSHOT_STALE_SECONDS,
    SUPPRESSED_REASONS,
    CampaignHealth,
    ChannelReach,
    HealthReport,
)
from suppress.models import CHANNELS, REASONS
from suppress.spreadsheets import CsvWriter

PERIODS = (7, 30, 90, 365)
CHANNEL_NAMES = {"email": "Email", "sms": "SMS"}
REASON_SERIES = (
    Series("unsubscribed", "Unsubscribed", "#0072B2"),
    Series("complained", "Complained", "#D55E00"),
    Series("hard_bounced", "Hard bounce", "#CC79A7"),
    Series("soft_bounced", "Soft bounce", "#E69F00"),
    Series("manual", "Manual", "#6b7280"),
    Series("erased", "Erased", "#1b1f24"),
    Series("restricted", "Restricted", "#b59f00"),
)
BASIS_SERIES = (
    Series("consent", "Consent", "#009E73"),
    Series("customer_relationship", "Customer relationship", "#56B4E9"),
    Series("no_basis", "No basis", "#d1d5db"),
    Series("suppressed", "Suppressed", "#D55E00"),
)
METRIC_LABELS = {
    "unsubscribed": "Unsubscribes",
    "complained": "Complaints",
    "hard_bounced": "Hard bounces",
    "soft_bounced": "Soft bounces",
    "manual": "Manual suppressions",
    "erased": "Erasures",
    "restricted": "Restrictions",
    "lifted": "Suppressions lifted",
    "consents_given": "Consents given",
    "consents_withdrawn": "Consents withdrawn",
    "relationships_started": "Agreements started",
    "relationships_ended": "Agreements ended",
    "purchases": "Purchases",
}
DENIAL_REASONS = REASONS

STYLE = """
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#1b1f24}
main{max-width:76rem;margin:0 auto;padding:1rem;overflow-wrap:anywhere}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:baseline;justify-content:space-between}
h1{font-size:1.5rem;margin:.25rem 0}
h2{font-size:1.15rem;margin:0 0 .5rem}
p{margin:.25rem 0 .75rem}
a{color:#1d4ed8}
nav a,nav span{display:inline-block;padding:.35rem .6rem;margin:.1rem;border-radius:.4rem;
border:1px solid #c9ced6;text-decoration:none;min-height:2.2rem;background:#fff}
nav span[aria-current]{background:#1b1f24;color:#fff;border-color:#1b1f24}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,24rem),1fr));gap:1rem;margin:1rem 0}
section{background:#fff;border:1px solid #e5e7eb;border-radius:.6rem;padding:1rem;min-width:0}
.wide{grid-column:1/-1}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,9.5rem),1fr));gap:.75rem;
margin:1rem 0}
.tile{background:#fff;border:1px solid #e5e7eb;border-radius:.6rem;padding:.75rem}
.tile dt{font-size:.85rem;color:#4b5563}
.tile dd{margin:0;font-size:1.4rem;font-weight:600}
svg.chart{width:100%;max-width:30rem;height:auto;display:block;margin:.5rem 0}
.legend{list-style:none;padding:0;margin:.25rem 0;display:flex;flex-wrap:wrap;gap:.25rem 1rem;font-size:.9rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;border-radius:.15rem;margin-right:.35rem;
vertical-align:-.05rem;border:1px solid #0002}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:.9rem;font-variant-numeric:tabular-nums}
th,td{padding:.35rem .5rem;border-bottom:1px solid #e5e7eb;text-align:right;white-space:nowrap;
overflow-wrap:normal}
th:first-child,td:first-child{text-align:left;white-space:normal;min-width:7rem;overflow-wrap:anywhere}
.caption{font-weight:600;margin:.75rem 0 .25rem}
details{margin:.5rem 0}
summary{cursor:pointer;color:#1d4ed8;min-height:2rem}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-weight:600;font-size:.85rem}
.alert-ok{background:#dcfce7;color:#14532d}
.alert-warn{background:#fef3c7;color:#78350f}
.alert-stop{background:#fde2e1;color:#7f1d1d}
tr.alert-warn td,tr.alert-warn th{background:#fffbeb}
tr.alert-stop td,tr.alert-stop th{background:#fef2f2}
th.alert,td.alert{text-align:left;white-space:normal;min-width:6.5rem}
.why{font-size:.85rem;color:#374151;white-space:nowrap}
.behind{border-color:#b45309;background:#fffbeb;margin:.75rem 0}
h3.chart-title{font-size:1rem;margin:.75rem 0 0}
.note{color:#4b5563;font-size:.9rem}
form.inline{display:inline}
button,input{font:inherit}
button{padding:.5rem .9rem;border-radius:.4rem;border:1px solid #1b1f24;background:#fff;cursor:pointer;
min-height:2.5rem}
button.primary{background:#1b1f24;color:#fff}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input[type=password]{width:100%;padding:.6rem;border:1px solid #6b7280;border-radius:.4rem}
:focus-visible{outline:3px solid #2563eb;outline-offset:2px}
.error{background:#fde2e1;color:#7f1d1d;padding:.5rem .75rem;border-radius:.4rem}
.login{max-width:28rem;margin:3rem auto}
"""


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>"
    )


def _n(value: int) -> str:
    return f"{value:,}"


def _pct(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.2f} %"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds * 1000:g} ms"


def human_duration(seconds: float) -> str:
    """A duration in the largest whole unit people use: "7 minutes", "1 hour", "2 days"."""
    whole = int(max(seconds, 0))
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if whole >= size:
            n = whole // size
            return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
    return "0 seconds"


def human_age(seconds: float) -> str:
    """How long ago, for people: "just now", "3 minutes ago"."""
    return "just now" if seconds < 5 else f"{human_duration(seconds)} ago"


def _events(n: int) -> str:
    return "1 event" if n == 1 else f"{_n(n)} events"


def _table(
    caption: str,
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    row_classes: Sequence[str] = (),
    cell_classes: Mapping[int, str] | None = None,
) -> str:
    """A table of already escaped cells (the first column is the row header)."""
    classes = cell_classes or {}

    def attrs(i: int) -> str:
        return f' class="{classes[i]}"' if i in classes else ""

    ths = "".join(f'<th scope="col"{attrs(i)}>{h}</th>' for i, h in enumerate(head))
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if i < len(row_classes) and row_classes[i] else ""
        cells = f'<th scope="row">{row[0]}</th>' + "".join(
            f"<td{attrs(j)}>{c}</td>" for j, c in enumerate(row[1:], start=1)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    if not rows:
        body.append(f'<tr><td colspan="{len(head)}">Nothing yet.</td></tr>')
    # The caption sits outside the scrolling box, so it wraps on a phone instead of scrolling away.
    # The box is a named, focusable region: keyboard users can scroll it too (WCAG 2.1.1).
    label = "t-" + "".join(ch if ch.isalnum() else "-" for ch in caption.lower())
    return (
        f'<p class="caption" id="{label}">{escape(caption)}</p>'
        f'<div class="scroll" role="region" tabindex="0" aria-labelledby="{label}">'
        f'<table aria-labelledby="{label}"><thead><tr>{ths}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _details(summary: str, content: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{content}</details>"


# -- login ------------------------------------------------------------------------------------


def login_page(error: str | None = None) -> str:
    """The form that exchanges an API key with the read scope for a session cookie."""
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return _document(
        "Sign in · List health",
        '<div class="login"><h1>List health</h1>'
        "<p>Sign in with an API key that has the <code>read</code> scope. The key is checked once; "
        "the browser keeps only a signed session cookie, never the key.</p>"
        f'{message}<form method="post" action="/dashboard/login">'
        '<label for="api_key">API key</label>'
        '<input id="api_key" name="api_key" type="password" autocomplete="off" required '
        'spellcheck="false" placeholder="sk_…">'
        '<p><button class="primary" type="submit">Sign in</button></p></form></div>',
    )


# -- the dashboard ------------------------------------------------------------------------------


def dashboard_page(report: HealthReport, now: datetime, *, session: bool) -> str:
    """The whole dashboard for one report."""
    stops = sum(1 for c in report.campaigns if c.alert == "stop")
    warns = sum(1 for c in report.campaigns if c.alert == "warn")
    body = [
        _header(report, now, session=session),
        _tiles(report, stops, warns),
        '<div class="grid">',
        _audience(report),
        _suppressions(report),
        _latency(report),
        _campaigns(report),
        _lapsing(report),
        _activity(report),
        "</div>",
    ]
    return _document(f"List health · {report.tenant}", "".join(body))


def _freshness(report: HealthReport) -> str:
    """How fresh the page is, and a warning when the worker is behind (its figures named)."""
    f = report.freshness
    if report.snapshot_at is None or f.snapshot_age_seconds is None:
        snapshot = "Audience snapshot not taken yet (the worker takes one every minute)."
    else:
        snapshot = (
            f"Audience snapshot updated {human_age(f.snapshot_age_seconds)} "
            f'(<time datetime="{report.snapshot_at.isoformat()}">'
            f"{report.snapshot_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC</time>)."
        )
    waiting = (
        f"{_n(f.pending_effects)} or more events are"
        if f.pending_effects_capped
        else ("1 event is" if f.pending_effects == 1 else f"{_n(f.pending_effects)} events are")
    )
    if f.pending_effects == 0:
        counters = "Counters are up to date: no events are waiting."
    elif not f.behind or f.oldest_pending_seconds is None:
        counters = f"{waiting} being counted."
    else:
        counters = ""
    note = f'<p class="note">{snapshot} {escape(counters)}</p>'
    if not f.behind:
        return note
    details: list[str] = []
    if f.oldest_pending_seconds is not None and f.oldest_pending_seconds >= BEHIND_AFTER_SECONDS:
        details.append(
            f"<p>{waiting} waiting to be counted, the oldest for "
            f"{human_duration(f.oldest_pending_seconds)}. Until the worker catches up, the daily "
            "counts, the campaigns' unsubscribes, complaints, rates and alerts, and the unsubscribe "
            "latency leave them out.</p>"
        )
    elif f.pending_effects:
        details.append(f"<p>{waiting} waiting to be counted.</p>")
    if f.snapshot_age_seconds is not None and f.snapshot_age_seconds >= SNAPSHOT_STALE_SECONDS:
        details.append(
            f"<p>The audience snapshot is {human_duration(f.snapshot_age_seconds)} old; the worker "
            "refreshes it every minute.</p>"
        )
    return (
        f"{note}"
        '<section class="behind" aria-labelledby="behind"><h2 id="behind">The worker is behind</h2>'
        f"{''.join(details)}</section>"
    )


def _header(report: HealthReport, now: datetime, *, session: bool) -> str:
    periods = "".join(
        f'<span aria-current="page">{d} days</span>'
        if d == report.days
        else f'<a href="?days={d}">{d} days</a>'
        for d in PERIODS
    )
    if report.days not in PERIODS:
        periods += f'<span aria-current="page">{report.days} days</span>'
    logout = (
        '<form class="inline" method="post" action="/dashboard/logout">'
        '<button type="submit">Sign out</button></form>'
        if session
        else ""
    )
    return (
        f"<header><h1>List health · {escape(report.tenant)}</h1>{logout}</header>"
        f"{_freshness(report)}"
        f'<nav aria-label="Period">{periods}</nav>'
    )


def _tiles(report: HealthReport, stops: int, warns: int) -> str:
    latency = report.unsubscribe_latency_seconds
    suppressed = report.suppressed.email.total + report.suppressed.sms.total
    tiles = [
        ("Email: largest reachable audience", _n(_best_reach(report.reachable.email))),
        ("SMS: largest reachable audience", _n(_best_reach(report.reachable.sms))),
        ("Suppressed", _n(suppressed)),
        ("Campaigns at stop / warn", f"{stops} / {warns}"),
        ("Unsubscribe p99 (48 h rule)", _duration(latency.p99)),
        ("Relationships lapsing in 30 days", _n(report.expiring_relationships.total)),
    ]
    items = "".join(f'<div class="tile"><dt>{escape(k)}</dt><dd>{v}</dd></div>' for k, v in tiles)
    return f'<dl class="tiles">{items}</dl>'


def _best_reach(channel: ChannelReach) -> int:
    """The largest audience of one message on this channel: without a topic or on the best topic."""
    return max([channel.total, *(t.total for t in channel.topics)])


def _audience(report: HealthReport) -> str:
    charts: list[str] = []
    table: list[list[str]] = []
    for channel in CHANNELS:
        reach: ChannelReach = getattr(report.reachable, channel)
        suppressed = getattr(report.suppressed, channel).total
        name = CHANNEL_NAMES[channel]
        if reach.total + reach.no_basis + suppressed == 0:
            continue  # nobody known on this channel
        entries = [("no topic", reach.consent, reach.customer_relationship, reach.no_basis, suppressed)]
        for t in reach.topics:
            known = reach.consent + reach.customer_relationship + reach.no_basis + suppressed
            entries.append(
                (t.topic, t.consent, t.customer_relationship, known - suppressed - t.total, suppressed)
            )
        rows: list[tuple[str, str, dict[str, int]]] = []
        for topic, consent, relationship, no_basis, blocked in entries:
            label = f"{name} · {topic}"
            values = {
                "consent": consent,
                "customer_relationship": relationship,
                "no_basis": max(no_basis, 0),
                "suppressed": blocked,
            }
            rows.append((topic, label, values))
            table.append(
                [
                    escape(label),
                    _n(consent),
                    _n(relationship),
                    _n(consent + relationship),
                    _n(max(no_basis, 0)),
                ]
            )
        largest = max(sum(v.values()) for _, _, v in rows)
        # One chart per channel, each on its own scale: a small SMS list drawn on the email scale
        # would be a sliver.
        charts.append(
            f'<h3 class="chart-title">{name}</h3>'
            + stacked_rows(
                f"Reachable {'SMS' if channel == 'sms' else channel} audience by basis",
                f"{name}: for a message without a topic and on each topic, known recipients a marketing "
                f"message may reach by consent or by customer relationship, and those it may not (no "
                f"basis, suppressed). The scale runs from 0 to {largest:,} recipients.",
                BASIS_SERIES,
                rows[:24],
            )
        )
    drawn = "".join(charts) if charts else '<p class="note">No recipients known yet.</p>'
    return (
        "<section><h2>Reachable audience by basis</h2>"
        '<p class="note">What a pre-send check (own offer) would answer now for every known recipient. '
        "Each channel has its own scale.</p>"
        f"{legend(BASIS_SERIES)}{drawn}"
        + _details(
            "Audience as a table",
            _table(
                "Reachable recipients per channel and topic",
                [
                    "Channel · topic",
                    "Consent",
                    "Relationship",
                    "Reachable",
                    "Not reachable, no basis / topic",
                ],
                table,
            ),
        )
        + "</section>"
    )


def _suppressions(report: HealthReport) -> str:
    per_day: dict[str, dict[str, int]] = {}
    for d in report.daily:
        bucket = per_day.setdefault(d.day.isoformat(), {})
        for s in REASON_SERIES:
            bucket[s.key] = bucket.get(s.key, 0) + getattr(d, s.key)
    columns = list(per_day.items())
    chart = stacked_columns(
        "New suppressions by reason, per day",
        f"Unsubscribes, complaints, bounces and other suppressions recorded each day over the last "
        f"{report.days} days, both channels together.",
        REASON_SERIES,
        columns,
    )
    current = [
        [
            escape(r.replace("_", " ").capitalize()),
            *(_n(getattr(getattr(report.suppressed, c), r)) for c in CHANNELS),
        ]
        for r in (*SUPPRESSED_REASONS, "total")
    ]
    days_table = [
        [escape(day), *(_n(values[s.key]) for s in REASON_SERIES)] for day, values in reversed(columns)
    ]
    return (
        "<section><h2>Suppressions by reason</h2>"
        f"{legend(REASON_SERIES)}{chart}"
        + _table(
            "Suppressed now, by the strongest reason",
            ["Reason", *(CHANNEL_NAMES[c] for c in CHANNELS)],
            current,
        )
        + _details(
            "New suppressions per day as a table",
            _table("New suppressions per day", ["Day", *(s.label for s in REASON_SERIES)], days_table),
        )
        + "</section>"
    )


REASON_WORDS = {"complaint_rate": "complaints", "unsubscribe_rate": "unsubscribes"}


def _alert_cell(campaign: CampaignHealth) -> str:
    why = ", ".join(REASON_WORDS[r] for r in campaign.alert_reasons)
    badge = f'<span class="badge alert-{campaign.alert}">{campaign.alert}</span>'
    return f'{badge} <span class="why">({why})</span>' if why else badge


def _campaigns(report: HealthReport) -> str:
    t = report.complaint_thresholds
    u = report.unsubscribe_thresholds
    # The alert comes right after the name: on a phone the rest of the table scrolls, it stays in view.
    rows = [
        [
            escape(c.campaign),
            _alert_cell(c),
            _n(c.checked),
            _n(c.allowed),
            _n(sum(c.denied.values())),
            _n(c.unsubscribed),
            _pct(c.unsubscribe_rate),
            _n(c.complained),
            _pct(c.complaint_rate),
        ]
        for c in report.campaigns
    ]
    chart = (
        rate_bars(
            "Complaint rate by campaign",
            f"Complaint rate of each campaign (complaints per recipient allowed) against the warn line at "
            f"{t.warn * 100:g} % and the stop line at {t.stop * 100:g} %.",
            [(c.campaign, c.complaint_rate, campaign_alert_level(c)) for c in report.campaigns[:15]],
            t.warn,
            t.stop,
        )
        if report.campaigns
        else ""
    )
    return (
        '<section class="wide"><h2>Campaigns</h2>'
        f'<p class="note">Rates are fractions of the recipients allowed. Complaints: warn from '
        f"{t.warn * 100:g} %, stop from {t.stop * 100:g} % (mailbox providers' lines). Unsubscribes: "
        f"warn from {u.warn * 100:g} %. "
        f'<a href="/dashboard/campaigns.csv?days={report.days}" download>Download CSV</a></p>'
        f"{chart}"
        + _table(
            f"Campaigns active in the last {report.days} days, most recent first",
            [
                "Campaign",
                "Alert",
                "Checked",
                "Allowed",
                "Denied",
                "Unsubscribed",
                "Unsub. rate",
                "Complaints",
                "Complaint rate",
            ],
            rows,
            row_classes=[f"alert-{c.alert}" if c.alert != "ok" else "" for c in report.campaigns],
            cell_classes={1: "alert"},
        )
        + "</section>"
    )


def campaign_alert_level(campaign: CampaignHealth) -> str:
    """The complaint chart colours a bar by the complaint alert alone (its lines are drawn there)."""
    return campaign.alert if "complaint_rate" in campaign.alert_reasons else "ok"


def _latency(report: HealthReport) -> str:
    lat = report.unsubscribe_latency_seconds
    if lat.count == 0:
        verdict = "No unsubscribes in this period."
    elif lat.over_48h:
        verdict = f"{_n(lat.over_48h)} of {_n(lat.count)} unsubscribes took longer than 48 hours."
    else:
        verdict = f"Every unsubscribe in this period ({_n(lat.count)}) was applied within 48 hours."
    chart = latency_scale(
        "Unsubscribe latency against the 48-hour rule",
        f"From request to applied: median at most {_duration(lat.p50)}, 99th percentile at most "
        f"{_duration(lat.p99)}; the shaded zone is beyond 48 hours.",
        lat.p50,
        lat.p99,
        lat.deadline,
    )
    return (
        "<section><h2>Unsubscribe latency</h2>"
        f"<p>{escape(verdict)}</p>{chart}"
        + _table(
            "Request to applied",
            ["Measure", "Seconds", "Readable"],
            [
                ["p50 (at most)", f"{lat.p50:g}" if lat.p50 is not None else "–", _duration(lat.p50)],
                ["p99 (at most)", f"{lat.p99:g}" if lat.p99 is not None else "–", _duration(lat.p99)],
                ["Unsubscribes", _n(lat.count), ""],
                ["Over 48 hours", _n(lat.over_48h), ""],
            ],
        )
        + "</section>"
    )


def _lapsing(report: HealthReport) -> str:
    exp = report.expiring_relationships
    per_day: dict[str, dict[str, int]] = {}
    for d in exp.by_day:
        per_day.setdefault(d.day.isoformat(), {})[d.channel] = d.recipients
    series = (Series("email", "Email", "#56B4E9"), Series("sms", "SMS", "#0072B2"))
    first = report.generated_at.astimezone(UTC).date()
    days = [first + timedelta(days=i) for i in range(exp.days)]
    chart = (
        stacked_columns(
            "Customer relationships lapsing in the next 30 days",
            "Reachable recipients whose customer relationship (last purchase, no open agreement) lapses "
            "on each day of the next 30 days.",
            series,
            [(day.isoformat(), per_day.get(day.isoformat(), {})) for day in days],
        )
        if per_day
        else ""
    )
    rows = [[escape(day), _n(v.get("email", 0)), _n(v.get("sms", 0))] for day, v in sorted(per_day.items())]
    return (
        "<section><h2>Relationships about to lapse</h2>"
        f"<p>{_n(exp.total)} recipients lose their customer-relationship basis in the next {exp.days} days "
        f"(email {_n(exp.email)}, SMS {_n(exp.sms)}) unless they buy again or consent.</p>"
        f"{legend(series) if per_day else ''}{chart}"
        + _details("Lapsing per day as a table", _table("Lapsing per day", ["Day", "Email", "SMS"], rows))
        + "</section>"
    )


def _activity(report: HealthReport) -> str:
    totals = {c: dict.fromkeys(DAILY_METRICS, 0) for c in CHANNELS}
    for d in report.daily:
        for metric in DAILY_METRICS:
            totals[d.channel][metric] += getattr(d, metric)
    rows = [[escape(METRIC_LABELS[m]), _n(totals["email"][m]), _n(totals["sms"][m])] for m in DAILY_METRICS]
    return (
        "<section><h2>Activity</h2>"
        + _table(f"Events recorded in the last {report.days} days", ["Event", "Email", "SMS"], rows)
        + "</section>"
    )


# -- CSV ------------------------------------------------------------------------------------------


def campaigns_csv(campaigns: Sequence[CampaignHealth]) -> str:
    """The campaign table as CSV (the one CSV writer: quoted text, inert cells, CRLF line ends)."""
    extra = sorted({r for c in campaigns for r in c.denied} - set(DENIAL_REASONS))
    reasons = [*DENIAL_REASONS, *extra]
    header = ["campaign", "checked", "allowed", "denied", *(f"denied_{r}" for r in reasons),
              "unsubscribed", "unsubscribe_rate", "complained", "complaint_rate", "alert",
              "alert_reasons"]  # fmt: skip
    rows = (
        [
            c.campaign,
            c.checked,
            c.allowed,
            sum(c.denied.values()),
            *(c.denied.get(r, 0) for r in reasons),
            c.unsubscribed,
            c.unsubscribe_rate,
            c.complained,
            c.complaint_rate,
            c.alert,
            " ".join(c.alert_reasons),
        ]
        for c in campaigns
    )
    return CsvWriter().rows([header, *rows])
