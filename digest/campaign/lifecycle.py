"""An issue's life, decided in one place: build the week's issue if it has no content yet, then
send it, resume it, hold it for approval or leave it alone — for the weekly job, the local-time
tick, the approval tick and `digest send`.

Every entry point is safe to run from several processes at once: a concurrent build is detected
and the stored issue used, and the send lease (digest.store.issues) decides who sends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from digest.campaign.approval import (
    NeedsApproval,
    check_send,
    hold_unapproved,
    notify_editors,
)
from digest.campaign.build import build_issue
from digest.campaign.plan import usable_glossary
from digest.campaign.preflight import send_gate
from digest.config import Settings
from digest.core.cadence import TICK_MINUTES, due_week, plan_local_sends, week_fire, zone_slots
from digest.delivery import close_transport, make_transport
from digest.delivery.outcome import Clock
from digest.delivery.runner import SendSummary, send_issue
from digest.delivery.transport import Transport
from digest.logs import get_logger, log_event
from digest.model.glossary import Glossary
from digest.model.issue import IssueRecord, IssueStatus
from digest.model.weeks import IsoWeek, current_week
from digest.store import db
from digest.store.issues import InvalidTransition, NotApproved, get_issue

__all__ = [
    "SKIPPED",
    "Prepared",
    "WeeklyResult",
    "approval_tick",
    "local_time_tick",
    "prepare",
    "resumable",
    "run_weekly",
    "send",
    "send_and_log",
    "send_week",
]

# What each status means for the issue's next step (the statuses: digest.model.issue). A job
# leaves a finished issue alone: sent, or failed (an operator cancelled it or it broke; resuming
# it is their call, `digest issue resume`).
_FINISHED: frozenset[IssueStatus] = frozenset({"sent", "failed"})
_STARTED: frozenset[IssueStatus] = frozenset({"sending", "paused"})  # resume, never rebuild
_TO_BUILD: frozenset[IssueStatus] = frozenset({"planned", "built"})  # a built one is kept
SKIPPED = "skipped"  # WeeklyResult.status when nothing was attempted

# The events keep the logger name they have always had: operators filter on it (see
# docs/operations.md), and it names the job, not a module.
_log = get_logger("digest.schedule")


@dataclass(frozen=True, slots=True)
class WeeklyResult:
    """What one run of the weekly job did: the issue's state after it, and the send summary."""

    week: IsoWeek
    status: str  # the issue's status, or SKIPPED when nothing was attempted
    summary: SendSummary | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """The week's issue with its content, and whether this call built it."""

    issue: IssueRecord
    built: bool  # False: it already had content, or another process built it meanwhile


def prepare(
    engine: Engine,
    settings: Settings,
    week: IsoWeek,
    *,
    now: datetime,
    glossary: Callable[[], Glossary] | None = None,
) -> Prepared:
    """`week`'s issue ready to send: as stored when it has content (built, sending, paused,
    sent, or failed after it was built), else built now, as `digest build` would.

    The glossary is read only when a build is needed; `glossary` replaces how (the CLI's loader
    prints every error). A build that loses a race to another process uses that process's issue.
    Raises what `build_issue` raises (QualityError, RenderError, InvalidGlossary, ...).
    """
    stored = get_issue(engine, week)
    if stored is not None and stored.html is not None:
        _log_prepared(stored, built=False)
        return Prepared(stored, built=False)
    terms = glossary() if glossary is not None else usable_glossary(settings)[0]
    try:
        issue = build_issue(engine, settings, terms, week, now=now)
    except (IntegrityError, InvalidTransition):
        # Another process built (or started sending) this week's issue a moment ago: use theirs.
        theirs = get_issue(engine, week)
        if theirs is None:
            raise
        issue = theirs
    # build_issue stamps built_at with our `now` only when it (re)built the issue.
    built = issue.built_at == now
    _log_prepared(issue, built=built)
    return Prepared(issue, built=built)


def resumable(issue: IssueRecord | None) -> bool:
    """Whether `issue` is a send that started and was cut short (killed, or stopped by a
    signal): the one state a restarted `digest run` resumes without waiting for a fire."""
    return issue is not None and issue.status in _STARTED


