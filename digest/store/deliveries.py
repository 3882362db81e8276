"""The delivery log for editors: what an issue's ledger says, and what one reader received.

Read-only views over `deliveries`, `events` and `subscribers` for `digest deliveries`; the
preference centre's data export reads a reader's history through the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from digest.model.subscriber import Subscriber
from digest.model.weeks import IsoWeek, parse_week
from digest.store.db import deliveries, events, issues, subscribers
from digest.store.issues import get_issue
from digest.store.subscribers import get_subscriber

__all__ = [
    "BOUNCE_KINDS",
    "IssueDeliveries",
    "ReaderDelivery",
    "ReaderEvent",
    "ReaderLog",
    "issue_deliveries",
    "reader_log",
    "unsent_readers",
]

# Provider events that mean a mail did not reach the reader (the webhook stores these kinds).
BOUNCE_KINDS = ("bounce", "dropped")


@dataclass(frozen=True, slots=True)
class IssueDeliveries:
    """One issue's ledger in numbers: rows by status, and how many readers it bounced for.

    `bounced` counts readers, once each: those with a bounce or drop event for this issue, and
    those who got it (`sent`) and are bounced now (SendGrid often reports a bounce without the
    issue's custom args). A bounced reader is also counted under `sent`: the ledger records what
    digest did, the bounce what the receiving server did next.

    `refused` counts readers the transport could not send to at all (an address it cannot
    write, or one the provider would drop): final, unlike `failed`, which a later run retries.
    """

    week: IsoWeek
    issue_status: str
    sent: int
    failed: int
    skipped: int
    claimed: int
    bounced: int
    refused: int = 0


@dataclass(frozen=True, slots=True)
class ReaderEvent:
    """A provider event about a reader (bounce, drop, spam report, unsubscribe)."""

    kind: str
    occurred_at: datetime
    detail: str | None
    week: IsoWeek | None  # the issue it was about, when the provider said so


@dataclass(frozen=True, slots=True)
class ReaderDelivery:
    """One issue as it reached (or did not reach) one reader, from the ledger."""

    week: IsoWeek
    status: str  # claimed | sent | failed | skipped | refused
    attempts: int
    error: str | None
    message_id: str | None
    claimed_at: datetime
    sent_at: datetime | None
    events: tuple[ReaderEvent, ...]  # this issue's events for this reader


@dataclass(frozen=True, slots=True)
class ReaderLog:
    """What one reader received and when: every ledger row, newest issue first, and every
    provider event about them (including those not tied to an issue), newest first."""

    subscriber: Subscriber
    deliveries: tuple[ReaderDelivery, ...]
    events: tuple[ReaderEvent, ...]


def issue_deliveries(engine: Engine, week: IsoWeek) -> IssueDeliveries | None:
    """The counts for `week`'s issue, or None when there is no such issue."""
    issue = get_issue(engine, week)
    if issue is None:
        return None
    with engine.connect() as conn:
        by_status: dict[str, int] = dict(
            conn.execute(
                select(deliveries.c.status, func.count())
                .where(deliveries.c.issue_id == issue.id)
                .group_by(deliveries.c.status)
            ).all()
        )
        bounce_events = conn.execute(
            select(events.c.id, events.c.subscriber_id).where(
                events.c.issue_id == issue.id, events.c.kind.in_(BOUNCE_KINDS)
            )
        ).all()
        bounced_now = conn.execute(
            select(deliveries.c.subscriber_id)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .where(
                deliveries.c.issue_id == issue.id,
                deliveries.c.status == "sent",
                subscribers.c.status == "bounced",
            )
        ).scalars()
        # One per reader; an event whose reader was erased still counts, on its own.
        readers = {("reader", sid) for sid in bounced_now}
        readers |= {("reader", sid) if sid else ("event", eid) for eid, sid in bounce_events}
    return IssueDeliveries(
        week=week,
        issue_status=issue.status,
        sent=int(by_status.get("sent", 0)),
        failed=int(by_status.get("failed", 0)),
        skipped=int(by_status.get("skipped", 0)),
        claimed=int(by_status.get("claimed", 0)),
        bounced=len(readers),
        refused=int(by_status.get("refused", 0)),
    )


def unsent_readers(
    engine: Engine, week: IsoWeek, limit: int = 50
) -> tuple[list[tuple[str | None, str, str | None]], int]:
    """The readers of `week`'s issue a send could not get it to, with why — refused, failed, or
    given up as uncertain — first `limit` of them by subscriber id (address, status, reason;
    the address None once erased), and how many there are in all."""
    issue = get_issue(engine, week)
    if issue is None:
        return [], 0
    unsent = deliveries.c.status.in_(("refused", "failed")) | (
        (deliveries.c.status == "skipped") & deliveries.c.error.like("uncertain:%")
    )
    where = (deliveries.c.issue_id == issue.id) & unsent
    with engine.connect() as conn:
        total = int(conn.execute(select(func.count()).where(where)).scalar_one())
        rows = conn.execute(
            select(subscribers.c.email, deliveries.c.status, deliveries.c.error)
            .select_from(deliveries.outerjoin(subscribers))
            .where(where)
            .order_by(deliveries.c.subscriber_id)
            .limit(limit)
        ).all()
    return [(email, status, error) for email, status, error in rows], total


def reader_log(engine: Engine, email_or_id: str | int) -> ReaderLog | None:
    """Everything the ledger and the provider's events say about one reader; None if unknown."""
    found = get_subscriber(engine, email_or_id)
    if found is None:
        return None
    with engine.connect() as conn:
        event_rows = conn.execute(
            select(
                events.c.kind,
                events.c.occurred_at,
                events.c.detail,
                events.c.issue_id,
                issues.c.week,
            )
            .select_from(events.outerjoin(issues, issues.c.id == events.c.issue_id))
            .where(events.c.subscriber_id == found.id)
            .order_by(events.c.occurred_at.desc(), events.c.id.desc())
        ).all()
        delivery_rows = conn.execute(
            select(
                deliveries.c.issue_id,
                issues.c.week,
                deliveries.c.status,
                deliveries.c.attempts,
                deliveries.c.error,
                deliveries.c.message_id,
                deliveries.c.claimed_at,
                deliveries.c.sent_at,
            )
            .join(issues, issues.c.id == deliveries.c.issue_id)
            .where(deliveries.c.subscriber_id == found.id)
            .order_by(issues.c.week.desc())
        ).all()
    all_events = tuple(
        (issue_id, ReaderEvent(kind, occurred, detail, parse_week(week) if week else None))
        for kind, occurred, detail, issue_id, week in event_rows
    )
    history = tuple(
        ReaderDelivery(
            week=parse_week(week),
            status=status,
            attempts=attempts,
            error=error,
            message_id=message_id,
            claimed_at=claimed_at,
            sent_at=sent_at,
            events=tuple(e for eid, e in all_events if eid == issue_id),
        )
        for issue_id, week, status, attempts, error, message_id, claimed_at, sent_at in (
            delivery_rows
        )
    )
    return ReaderLog(found, history, tuple(e for _eid, e in all_events))
