"""SVG charts rendered on the server: no chart library, no script, readable without
JavaScript and a few kilobytes each. A chart is a bar or line series over time buckets,
with its scale, first/middle/last time labels and the latest value in words."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 600, 150
LEFT, BOTTOM, TOP = 46, 18, 8


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]
    css: str  # the colour class in console.css


def nice_max(value: float) -> float:
    """A round number at or above ``value`` for the top of the scale."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return float(next(step * magnitude for step in (1, 2, 2.5, 5, 10) if value <= step * magnitude * (1 + 1e-9)))


def _fmt(value: float, unit: str) -> str:
    if unit == "$":
        return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"
    if value >= 100 or value == int(value):
        return f"{value:,.0f}{unit}"
    return f"{value:,.1f}{unit}"


def _label(ts: datetime, span_seconds: float) -> str:
    return ts.strftime("%H:%M" if span_seconds <= 86400 else "%b %d")


def chart(title: str, times: Sequence[datetime], series: Sequence[Series], *, unit: str = "",
          bars: bool = False, chart_id: str = "") -> Markup:
    """One chart as inline SVG. ``data-total`` (the sum of the first series) lets a reader,
    or a test, check the numbers behind the picture."""
    count = max(len(times), 1)
    peak = max((v for s in series for v in s.values if v is not None), default=0.0)
    top = nice_max(peak)
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    step = plot_w / count

    def y(value: float) -> float:
        return TOP + plot_h - (value / top) * plot_h

    parts = [f'<line class="grid" x1="{LEFT}" x2="{WIDTH - 4}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
             f'<text class="axis" x="{LEFT - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{escape(_fmt(v, unit))}</text>'
             for v in (0.0, top / 2, top)]
    for s in series:
        if bars:
            width = max(step * 0.8, 1.0)
            for i, v in enumerate(s.values):
                if v:
                    parts.append(f'<rect class="{s.css}" x="{LEFT + i * step:.1f}" y="{y(v):.1f}" '
                                 f'width="{width:.1f}" height="{TOP + plot_h - y(v):.1f}"/>')
        else:
            points = [f"{LEFT + (i + 0.5) * step:.1f},{y(v):.1f}" for i, v in enumerate(s.values) if v is not None]
            if len(points) == 1:
                cx, cy = points[0].split(",")
                parts.append(f'<circle class="{s.css}" cx="{cx}" cy="{cy}" r="2.5"/>')
            elif points:
                parts.append(f'<polyline class="{s.css} line" points="{" ".join(points)}"/>')
    if times:
        span = (times[-1] - times[0]).total_seconds()
        for i, where in ((0, "start"), (len(times) // 2, "middle"), (len(times) - 1, "end")):
            x = LEFT + (i + 0.5) * step if where == "middle" else (LEFT if where == "start" else WIDTH - 4)
            parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 4}" text-anchor="{where}">'
                         f"{_label(times[i], span)}</text>")
    first = series[0] if series else None
    total = sum(v for v in first.values if v is not None) if first else 0.0
    latest = [f"{s.name}: {_fmt(next((v for v in reversed(s.values) if v is not None), 0.0), unit)}"
              for s in series]
    legend = "".join(f'<span class="key {s.css}">{escape(s.name)}</span>' for s in series)
    return Markup(
        f'<figure class="chart" id="{escape(chart_id)}"><figcaption>{escape(title)} <small>{legend}</small>'
        f'</figcaption><svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" data-total="{total:g}" '
        f'aria-label="{escape(title)}; latest {escape(", ".join(latest))}"><title>{escape(title)}</title>'
        f'{"".join(parts)}</svg></figure>')