def run_weekly(
    settings: Settings,
    week: IsoWeek,
    *,
    now: datetime,
    stop: threading.Event | None = None,
) -> WeeklyResult:
    """Build `week`'s issue if needed and send it; safe to call from several processes at once.

    A sent issue is left alone; a failed one too (an operator cancelled it or it broke: that
    decision is theirs, `digest issue resume`); a paused one resumes where it stopped. One that
    needs approval (DIGEST_REQUIRE_APPROVAL, or held by an editor) is held: not sent, not failed;
    once approved, the approval tick or `digest send` sends it (campaign.approval.after_approval).
    """
    if stop is not None and stop.is_set():
        log_event(_log, "job_skipped", week=str(week), reason="shutting down")
        return WeeklyResult(week, SKIPPED)
    log_event(_log, "job_fired", week=str(week))
    engine = db.make_engine(settings.database_url)
    try:
        issue = get_issue(engine, week)
        if issue is not None and issue.status in _FINISHED:
            return _nothing_to_do(issue)
        if issue is None or issue.status in _TO_BUILD:
            issue = prepare(engine, settings, week, now=now).issue
            if issue.status in _FINISHED:  # another process finished it meanwhile
                return _nothing_to_do(issue)
        if (held := _held(engine, settings, issue, now=now)) is not None:
            return held
        # Scheduled: the week is the fire's own, never early (`force`); approval was just checked.
        return send_and_log(engine, settings, week, stop, now=db.utcnow, force=True, scheduled=True)
    finally:
        engine.dispose()


def send_week(
    settings: Settings,
    week: IsoWeek,
    *,
    stop: threading.Event | None = None,
    force: bool = False,
) -> WeeklyResult:
    """Send (or resume sending) an issue that is already built: `digest issue resume`, the
    desk's "send now". Raises NeedsApproval / EarlySend as `send` does, before any delivery."""
    engine = db.make_engine(settings.database_url)
    try:
        # SendError names a missing or unbuilt issue
        return send_and_log(engine, settings, week, stop, now=db.utcnow, force=force)
    finally:
        engine.dispose()


def local_time_tick(
    settings: Settings,
    now: datetime | Clock,
    *,
    stop: threading.Event | None = None,
    engine: Engine | None = None,
) -> list[WeeklyResult]:
    """One tick of local-time delivery: send each open week's issue to the readers whose local
    send time has come, building it first at the earliest zone's time.

    The ledger keeps every reader to one delivery, whichever tick (or zone) reaches them first,
    so a reader who moves to another zone mid-week still gets the issue once. Only the tick at
    or after the last zone's time sends unrestricted and may mark the issue sent. A week none of
    whose zones came due within `misfire_grace_time` of the last one is not started late.
    `now` as in `send_issue`: a clock (the scheduler passes `digest.store.db.utcnow`) is read
    for each stamp, an instant freezes the tick (tests, a replayed tick).
    """
    moment = now() if callable(now) else now
    if stop is not None and stop.is_set():
        log_event(_log, "job_skipped", reason="shutting down")
        return []
    grace = timedelta(seconds=settings.misfire_grace_time)
    # The scheduler ticks every few minutes and passes the engine it keeps: a new engine per
    # tick is a new pool, new connections and (on SQLite) its pragmas set again each time.
    owned = engine is None
    engine = db.make_engine(settings.database_url) if engine is None else engine
    results: list[WeeklyResult] = []
    try:
        for plan in plan_local_sends(settings, _reader_zones(engine), moment):
            issue = get_issue(engine, plan.week)
            if issue is not None and issue.status in _FINISHED:
                continue  # quietly: every tick of the week sees last week's sent issue
            late_by = moment - (plan.slots[-1].send_at + grace)
            if not resumable(issue) and late_by > timedelta(0):
                if late_by <= timedelta(minutes=TICK_MINUTES):  # log it once, not every tick
                    log_event(
                        _log,
                        "job_missed",
                        level=logging.WARNING,
                        week=str(plan.week),
                        scheduled_for=plan.slots[0].send_at,
                        late_by=str(moment - plan.slots[0].send_at),
                    )
                continue
            if issue is None or issue.status != "held":  # a held week is not fired every tick
                log_event(
                    _log,
                    "job_fired",
                    week=str(plan.week),
                    zones_due=len(plan.due),
                    zones=len(plan.slots),
                )
            if issue is None or issue.status in _TO_BUILD:
                issue = prepare(engine, settings, plan.week, now=moment).issue
                if issue.status in _FINISHED:
                    continue
            if (held := _held(engine, settings, issue, now=moment, quiet=True)) is not None:
                results.append(held)
                continue
            zones = None if plan.final else plan.due
            # The earliest zones start next week's issue while it is still Sunday here: not early.
            sent = send_and_log(
                engine, settings, plan.week, stop, now=now, zones=zones, force=True, scheduled=True
            )
            results.append(sent)
    finally:
        if owned:
            engine.dispose()
    return results


