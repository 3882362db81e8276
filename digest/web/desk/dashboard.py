"""/admin/: the desk's first page — the next issue and when it goes out, the glossary's health,
the readers by status, the last issues with their delivery counts, and the latest audit entries.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Engine, select

from digest.campaign.plan import PlannedWeek, glossary_health
from digest.config import Settings
from digest.core.cadence import week_fire, zone_slots
from digest.model.issue import IssueRecord
from digest.store import audit, db
from digest.store.deliveries import IssueDeliveries, issue_deliveries
from digest.store.issues import list_issues
from digest.store.subscribers import count_by_status
from digest.web.deps import EngineDep, SettingsDep
from digest.web.desk.session import EditorDep
from digest.web.desk.views import coming, desk_page, local_time
from digest.web.limits import FORM_LIMITS, GetAlsoHead

__all__ = ["NextSend", "next_send", "router"]

router = APIRouter(route_class=GetAlsoHead, form_limits=FORM_LIMITS)

_LAST_ISSUES = 6


@dataclass(frozen=True, slots=True)
class NextSend:
    """When a week's issue goes out: the schedule's time in the configured zone and, with
    local-time delivery, the first and the last reader zone's local send time."""

    at: str
    first_zone: str | None = None
    last_zone: str | None = None


def next_send(engine: Engine, settings: Settings, planned: PlannedWeek) -> NextSend:
    fire = week_fire(settings, planned.week)
    if fire is None:
        return NextSend("no send time this week (the schedule skips it)")
    if not settings.local_time_delivery:
        return NextSend(local_time(settings, fire))
    slots = zone_slots(settings, fire, _reader_zones(engine) or [None])
    first, last = slots[0], slots[-1]
    return NextSend(
        local_time(settings, fire),
        f"{first.tz_name}: {local_time(settings, first.send_at)}",
        f"{last.tz_name}: {local_time(settings, last.send_at)}",
    )


def _reader_zones(engine: Engine) -> list[str | None]:
    with engine.connect() as conn:
        zones = conn.execute(
            select(db.subscribers.c.timezone).where(db.subscribers.c.status == "active").distinct()
        ).scalars()
        return list(zones)


@router.get("/admin/")
def dashboard(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    planned = coming(engine, settings, start=None, weeks=1)
    upcoming = planned[0] if planned else None
    past: list[tuple[IssueRecord, IssueDeliveries | None]] = [
        (issue, issue_deliveries(engine, issue.week))
        for issue in list_issues(engine, limit=_LAST_ISSUES)
    ]
    return desk_page(
        request,
        settings,
        user,
        "dashboard",
        upcoming=upcoming,
        send=next_send(engine, settings, upcoming) if upcoming else None,
        health=glossary_health(settings),
        subscribers=count_by_status(engine),
        past=past,
        entries=audit.recent(engine, limit=15),
        when=lambda at: local_time(settings, at),
    )
