"""The engagement figures the desk shows: one issue's funnel and clicks per link, and across
issues the human open and click rates by week and the click rate by category and difficulty.

Pure: the campaign's numbers (`digest.campaign.engagement`) in, rows and `charts` out; a rate
digest did not track stays None here and "—" on the page, never a 0 that looks measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any, Literal

from markupsafe import Markup

from digest.model.issue import IssueRecord
from digest.web.desk.charts import Bar, bars, funnel, trend

__all__ = [
    "IssuePanel",
    "KindRow",
    "LinkRow",
    "RateRow",
    "by_snapshot",
    "concept_names",
    "issue_panel",
    "kind_chart",
    "percent",
    "rate_chart",
    "rate_rows",
]


@dataclass(frozen=True, slots=True)
class LinkRow:
    label: str  # the related concept the link points to, else the URL itself
    url: str
    clicks: int  # readers who clicked it (human)


@dataclass(frozen=True, slots=True)
class IssuePanel:
    funnel_rows: list[Bar]
    funnel_chart: Markup
    links: list[LinkRow]
    links_chart: Markup


@dataclass(frozen=True, slots=True)
class RateRow:
    week: str
    open_rate: float | None
    click_rate: float | None


@dataclass(frozen=True, slots=True)
class KindRow:
    name: str  # a category or a difficulty
    issues: int  # issues with a known click rate
    click_rate: float  # their mean human click rate


def percent(rate: float | None) -> str:
    """A rate as `digest stats` writes it; "—" where it was not tracked."""
    return "—" if rate is None else f"{rate:.1%}"


def issue_panel(issue: IssueRecord, stats: Mapping[str, Any]) -> IssuePanel:
    """The numbers panel of one sent (or sending) issue: delivered → opened → clicked, each
    step with its share of the first, and human clicks per tracked link."""
    base_name = str(stats["rate_base"])
    base = int(stats[base_name])
    steps = [Bar(base_name, base, str(base))]
    for label, count, rate in (
        ("opened", "opens_unique", "open_rate"),
        ("clicked", "clicks_unique", "click_rate"),
    ):
        known = stats[rate] is not None
        value = int(stats[count]) if known else 0
        shown = f"{value} ({percent(stats[rate])})" if known else "not tracked"
        steps.append(Bar(label, value, shown))
    names = concept_names(issue)
    links = [
        LinkRow(names.get(url) or url, url, int(clicks))
        for url, clicks in dict(stats["clicks_by_link"]).items()
    ]
    return IssuePanel(
        funnel_rows=steps,
        funnel_chart=funnel(steps, title=f"{issue.week}: {base_name}, opened, clicked"),
        links=links,
        links_chart=bars(
            [Bar(link.label, link.clicks, str(link.clicks)) for link in links],
            title=f"{issue.week}: readers who clicked each link",
        ),
    )


def concept_names(issue: IssueRecord) -> dict[str, str]:
    """Term URL → the concept's title, for the featured term and its related concepts."""
    if issue.snapshot is None:
        return {}
    term = issue.snapshot["term"]
    names = {r["url"]: r["title"] for r in issue.snapshot.get("related") or [] if r.get("url")}
    return {**names, term["url"]: term["title"]} if term.get("url") else names


def rate_rows(recent: Sequence[Mapping[str, Any]]) -> list[RateRow]:
    """Each issue's human open and click rate, oldest first (`recent` is newest first)."""
    return [RateRow(str(s["week"]), s["open_rate"], s["click_rate"]) for s in reversed(recent)]


def rate_chart(rows: Sequence[RateRow]) -> Markup:
    """The rates as a trend in percent. A series digest never tracked is left out; an issue
    without the rate is drawn at 0 (the table beside it says "—")."""
    series = {
        name: [100 * (getattr(r, key) or 0.0) for r in rows]
        for name, key in (("open %", "open_rate"), ("click %", "click_rate"))
        if any(getattr(r, key) is not None for r in rows)
    }
    return trend([r.week for r in rows], series, title="Human open and click rate per issue")


def by_snapshot(
    recent: Sequence[tuple[IssueRecord, Mapping[str, Any]]],
    field: Literal["category", "difficulty"],
) -> list[KindRow]:
    """The mean human click rate of the issues whose featured term has each `field` value
    ("category", "difficulty"), highest first; issues without a click rate are left out."""
    groups: dict[str, list[float]] = {}
    for issue, stats in recent:
        if issue.snapshot is None or stats["click_rate"] is None:
            continue
        name = issue.snapshot["term"].get(field)
        if name:
            groups.setdefault(name, []).append(float(stats["click_rate"]))
    rows = [KindRow(name, len(rates), round(fmean(rates), 4)) for name, rates in groups.items()]
    return sorted(rows, key=lambda r: (-r.click_rate, r.name))


def kind_chart(rows: Sequence[KindRow], *, title: str) -> Markup:
    """Click rate per category or difficulty as bars."""
    return bars([Bar(r.name, r.click_rate, percent(r.click_rate)) for r in rows], title=title)