def approval_tick(
    settings: Settings,
    now: datetime,
    *,
    stop: threading.Event | None = None,
    engine: Engine | None = None,
) -> list[WeeklyResult]:
    """One tick of the approval job (DIGEST_REQUIRE_APPROVAL; every 15 minutes).

    Builds the coming issue `approval_lead_hours` before its first send time and tells the
    editors, once, that it waits for approval (also a held one, while its send is due). With
    one weekly fire it also sends the due week's issue that was held at its fire and approved
    since, while that fire is within `misfire_grace_time`: the weekly job fires only once.
    (Local-time ticks pick an approved issue up by themselves.)
    """
    if not settings.require_approval:
        return []
    if stop is not None and stop.is_set():
        log_event(_log, "job_skipped", reason="shutting down")
        return []
    lead = timedelta(hours=settings.approval_lead_hours)
    grace = timedelta(seconds=settings.misfire_grace_time)
    # The scheduler ticks every few minutes and passes the engine it keeps: a new engine per
    # tick is a new pool, new connections and (on SQLite) its pragmas set again each time.
    owned = engine is None
    engine = db.make_engine(settings.database_url) if engine is None else engine
    results: list[WeeklyResult] = []
    try:
        zones = _reader_zones(engine) if settings.local_time_delivery else [None]
        this_week = current_week(now, settings.zone)
        for week in (this_week - 1, this_week, this_week + 1):
            fire = week_fire(settings, week)
            if fire is None:
                continue
            first = zone_slots(settings, fire, zones or [None])[0].send_at
            if first - lead <= now < first + grace:
                _build_ahead(engine, settings, week, fire, first, now=now)
        due = None if settings.local_time_delivery else due_week(settings, now)
        issue = get_issue(engine, due) if due is not None else None
        if due is not None and issue is not None and issue.status == "built" and issue.approved:
            log_event(_log, "job_fired", week=str(due), reason="approved after its send time")
            results.append(
                send_and_log(engine, settings, due, stop, now=db.utcnow, force=True, scheduled=True)
            )
    finally:
        if owned:
            engine.dispose()
    return results


def _build_ahead(
    engine: Engine,
    settings: Settings,
    week: IsoWeek,
    fire: datetime,
    first: datetime,
    *,
    now: datetime,
) -> None:
    """Build `week`'s issue before its first send time (`first`) if it has no content, and tell
    the editors it waits for approval. After `first` the send's own job builds it; a failed
    issue without content is an operator's to rebuild. A build error is logged, not raised."""
    issue = get_issue(engine, week)
    if issue is None or issue.html is None:
        if now >= first or (issue is not None and issue.status not in _TO_BUILD):
            return
        try:
            issue = prepare(engine, settings, week, now=now).issue
        except Exception as exc:  # the build's own errors say what is wrong
            log_event(
                _log, "build_ahead_failed", level=logging.ERROR, week=str(week), error=str(exc)
            )
            return
    if issue.status in ("built", "held") and not issue.approved:
        notify_editors(engine, settings, issue, send_at=fire, now=now)


def _log_prepared(issue: IssueRecord, *, built: bool) -> None:
    log_event(
        _log,
        "issue_built" if built else "issue_reused",
        week=str(issue.week),
        status=issue.status,
        featured=issue.featured_slug,
        pick=issue.pick_source,
    )


