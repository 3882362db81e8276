"""The latest sent issue as a reader is shown it: the home page's sample of what one gets, the
confirmed page's first thing to read, and the welcome mail's "latest issue".

One reading of it, so the three always name the same issue, by its calendar date and its
public archive page (only a sent issue has one).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from digest.config import Settings
from digest.core.dates import issue_date, long_date
from digest.core.urls import Urls
from digest.model.weeks import IsoWeek
from digest.store.issues import list_issues

__all__ = ["LatestIssue", "latest_issue"]


@dataclass(frozen=True, slots=True)
class LatestIssue:
    """The newest sent issue's term, where to read it, and its date in the site's language."""

    week: IsoWeek
    title: str
    summary: str
    url: str  # its archive page
    date: str  # "May 4, 2026"


def latest_issue(engine: Engine, settings: Settings) -> LatestIssue | None:
    """The newest sent issue, or None before the first one went out."""
    found = list_issues(engine, statuses=["sent"], limit=1)
    if not found or not found[0].snapshot:
        return None
    record, term = found[0], found[0].snapshot["term"]
    day = issue_date(record.week, settings.schedule, settings.timezone)
    return LatestIssue(
        week=record.week,
        title=term["title"],
        summary=term["summary"],
        url=Urls.from_settings(settings).archive_page(record.week),
        date=long_date(day, settings.locale),
    )
