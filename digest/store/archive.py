"""The public archive's queries: which issues readers may see, their neighbours, the last one out.

An issue is public from the moment its send starts: from then on readers hold its mail, whose
"view in browser" and quiz links go to its page, and its content is frozen (a build can no longer
replace it). A paused send is as public as a running one; a failed issue is not (an operator
cancelled it or it broke, and it may still be rebuilt). The pages need the week and snapshot of
a few issues, never their mail, so these queries read only those columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from digest.model.issue import IssueStatus
from digest.model.snapshot import Snapshot
from digest.model.weeks import IsoWeek, parse_week
from digest.store.db import issues

__all__ = [
    "PUBLIC_STATES",
    "PublicIssue",
    "is_public",
    "last_issue_out",
    "neighbours",
    "public_issues",
]

PUBLIC_STATES: tuple[IssueStatus, ...] = ("sending", "paused", "sent")

_COLUMNS = (issues.c.week, issues.c.status, issues.c.snapshot)


@dataclass(frozen=True, slots=True)
class PublicIssue:
    """An issue as the archive lists it: its week, status and frozen snapshot."""

    week: IsoWeek
    status: IssueStatus
    snapshot: Snapshot | None


def is_public(status: str) -> bool:
    return status in PUBLIC_STATES


def public_issues(engine: Engine, *, limit: int | None = None) -> list[PublicIssue]:
    """The public issues, newest first."""
    query = (
        select(*_COLUMNS)
        .where(issues.c.status.in_(PUBLIC_STATES))
        .order_by(issues.c.week.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [_public(row) for row in conn.execute(query)]


def neighbours(engine: Engine, week: IsoWeek) -> tuple[PublicIssue | None, PublicIssue | None]:
    """(the public issue just before `week`, the one just after); None where there is none.
    ISO week strings ("2026-W05") sort as the weeks do, so the database compares them."""
    public = issues.c.status.in_(PUBLIC_STATES)
    older = select(*_COLUMNS).where(public, issues.c.week < str(week))
    newer = select(*_COLUMNS).where(public, issues.c.week > str(week))
    with engine.connect() as conn:
        before = conn.execute(older.order_by(issues.c.week.desc()).limit(1)).first()
        after = conn.execute(newer.order_by(issues.c.week).limit(1)).first()
    return (
        _public(before) if before is not None else None,
        _public(after) if after is not None else None,
    )


def last_issue_out(engine: Engine, week: IsoWeek) -> tuple[IsoWeek, str] | None:
    """(week, featured slug) of the latest issue before `week` whose send has started: the term
    readers met last, which `week`'s quiz asks about (digest.core.quiz). A built or held issue
    that never went out does not count: its readers have not seen it."""
    query = (
        select(issues.c.week, issues.c.featured_slug)
        .where(issues.c.status.in_(PUBLIC_STATES), issues.c.week < str(week))
        .order_by(issues.c.week.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else (parse_week(row.week), row.featured_slug)


def _public(row: Any) -> PublicIssue:
    mapping = row._mapping
    return PublicIssue(parse_week(mapping["week"]), mapping["status"], mapping["snapshot"])
