"""The newsletter issue and its life: planned → built → sending → sent (or paused / failed).

Every move goes through `transition`, a conditional UPDATE, so two processes racing to move one
issue cannot both win, and a move the state machine does not allow is refused with a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Engine, insert, or_, select, update

from digest.db import issues, utcnow
from digest.weeks import IsoWeek, parse_week

__all__ = [
    "TRANSITIONS",
    "InvalidTransition",
    "IssueRecord",
    "IssueStatus",
    "claim_send",
    "featured_history",
    "get_issue",
    "list_issues",
    "release_send",
    "save_built",
    "transition",
]

IssueStatus = Literal["planned", "built", "sending", "sent", "paused", "failed"]

# to-state → the states it may be reached from. Rebuilding is allowed until sending starts:
# after that the content is frozen, so what went out is what the archive shows.
TRANSITIONS: dict[str, frozenset[str]] = {
    "planned": frozenset({"failed"}),
    "built": frozenset({"planned", "built", "failed"}),
    "sending": frozenset({"built", "paused", "failed", "sending"}),
    "sent": frozenset({"sending"}),
    "paused": frozenset({"sending"}),
    "failed": frozenset({"planned", "built", "sending", "paused"}),
}
FEATURED_STATES = ("built", "sending", "sent", "paused")


class InvalidTransition(Exception):
    """An issue was asked to move where its state machine does not allow."""


@dataclass(frozen=True, slots=True)
class IssueRecord:
    id: int
    week: IsoWeek
    featured_slug: str
    related_slugs: tuple[str, ...]
    pick_source: str
    status: IssueStatus
    status_reason: str | None
    subject: str | None
    preheader: str | None
    html: str | None
    text: str | None
    archive_html: str | None
    snapshot: dict[str, Any] | None
    claimed_by: str | None
    claimed_until: datetime | None
    created_at: datetime
    built_at: datetime | None
    send_started_at: datetime | None
    sent_at: datetime | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> IssueRecord:
        data = dict(row._mapping)
        data["week"] = parse_week(data["week"])
        data["related_slugs"] = tuple(data["related_slugs"] or ())
        return cls(**data)


def get_issue(engine: Engine | Connection, week: IsoWeek) -> IssueRecord | None:
    row = _execute(engine, select(issues).where(issues.c.week == str(week))).first()
    return IssueRecord.from_row(row) if row else None


def list_issues(
    engine: Engine | Connection,
    statuses: Sequence[str] | None = None,
    limit: int | None = None,
    newest_first: bool = True,
) -> list[IssueRecord]:
    query = select(issues).order_by(issues.c.week.desc() if newest_first else issues.c.week)
    if statuses is not None:
        query = query.where(issues.c.status.in_(list(statuses)))
    if limit is not None:
        query = query.limit(limit)
    return [IssueRecord.from_row(r) for r in _execute(engine, query)]


def featured_history(engine: Engine | Connection) -> list[tuple[IsoWeek, str]]:
    """(week, featured slug) of every issue that was built or sent, oldest first.

    This is what selection's rotation rules read; planned and failed issues never went out and
    do not count as featured.
    """
    query = (
        select(issues.c.week, issues.c.featured_slug)
        .where(issues.c.status.in_(FEATURED_STATES))
        .order_by(issues.c.week)
    )
    return [(parse_week(w), s) for w, s in _execute(engine, query)]


def save_built(
    engine: Engine,
    *,
    week: IsoWeek,
    featured_slug: str,
    related_slugs: Sequence[str],
    pick_source: str,
    subject: str,
    preheader: str,
    html: str,
    text: str,
    archive_html: str,
    snapshot: dict[str, Any],
    now: datetime | None = None,
) -> IssueRecord:
    """Store a built issue (create it, or rebuild one that has not started sending)."""
    now = now or utcnow()
    values = {
        "featured_slug": featured_slug,
        "related_slugs": list(related_slugs),
        "pick_source": pick_source,
        "status": "built",
        "status_reason": None,
        "subject": subject,
        "preheader": preheader,
        "html": html,
        "text": text,
        "archive_html": archive_html,
        "snapshot": snapshot,
        "built_at": now,
        "updated_at": now,
    }
    with engine.begin() as conn:
        existing = get_issue(conn, week)
        if existing is None:
            conn.execute(insert(issues).values(week=str(week), created_at=now, **values))
        else:
            allowed = TRANSITIONS["built"]
            done = conn.execute(
                update(issues)
                .where(issues.c.id == existing.id, issues.c.status.in_(allowed))
                .values(**values)
            )
            if done.rowcount != 1:
                raise InvalidTransition(
                    f"issue {week} is {existing.status}; its content is frozen once sending starts"
                )
        record = get_issue(conn, week)
    assert record is not None
    return record


def transition(
    engine: Engine | Connection,
    week: IsoWeek,
    to: IssueStatus,
    reason: str | None = None,
    now: datetime | None = None,
) -> IssueRecord:
    """Move `week`'s issue to `to` if the state machine allows it from where it is now."""
    now = now or utcnow()
    values: dict[str, Any] = {"status": to, "status_reason": reason, "updated_at": now}
    if to == "sent":
        values["sent_at"] = now
    stmt = update(issues).where(issues.c.week == str(week), issues.c.status.in_(TRANSITIONS[to]))
    result = _execute(engine, stmt.values(**values))
    if result.rowcount != 1:
        current = get_issue(engine, week)
        if current is None:
            raise InvalidTransition(f"there is no issue for {week}")
        raise InvalidTransition(f"issue {week} cannot go from {current.status} to {to}")
    if to == "sending":
        # The send's start is the subscriber cut-off: set once, on the first move to sending.
        _execute(
            engine,
            update(issues)
            .where(issues.c.week == str(week), issues.c.send_started_at.is_(None))
            .values(send_started_at=now),
        )
    record = get_issue(engine, week)
    assert record is not None
    return record


def claim_send(
    engine: Engine, week: IsoWeek, owner: str, lease: timedelta, now: datetime | None = None
) -> bool:
    """Take the right to send `week`'s issue for `lease`; False when another process holds it.

    A lease, not a lock: a sender killed with SIGKILL cannot release it, so it lapses by itself
    and the next run takes over. A live sender renews it between batches.
    """
    now = now or utcnow()
    result = _execute(
        engine,
        update(issues)
        .where(
            issues.c.week == str(week),
            or_(
                issues.c.claimed_by.is_(None),
                issues.c.claimed_by == owner,
                issues.c.claimed_until < now,
            ),
        )
        .values(claimed_by=owner, claimed_until=now + lease),
    )
    return result.rowcount == 1


def release_send(engine: Engine, week: IsoWeek, owner: str) -> None:
    _execute(
        engine,
        update(issues)
        .where(issues.c.week == str(week), issues.c.claimed_by == owner)
        .values(claimed_by=None, claimed_until=None),
    )


def _execute(engine: Engine | Connection, statement: Any) -> Any:
    """Run one statement in its own transaction, or in the caller's when given a Connection."""
    if isinstance(engine, Connection):
        return engine.execute(statement)
    with engine.begin() as conn:
        result = conn.execute(statement)
        if result.returns_rows:
            rows = result.fetchall()
            return _Rows(rows)
        return result


class _Rows(list):  # type: ignore[type-arg]
    """Fetched rows that still answer `.first()`, so callers need not care who ran the query."""

    def first(self) -> Any:
        return self[0] if self else None