def _nothing_to_do(issue: IssueRecord) -> WeeklyResult:
    log_event(
        _log,
        "job_nothing_to_do",
        week=str(issue.week),
        status=issue.status,
        reason=issue.status_reason,
    )
    return WeeklyResult(issue.week, issue.status)


def _held(
    engine: Engine, settings: Settings, issue: IssueRecord, *, now: datetime, quiet: bool = False
) -> WeeklyResult | None:
    """At a scheduled send: hold `issue` if it needs approval (logged when it is held now; an
    already held one again only unless `quiet`, as every local-time tick sees it), or None
    when it may go."""
    kept = hold_unapproved(engine, settings, issue.week, now=now)
    if kept is None:
        return None
    if issue.status != "held":
        log_event(
            _log,
            "issue_held",
            level=logging.WARNING,
            week=str(kept.week),
            status=kept.status,
            reason=kept.status_reason,
        )
        return WeeklyResult(kept.week, kept.status)
    return WeeklyResult(kept.week, kept.status) if quiet else _nothing_to_do(kept)


def send(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    week: IsoWeek,
    *,
    now: datetime | Clock,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    zones: frozenset[str | None] | None = None,
    force: bool = False,
) -> SendSummary:
    """Send (or resume) `week`'s built issue behind the preflight gate: the one place a send
    is started, whether by `digest send`, the weekly job or a local-time tick. The delivery
    layer only carries the verdict out; deciding that an issue may go is the campaign's.

    Before anything is delivered: NeedsApproval for an issue that needs approval (held, or
    unapproved with DIGEST_REQUIRE_APPROVAL), EarlySend for a future week's issue unless
    `force` (campaign.approval.check_send). `force` never skips approval.
    """
    moment = now() if callable(now) else now
    check_send(settings, get_issue(engine, week), week, now=moment, force=force)
    try:
        return send_issue(
            engine,
            settings,
            transport,
            week,
            now=now,
            preflight=send_gate(engine, settings),
            stop=stop,
            progress=progress,
            zones=zones,
            approved_only=settings.require_approval,
        )
    except NotApproved:
        # Withdrawn between the check above and the move to sending (a rebuild, a new subject):
        # refuse as if it had been seen, with the message that says how to approve.
        check_send(settings, get_issue(engine, week), week, now=moment, force=force)
        raise


def send_and_log(
    engine: Engine,
    settings: Settings,
    week: IsoWeek,
    stop: threading.Event | None,
    *,
    now: datetime | Clock,
    zones: frozenset[str | None] | None = None,
    force: bool = False,
    scheduled: bool = False,
) -> WeeklyResult:
    """Send and log the outcome. `scheduled` (a job, not a person): an issue found unapproved
    at the last moment — its approval withdrawn between the job's check and the move to
    sending — is held, as at any send time, instead of raising into the scheduler."""
    transport = make_transport(settings, engine)
    try:
        summary = send(
            engine, settings, transport, week, now=now, stop=stop, zones=zones, force=force
        )
    except NeedsApproval:
        issue = get_issue(engine, week)
        if not scheduled or issue is None:
            raise
        moment = now() if callable(now) else now
        held = _held(engine, settings, issue, now=moment)
        return held if held is not None else WeeklyResult(week, issue.status)
    finally:
        close_transport(transport)  # an SMTP relay's sessions end with QUIT, not a dropped line
    issue = get_issue(engine, week)
    log_event(
        _log,
        "send_finished",
        week=str(week),
        outcome=summary.status,
        sent=summary.sent,
        skipped=summary.skipped,
        failed=summary.failed,
        status=issue.status if issue else None,
        reason=issue.status_reason if issue else None,
    )
    return WeeklyResult(week, issue.status if issue else summary.status, summary)


def _reader_zones(engine: Engine) -> list[str | None]:
    """The distinct time zones active readers have stored (None for readers without one)."""
    query = select(db.subscribers.c.timezone).where(db.subscribers.c.status == "active").distinct()
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())
