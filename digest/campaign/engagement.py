"""Per-issue numbers for editors: `digest stats` and the desk read them from here.

The counting is the store's (`digest.store.engagement.issue_numbers`); this adds the week, picks
the issues, and leaves a rate out (None) where digest did not track, so a 0 % is never a guess.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from digest.config import Settings
from digest.model.issue import IssueRecord
from digest.model.weeks import IsoWeek
from digest.store.engagement import issue_numbers
from digest.store.issues import get_issue, list_issues

__all__ = ["RECENT_ISSUES", "StatsError", "issue_stats", "recent_issue_stats", "recent_stats"]

# How many issues `digest stats` shows without --week.
RECENT_ISSUES = 12
# An issue has numbers once its send began; the statuses it can be in then.
_SENT_STATES = ("sending", "paused", "failed", "sent")


class StatsError(ValueError):
    """There are no numbers for what was asked (no such issue, or not sent yet)."""


def issue_stats(engine: Engine, settings: Settings, week: IsoWeek) -> dict[str, Any]:
    """`week`'s numbers: "week", then the keys of `issue_numbers` (counts, clicks_by_link,
    rates). StatsError for an unknown week or an issue that has not gone out."""
    issue = get_issue(engine, week)
    if issue is None:
        raise StatsError(f"there is no issue for {week}")
    if issue.send_started_at is None:
        raise StatsError(f"issue {week} is {issue.status}: it has no numbers until it is sent")
    return _stats(engine, settings, issue)


def recent_stats(
    engine: Engine, settings: Settings, limit: int = RECENT_ISSUES
) -> list[dict[str, Any]]:
    """The numbers of the last `limit` issues that went out, newest first."""
    return [stats for _issue, stats in recent_issue_stats(engine, settings, limit)]


def recent_issue_stats(
    engine: Engine, settings: Settings, limit: int = RECENT_ISSUES
) -> list[tuple[IssueRecord, dict[str, Any]]]:
    """`recent_stats` with each issue beside its numbers, for views that also read the
    issue's snapshot (the desk's engagement by category and difficulty)."""
    sent = [i for i in list_issues(engine, _SENT_STATES) if i.send_started_at is not None]
    return [(issue, _stats(engine, settings, issue)) for issue in sent[:limit]]


def _stats(engine: Engine, settings: Settings, issue: IssueRecord) -> dict[str, Any]:
    numbers = issue_numbers(engine, issue.id)
    # Opens are known only with open tracking (or from when it was on), clicks only with click
    # tracking (or from when it was on) and for an issue with tracked links: every build
    # stores its links, so links alone do not say clicks were counted. Otherwise unknown.
    if not settings.track_opens and not (numbers["opens_unique"] or numbers["opens_machine"]):
        numbers["open_rate"] = None
    clicked = numbers["clicks_unique"] or numbers["clicks_machine"]
    if issue.links is None or (not settings.track_clicks and not clicked):
        numbers["click_rate"] = None
    return {"week": str(issue.week), **numbers}
