"""/admin/stats: the list across the last weeks, and the issues' human open and click rates
(per issue, and by the featured term's category and difficulty), as pictures with tables.

The charts are `charts`' SVG; the list's numbers come from the store's read views (`growth`),
the issues' from `digest.campaign.engagement`, shaped by `numbers`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from digest.campaign.engagement import recent_issue_stats
from digest.model.weeks import current_week
from digest.store import db
from digest.store.growth import list_weeks
from digest.web.deps import EngineDep, SettingsDep
from digest.web.desk.charts import trend
from digest.web.desk.numbers import by_snapshot, kind_chart, percent, rate_chart, rate_rows
from digest.web.desk.session import EditorDep
from digest.web.desk.views import desk_page
from digest.web.limits import FORM_LIMITS, GetAlsoHead

__all__ = ["TREND_WEEKS", "router"]

router = APIRouter(route_class=GetAlsoHead, form_limits=FORM_LIMITS)

TREND_WEEKS = 12


@router.get("/admin/stats")
def stats_page(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    this_week = current_week(db.utcnow(), settings.zone)
    weeks = [this_week - n for n in range(TREND_WEEKS - 1, -1, -1)]
    rows = list_weeks(engine, weeks, settings.zone)
    labels = [str(r.week) for r in rows]
    size = trend(labels, {"confirmed": [r.confirmed for r in rows]}, title="Readers on the list")
    changes = trend(
        labels,
        {
            "joined": [r.joined for r in rows],
            "unsubscribed": [r.unsubscribed for r in rows],
            "bounced": [r.bounced for r in rows],
        },
        title="Joined, unsubscribed and bounced per week",
    )
    recent = recent_issue_stats(engine, settings)
    rates = rate_rows([stats for _issue, stats in recent])
    categories = by_snapshot(recent, "category")
    difficulties = by_snapshot(recent, "difficulty")
    return desk_page(
        request,
        settings,
        user,
        "stats",
        weeks=rows,
        size_chart=size,
        changes_chart=changes,
        rates=rates,
        rates_chart=rate_chart(rates),
        categories=categories,
        categories_chart=kind_chart(categories, title="Human click rate by category"),
        difficulties=difficulties,
        difficulties_chart=kind_chart(difficulties, title="Human click rate by difficulty"),
        percent=percent,
    )
