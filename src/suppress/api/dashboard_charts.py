"""Inline SVG charts for the dashboard: no script, no external files, readable without colour.

Every chart is an `<svg role="img">` with a `<title>` and a `<desc>` naming what it shows; the
numbers themselves are in a table next to it (the accessible alternative), and legends are HTML so
they stay readable when the chart is scaled down on a phone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from itertools import count

WIDTH = 360
FONT = 'font-family="system-ui,sans-serif" font-size="13" fill="#1b1f24"'
_ids = count(1)


class Series:
    """A named, coloured series of a chart (its legend entry)."""

    __slots__ = ("color", "key", "label")

    def __init__(self, key: str, label: str, color: str) -> None:
        self.key, self.label, self.color = key, label, color


def _svg(title: str, desc: str, height: float, body: str) -> str:
    n = next(_ids)
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        f'aria-labelledby="chart-t{n} chart-d{n}" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="chart-t{n}">{escape(title)}</title><desc id="chart-d{n}">{escape(desc)}</desc>'
        f"{body}</svg>"
    )


def legend(series: Sequence[Series]) -> str:
    """The HTML legend of a chart's series."""
    items = "".join(
        f'<li><span class="swatch" style="background:{s.color}"></span>{escape(s.label)}</li>' for s in series
    )
    return f'<ul class="legend">{items}</ul>'


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value`."""
    if value <= 0:
        return 1.0
    exponent = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent


def _short(label: str) -> str:
    """A row label that fits left of the bars (longer ones are cut; the title has the full name)."""
    return label if len(label) <= 14 else label[:13] + "…"


def _number(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def stacked_rows(
    title: str, desc: str, series: Sequence[Series], rows: Sequence[tuple[str, str, dict[str, int]]]
) -> str:
    """Horizontal stacked bars, one row per (label, full name, values), scaled to the largest row
    total, which the axis below the rows names: each chart has its own scale."""
    label_w, row_h, top, axis_h = 124, 26, 4, 22
    total_max = max((sum(v.get(s.key, 0) for s in series) for _, _, v in rows), default=0)
    plot_w = WIDTH - label_w - 8
    scale = plot_w / (total_max or 1)
    parts: list[str] = []
    for i, (label, name, values) in enumerate(rows):
        y = top + i * row_h
        short = _short(label)
        parts.append(f'<text x="{label_w - 6}" y="{y + 17}" text-anchor="end" {FONT}>{escape(short)}</text>')
        x = float(label_w)
        for s in series:
            value = values.get(s.key, 0)
            if value <= 0:
                continue
            w = max(value * scale, 1.0)
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{s.color}">'
                f"<title>{escape(name)}: {escape(s.label)} {value:,}</title></rect>"
            )
            x += w
    axis_y = top + max(len(rows), 1) * row_h + 2
    end = label_w + plot_w
    parts.append(
        f'<line x1="{label_w}" y1="{axis_y}" x2="{end}" y2="{axis_y}" stroke="#6b7280"/>'
        f'<line x1="{end}" y1="{axis_y}" x2="{end}" y2="{axis_y + 4}" stroke="#6b7280"/>'
        f'<text x="{label_w}" y="{axis_y + 16}" {FONT}>0</text>'
        f'<text x="{end}" y="{axis_y + 16}" text-anchor="end" {FONT}>{total_max:,}</text>'
    )
    return _svg(title, desc, axis_y + axis_h, "".join(parts))


def stacked_columns(
    title: str, desc: str, series: Sequence[Series], columns: Sequence[tuple[str, dict[str, int]]]
) -> str:
    """Vertical stacked columns over time (labels are days), with a y axis from zero."""
    left, bottom, top, height = 40, 20, 10, 170
    plot_h = height - top - bottom
    peak = _nice_max(max((sum(v.get(s.key, 0) for s in series) for _, v in columns), default=0))
    slot = (WIDTH - left - 4) / max(len(columns), 1)
    parts = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{WIDTH - 4}" y2="{top + plot_h}" stroke="#6b7280"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" {FONT}>{_number(peak)}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" {FONT}>0</text>',
        f'<line x1="{left}" y1="{top}" x2="{WIDTH - 4}" y2="{top}" stroke="#e5e7eb"/>',
    ]
    for i, (label, values) in enumerate(columns):
        x = left + i * slot + slot * 0.1
        y = float(top + plot_h)
        for s in series:
            value = values.get(s.key, 0)
            if value <= 0:
                continue
            h = value / peak * plot_h
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{h:.1f}" fill="{s.color}">'
                f"<title>{escape(label)}: {escape(s.label)} {value:,}</title></rect>"
            )
    if columns:
        parts.append(f'<text x="{left}" y="{height - 4}" {FONT}>{escape(columns[0][0])}</text>')
        parts.append(
            f'<text x="{WIDTH - 4}" y="{height - 4}" text-anchor="end" {FONT}>{escape(columns[-1][0])}</text>'
        )
    return _svg(title, desc, height, "".join(parts))


def rate_bars(
    title: str, desc: str, rows: Sequence[tuple[str, float | None, str]], warn: float, stop: float
) -> str:
    """One bar per campaign (label, rate, alert) with its value, and dashed lines at the warn and
    stop rates. The axis ends at twice the stop rate (or at the largest rate, up to five times the
    stop rate), so the lines stay apart; longer bars are cut and end in an arrow."""
    label_w, value_w, row_h, top = 124, 64, 26, 22
    rates = [r for _, r, _ in rows if r is not None]
    peak = min(max([*rates, stop * 2]), stop * 5)
    scale = (WIDTH - label_w - value_w) / peak
    colors = {"ok": "#009E73", "warn": "#E69F00", "stop": "#D55E00"}
    height = top + max(len(rows), 1) * row_h + 4
    parts: list[str] = []
    for i, (label, rate, alert) in enumerate(rows):
        y = top + i * row_h
        short = _short(label)
        parts.append(f'<text x="{label_w - 6}" y="{y + 17}" text-anchor="end" {FONT}>{escape(short)}</text>')
        shown = "none allowed" if rate is None else f"{rate * 100:.2f} %"
        clipped = rate is None or rate > peak
        width = peak * scale if clipped else max((rate or 0) * scale, 1.0)
        parts.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{width:.1f}" height="{row_h - 8}" '
            f'fill="{colors.get(alert, "#6b7280")}"><title>{escape(label)}: {shown} ({alert})</title></rect>'
        )
        end = label_w + width
        if clipped:
            parts.append(
                f'<path d="M{end:.1f} {y + 2} l7 {row_h // 2 - 2} l-7 {row_h // 2 - 2}z" fill="#1b1f24"/>'
            )
            end += 7
        parts.append(f'<text x="{end + 4:.1f}" y="{y + 17}" {FONT}>{shown}</text>')
    for value, name, anchor, shift in ((warn, "warn", "end", -3), (stop, "stop", "start", 3)):
        x = label_w + value * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height}" stroke="#1b1f24" '
            f'stroke-dasharray="3 2"/><text x="{x + shift:.1f}" y="{top - 7}" text-anchor="{anchor}" {FONT}>'
            f"{name} {value * 100:g} %</text>"
        )
    return _svg(title, desc, height, "".join(parts))


def latency_scale(title: str, desc: str, p50: float | None, p99: float | None, deadline: float) -> str:
    """A logarithmic time axis from 10 ms to 30 days, the deadline's zone shaded, p50 and p99 marked."""
    left, right, axis_y = 16, WIDTH - 16, 62
    low, high = math.log10(0.01), math.log10(30 * 86400)

    def x_of(seconds: float) -> float:
        value = min(max(math.log10(max(seconds, 0.01)), low), high)
        return left + (value - low) / (high - low) * (right - left)

    ticks = [(0.01, "10 ms"), (1, "1 s"), (60, "1 min"), (3600, "1 h"), (86400, "1 d"), (30 * 86400, "30 d")]
    dx = x_of(deadline)
    parts = [
        f'<rect x="{dx:.1f}" y="{axis_y - 40}" width="{right - dx:.1f}" height="40" fill="#fde2e1"/>',
        f'<line x1="{dx:.1f}" y1="{axis_y - 44}" x2="{dx:.1f}" y2="{axis_y}" stroke="#D55E00" '
        'stroke-width="2"/>',
        f'<text x="{dx - 4:.1f}" y="{axis_y - 46}" text-anchor="end" {FONT}>48 h rule</text>',
        f'<line x1="{left}" y1="{axis_y}" x2="{right}" y2="{axis_y}" stroke="#6b7280"/>',
    ]
    for seconds, label in ticks:
        x = x_of(seconds)
        anchor = "start" if seconds == ticks[0][0] else "end" if seconds == ticks[-1][0] else "middle"
        parts.append(f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}" stroke="#6b7280"/>')
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="{anchor}" {FONT}>{label}</text>')
    placed: list[float] = []
    for value, name, color in ((p50, "p50", "#0072B2"), (p99, "p99", "#1b1f24")):
        if value is None:
            continue
        x = x_of(value)
        label_y = axis_y - 32 if any(abs(x - other) < 26 for other in placed) else axis_y - 18
        placed.append(x)
        parts.append(
            f'<circle cx="{x:.1f}" cy="{axis_y - 7}" r="5" fill="{color}"><title>{name}</title></circle>'
            f'<text x="{x:.1f}" y="{label_y}" text-anchor="middle" {FONT}>{name}</text>'
        )
    return _svg(title, desc, axis_y + 22, "".join(parts))
