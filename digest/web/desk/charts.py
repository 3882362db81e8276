"""The desk's pictures: small server-rendered SVG charts (bars, a funnel, a weekly trend).

Pure builders, data in and markup out: no script, no chart library, no style attributes. Each
chart scales with its box (a viewBox, width 100%), so it reads at 375 px, and is `aria-hidden`:
the page shows the same numbers as a table for screen readers (`docs/engagement.md`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

__all__ = ["Bar", "bars", "funnel", "trend"]

_WIDTH = 320  # user units; the SVG stretches to its box
_ROW = 22
_LABEL = 120  # the label column of a bar chart
_PALETTE = ("#1d4ed8", "#059669", "#b91c1c", "#a16207")


@dataclass(frozen=True, slots=True)
class Bar:
    """One labelled quantity: `value` drawn, `shown` written beside it (a count, "42 %")."""

    label: str
    value: float
    shown: str


def bars(rows: Sequence[Bar], *, title: str) -> Markup:
    """Horizontal bars, longest = the largest value; a label on each, its figure at the end.

    Empty `rows` draw nothing (the page's table says "none yet")."""
    if not rows:
        return Markup("")
    top = max(max(r.value for r in rows), 0) or 1
    span = _WIDTH - _LABEL - 44
    parts = []
    for i, row in enumerate(rows):
        y = i * _ROW
        width = max(row.value, 0) / top * span
        parts.append(
            f'<text x="0" y="{y + 15}" font-size="11">{escape(_clip(row.label, 20))}</text>'
            f'<rect x="{_LABEL}" y="{y + 4}" width="{width:.1f}" height="14" fill="{_PALETTE[0]}"/>'
            f'<text x="{_LABEL + width + 4:.1f}" y="{y + 15}" font-size="11">'
            f"{escape(row.shown)}</text>"
        )
    return _svg(title, len(rows) * _ROW, "".join(parts))


def funnel(steps: Sequence[Bar], *, title: str) -> Markup:
    """Delivered → opened → clicked: centred bars, each as wide as its share of the first."""
    if not steps:
        return Markup("")
    first = max(steps[0].value, 0) or 1
    parts = []
    for i, step in enumerate(steps):
        y = i * (_ROW + 14)
        width = min(max(step.value, 0) / first, 1) * _WIDTH
        parts.append(
            f'<rect x="{(_WIDTH - width) / 2:.1f}" y="{y + 14}" width="{width:.1f}" height="18" '
            f'fill="{_PALETTE[i % len(_PALETTE)]}"/>'
            f'<text x="{_WIDTH / 2:.0f}" y="{y + 11}" font-size="11" text-anchor="middle">'
            f"{escape(step.label)}: {escape(step.shown)}</text>"
        )
    return _svg(title, len(steps) * (_ROW + 14), "".join(parts))


def trend(labels: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str) -> Markup:
    """One line per series over the same weeks (`labels`), from zero up to the largest value,
    with a legend; the first and last week are named under the axis.

    Raises `ValueError` when a series does not have one value per label."""
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} weeks")
    if not labels or not series:
        return Markup("")
    height, left, legend = 120, 28, 16
    top = max((v for values in series.values() for v in values), default=0) or 1
    step = (_WIDTH - left - 4) / max(len(labels) - 1, 1)

    def point(i: int, value: float) -> str:
        return f"{left + i * step:.1f},{legend + height - max(value, 0) / top * height:.1f}"

    parts = [
        f'<line x1="{left}" y1="{legend + height}" x2="{_WIDTH}" y2="{legend + height}" '
        'stroke="#9ca3af"/>',
        f'<text x="{left - 4}" y="{legend + 8}" font-size="10" text-anchor="end">'
        f"{_figure(top)}</text>",
        f'<text x="{left - 4}" y="{legend + height}" font-size="10" text-anchor="end">0</text>',
        f'<text x="{left}" y="{legend + height + 14}" font-size="10">{escape(labels[0])}</text>',
        f'<text x="{_WIDTH}" y="{legend + height + 14}" font-size="10" text-anchor="end">'
        f"{escape(labels[-1])}</text>",
    ]
    for n, (name, values) in enumerate(series.items()):
        colour = _PALETTE[n % len(_PALETTE)]
        points = " ".join(point(i, v) for i, v in enumerate(values))
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
            + "".join(
                f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2.5" fill="{colour}"/>'
                for p in points.split()
            )
            + f'<rect x="{left + n * 96}" y="2" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + n * 96 + 14}" y="11" font-size="10">{escape(_clip(name, 14))}</text>'
        )
    return _svg(title, legend + height + 18, "".join(parts))


def _svg(title: str, height: int, body: str) -> Markup:
    # aria-hidden: the table beside each chart carries the numbers for screen readers; the
    # <title> is a tooltip for sighted mouse users only.
    return Markup(
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {height}" width="100%" '
        f'aria-hidden="true" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{body}</svg>'
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _figure(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
