"""What `digest status` shows: when the job fires next, where the latest issue stands, the next
issue to go out, the glossary's health, and how many subscribers and queued terms there are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from digest.campaign.plan import GlossaryHealth, PlannedWeek, coming_weeks
from digest.config import Settings
from digest.core.cadence import next_fire_time, week_fire, zone_slots
from digest.model.glossary import Glossary
from digest.model.issue import IssueRecord
from digest.model.schedule import parse_schedule
from digest.model.weeks import current_week
from digest.owner import Liveness, owner_liveness
from digest.store.db import deliveries, queue, subscribers
from digest.store.issues import describe_lease, list_issues
from digest.store.jobs import stored_next_run
from digest.store.leadership import who_leads
from digest.store.send_crew import CrewMember, live_members
from digest.store.subscribers import count_by_status
from digest.store.terms import read_glossary

__all__ = [
    "IssueSummary",
    "NextIssue",
    "StatusReport",
    "ZoneProgress",
    "gather_status",
    "lease_note",
]


@dataclass(frozen=True, slots=True)
class IssueSummary:
    issue: IssueRecord
    deliveries: dict[str, int]  # ledger status → count (claimed, sent, failed, skipped)
    # Who is sending it and what to do: set while it is `sending` or its lease is held.
    lease: str | None = None
    liveness: Liveness | None = None  # what this machine can tell about the lease's holder


@dataclass(frozen=True, slots=True)
class ZoneProgress:
    """Local-time delivery of the issue shown, for the readers with one stored time zone."""

    zone: str  # the IANA zone their send time is in
    stored: str | None  # the value readers have stored; None: not set (DIGEST_TIMEZONE)
    send_at: datetime  # their local send time, in `zone`
    readers: int  # active readers with this zone now
    sent: int  # of this issue's `sent` ledger rows, those of readers now in this zone


@dataclass(frozen=True, slots=True)
class NextIssue:
    """The next issue to go out: its plan row (term, source, state) and when it is due."""

    planned: PlannedWeek
    send_at: datetime | None  # the schedule's fire in its week, in the configured zone
    # Its fire has passed and it is not sent: no job sends it by itself any more (beyond the
    # misfire grace), so an editor must (`digest send`).
    missed: bool = False


@dataclass(frozen=True, slots=True)
class StatusReport:
    schedule: str
    timezone: str
    next_fire: datetime | None  # in the configured zone
    # True when next_fire comes from the scheduler's stored job (what will really happen);
    # False when no scheduler has run against this database yet and it is computed.
    scheduled: bool
    issue: IssueSummary | None
    # The stored run time has passed: no scheduler is running (it fires on the next start,
    # within the grace window), or it is firing right now.
    overdue: bool
    queue_length: int
    subscribers: dict[str, int] = field(default_factory=dict)
    # With local-time delivery: the shown issue's progress per time zone, earliest first.
    zones: list[ZoneProgress] = field(default_factory=list)
    # None: no issue is stored for it and no term is usable to pick one.
    next_issue: NextIssue | None = None
    glossary: GlossaryHealth = field(default_factory=lambda: GlossaryHealth(0, []))
    # Replicas on PostgreSQL: the session leading the scheduler ("digest-leader <host> pid <pid>"),
    # "" when no replica leads; None on SQLite, where the lead is a file lock on one host.
    leader: str | None = None


def gather_status(engine: Engine, settings: Settings, now: datetime) -> StatusReport:
    trigger = parse_schedule(settings.schedule, settings.zone)
    stored = stored_next_run(engine)
    next_fire = stored or next_fire_time(trigger, now)
    # The current week's issue, else the last one before it; one built ahead is not "current".
    this_week = current_week(now, settings.zone)
    every = list_issues(engine)
    latest = [i for i in every if i.week <= this_week] or every
    with engine.connect() as conn:
        issue = None
        if latest:
            counts = conn.execute(
                select(deliveries.c.status, func.count())
                .where(deliveries.c.issue_id == latest[0].id)
                .group_by(deliveries.c.status)
            )
            crew = live_members(engine, latest[0].id, now)
            issue = _summary(latest[0], {status: n for status, n in counts}, settings, now, crew)
        queued = conn.execute(select(func.count()).select_from(queue)).scalar_one()
    by_status = count_by_status(engine)
    zones = []
    if settings.local_time_delivery and issue is not None:
        zones = _zone_progress(engine, settings, issue.issue)
    glossary, errors = read_glossary(settings.terms_dir)
    return StatusReport(
        schedule=settings.schedule,
        timezone=settings.timezone,
        next_fire=next_fire.astimezone(settings.zone) if next_fire else None,
        scheduled=stored is not None,
        overdue=stored is not None and stored < now,
        issue=issue,
        queue_length=queued,
        subscribers=by_status,
        zones=zones,
        next_issue=_next_issue(engine, settings, glossary, now),
        glossary=GlossaryHealth(len(glossary), errors),
        leader=(who_leads(engine) or "") if engine.dialect.name == "postgresql" else None,
    )


def _next_issue(
    engine: Engine, settings: Settings, glossary: Glossary, now: datetime
) -> NextIssue | None:
    try:
        planned = coming_weeks(engine, settings, glossary, start=None, weeks=1, now=now)[0]
    except ValueError:  # nothing stored for the week, and no usable term to pick
        return None
    fire = week_fire(settings, planned.week)
    if fire is None:
        return NextIssue(planned, None)
    grace = timedelta(seconds=settings.misfire_grace_time)
    missed = fire + grace < now and planned.state not in ("sent", "sending", "paused")
    return NextIssue(planned, fire.astimezone(settings.zone), missed=missed)


def _summary(
    issue: IssueRecord,
    counts: dict[str, int],
    settings: Settings,
    now: datetime,
    crew: list[CrewMember],
) -> IssueSummary:
    holder = owner_liveness(issue.claimed_owner) if issue.lease is not None else None
    note = lease_note(issue, holder, now, local_time=settings.local_time_delivery, crew=crew)
    return IssueSummary(issue, counts, note, holder)


def lease_note(
    issue: IssueRecord,
    holder: Liveness | None,
    now: datetime,
    *,
    local_time: bool = False,
    crew: list[CrewMember] | None = None,
) -> str | None:
    """What `digest status` says after "sending": who holds the send, and whether
    `digest send` would resume it now or must wait (and until when). None when the issue is
    not sending and nobody holds its lease. `crew`: the live members of a shared send."""
    lease = issue.lease
    resume = f"`digest send --week {issue.week}` resumes it now"
    if lease is None and crew:
        who = ", ".join(m.lease.describe() for m in crew)
        if len(crew) == 1:
            return f"{who} is sending it; `digest send --week {issue.week}` joins it"
        return (
            f"{len(crew)} processes send it together ({who}); "
            f"`digest send --week {issue.week}` joins them"
        )
    if lease is None:
        if issue.status != "sending":
            return None
        if local_time:
            return "no process is sending it now; `digest run` sends on at the next zone's time"
        return f"no process is sending it; {resume}"
    said = describe_lease(lease, holder, now)
    if lease.lapsed(now) or (holder is not None and holder.gone):
        return f"{said}; {resume}"
    return said


def _zone_progress(engine: Engine, settings: Settings, issue: IssueRecord) -> list[ZoneProgress]:
    fire = week_fire(settings, issue.week)
    if fire is None:
        return []
    tz = subscribers.c.timezone
    with engine.connect() as conn:
        readers: dict[str | None, int] = dict(
            conn.execute(
                select(tz, func.count()).where(subscribers.c.status == "active").group_by(tz)
            ).all()
        )
        sent: dict[str | None, int] = dict(
            conn.execute(
                select(tz, func.count())
                .select_from(deliveries.join(subscribers))
                .where(deliveries.c.issue_id == issue.id, deliveries.c.status == "sent")
                .group_by(tz)
            ).all()
        )
    return [
        ZoneProgress(
            slot.tz_name, slot.zone, slot.send_at, readers.get(slot.zone, 0), sent.get(slot.zone, 0)
        )
        # The zones of active readers are the keys of `readers`: no second query for them.
        for slot in zone_slots(settings, fire, list(readers) or [None])
    ]
