"""The weekly job and its wiring: the schedule setting → an APScheduler cron trigger, a job store
in digest's own database, the job that builds and sends the week's issue, and `digest run`.

The job is stored by its textual reference (`digest.schedule:weekly_job`) so a restart finds it
again; a fire missed while no process ran is sent once if it is still within
`misfire_grace_time`, and skipped (and logged) otherwise.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from digest import db
from digest.config import Settings, get_settings
from digest.issues import InvalidTransition, IssueRecord, get_issue, lease_holder
from digest.logs import get_logger, log_event
from digest.owner import owner_liveness
from digest.weeks import IsoWeek, current_week, parse_week

if TYPE_CHECKING:
    from digest.delivery.runner import SendSummary

__all__ = [
    "JOBS_TABLE",
    "JOB_ID",
    "TICK_MINUTES",
    "WEEKLY_JOB",
    "LocalSend",
    "ScheduleError",
    "WeeklyResult",
    "ZoneSlot",
    "due_fire_time",
    "install_weekly_job",
    "job_trigger",
    "local_send_time",
    "local_time_tick",
    "make_jobstore",
    "make_scheduler",
    "next_fire_time",
    "parse_schedule",
    "plan_local_sends",
    "reader_zones",
    "run_weekly",
    "scheduled_week",
    "send_week",
    "serve",
    "start_scheduler",
    "week_fire",
    "weekly_job",
    "zone_slots",
]

JOB_ID = "digest-weekly-issue"
WEEKLY_JOB = "digest.schedule:weekly_job"
JOBS_TABLE = "apscheduler_jobs"  # digest/migrations/env.py leaves this table to APScheduler
_NOW_JOB_ID = "digest-weekly-issue-now"

_log = get_logger("digest.schedule")

# Set by SIGTERM/SIGINT in `digest run`: the running send finishes its batch, records its state
# and returns; queued jobs do not start. A process-wide flag because the job is stored by name
# and cannot be handed an Event.
_shutdown = threading.Event()


class ScheduleError(ValueError):
    """The schedule setting cannot be understood; the message says what is accepted."""


# --------------------------------------------------------------------------- the trigger

_SIMPLE_RE = re.compile(r"^(?P<days>[A-Za-z][A-Za-z,\-]*)\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})$")
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = {
    f"{day}day": day[:3] for day in ("mon", "tues", "wednes", "thurs", "fri", "satur", "sun")
}
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab: 0 (and 7) is Sunday
_FORMS = "'<day_of_week> HH:MM' (e.g. 'mon 09:00', 'mon,thu 07:30') or a 5-field crontab"


def parse_schedule(text: str, zone: ZoneInfo | str) -> CronTrigger:
    """The cron trigger for a schedule setting, in `zone`.

    Two forms: `mon 09:00` (days as names, lists and ranges: `mon,thu`, `mon-fri`), or a
    standard 5-field crontab (`0 9 * * 1`), where weekday numbers mean what they mean to cron.
    """
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    spec = " ".join(str(text).split())
    if not spec:
        raise ScheduleError(f"the schedule is empty; use {_FORMS}")
    fields = spec.split(" ")
    if len(fields) == 5:
        return _from_crontab(spec, fields, tz)
    match = _SIMPLE_RE.match(spec)
    if not match:
        raise ScheduleError(f"cannot read schedule {text!r}; use {_FORMS}")
    days = re.sub(r"[a-z]+", lambda m: _FULL_DAY_NAMES.get(m[0], m[0]), match["days"].lower())
    for part in days.split(","):
        for name in part.split("-", 1):
            if name not in _DAY_NAMES:
                raise ScheduleError(
                    f"schedule {text!r}: {name!r} is not a day; use {', '.join(_DAY_NAMES)}"
                )
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise ScheduleError(f"schedule {text!r}: {match['hour']}:{match['minute']} is not a time")
    try:
        return CronTrigger(day_of_week=days, hour=hour, minute=minute, timezone=tz)
    except ValueError as exc:
        raise ScheduleError(f"schedule {text!r}: {exc}") from None


def _from_crontab(text: str, fields: list[str], zone: ZoneInfo) -> CronTrigger:
    minute, hour, day, month, weekday = fields
    if day != "*" and weekday != "*":
        # cron runs when EITHER matches, APScheduler when BOTH do: refuse rather than surprise.
        raise ScheduleError(
            f"crontab {text!r} restricts both day of month and day of week; restrict one"
        )
    try:
        days = _crontab_weekdays(weekday)
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=days, timezone=zone
        )
    except ValueError as exc:
        raise ScheduleError(f"crontab {text!r}: {exc}") from None


def _crontab_weekdays(field: str) -> str:
    """A crontab weekday field as APScheduler day names.

    APScheduler 3 numbers Monday 0 where cron numbers Sunday 0 (its from_crontab documents the
    mismatch); names mean the same to both, so numbers are translated to names here.
    """
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        body, slash, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else 0
        if slash and step < 1:
            raise ValueError(f"bad step in day of week {part!r}")
        if body == "*":
            low, high = 0, 6
        elif "-" in body:
            first, last = body.split("-", 1)
            low, high = _cron_day(first), _cron_day(last)
            if low > high:
                raise ValueError(f"day-of-week range {body!r} runs backwards")
        else:
            low = _cron_day(body)
            high = 6 if slash else low
        days.update(d % 7 for d in range(low, high + 1, step or 1))
    return ",".join(_CRON_DAYS[d] for d in sorted(days))


def _cron_day(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text in _CRON_DAYS:
        return _CRON_DAYS.index(text)
    raise ValueError(f"{text!r} is not a day of week (0-7 or sun-sat)")


def next_fire_time(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The first fire time at or after `now` (aware, in the trigger's zone)."""
    fire: datetime | None = trigger.get_next_fire_time(None, now)
    return fire


def due_fire_time(trigger: CronTrigger, now: datetime, window: timedelta) -> datetime | None:
    """The latest fire time in `[now - window, now]`, or None.

    APScheduler does not tell a job which fire time it runs for; with coalescing it is the
    latest one that came due, and the executor only runs it within the grace window, so this
    recovers it from the trigger. A minute of slack covers the delay between due and running.
    """
    fire = trigger.get_next_fire_time(None, now - window - timedelta(minutes=1))
    latest = None
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire)
    return latest


def scheduled_week(settings: Settings, now: datetime) -> IsoWeek:
    """The week the job running at `now` is for: that of its fire time in the configured zone.

    A machine that was down at Monday 09:00 and runs the job at 11:00 sends Monday's issue;
    a job run by hand outside any window (`digest run --now` on a Wednesday) sends this week's.
    """
    trigger = parse_schedule(settings.schedule, settings.zone)
    fired = due_fire_time(trigger, now, timedelta(seconds=settings.misfire_grace_time))
    return current_week(fired or now, settings.zone)


# --------------------------------------------------------------------------- the scheduler


class _Scheduler(BackgroundScheduler):  # type: ignore[misc]  # APScheduler 3 ships no types
    def _process_jobs(self) -> float | None:
        # APScheduler 3's loop looks for due jobs once more after shutdown(); a job due then is
        # handed to the stopped executor, fails, and its fire time is advanced: a lost issue.
        if self.state == STATE_STOPPED:
            return None
        return super()._process_jobs()  # type: ignore[no-any-return]


def make_jobstore(engine: Engine) -> SQLAlchemyJobStore:
    """The store the weekly job lives in: APScheduler's own table in digest's database.

    One place, so `digest status` reads exactly the table the scheduler writes. Nothing is
    created until a scheduler starts the store; shutting the store down disposes `engine`.
    """
    return SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)


def make_scheduler(settings: Settings, engine: Engine | None = None) -> BackgroundScheduler:
    """A background scheduler whose jobs live in digest's database (shared file on SQLite).

    One worker: the weekly job and a `--now` run queue behind each other in a process instead
    of racing; across processes the issue's send lease decides.
    """
    store = make_jobstore(engine or db.make_engine(settings.database_url))
    scheduler = _Scheduler(
        jobstores={"default": store, "memory": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.misfire_grace_time,
        },
        timezone=settings.zone,
    )
    scheduler.add_listener(_on_missed, EVENT_JOB_MISSED)
    scheduler.add_listener(_on_error, EVENT_JOB_ERROR)
    return scheduler


def install_weekly_job(scheduler: BaseScheduler, settings: Settings, func: str = WEEKLY_JOB) -> Job:
    """Add (or replace) the one weekly job under its stable id.

    Replacing a stored job makes APScheduler compute a fresh next run time, which would silently
    drop a fire that came due while nothing ran; so an overdue stored run time is carried over,
    and the scheduler then judges it against the grace window (run once, or skip and log).
    """
    trigger = job_trigger(settings)
    overdue: dict[str, Any] = {}
    try:
        stored = scheduler.get_job(JOB_ID, jobstore="default")
    except Exception as exc:  # a stored job whose function no longer imports
        log_event(_log, "stored_job_unreadable", level=logging.WARNING, error=str(exc))
        stored = None
    due = stored.next_run_time if stored is not None else None
    if due is not None and due <= datetime.now(UTC):
        overdue["next_run_time"] = due
    return scheduler.add_job(
        func,
        trigger=trigger,
        id=JOB_ID,
        name="weekly issue",
        jobstore="default",
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=settings.misfire_grace_time,
        **overdue,
    )


def start_scheduler(scheduler: BaseScheduler, settings: Settings, func: str = WEEKLY_JOB) -> Job:
    """Start `scheduler` with the weekly job installed; nothing runs before the job is in place."""
    scheduler.start(paused=True)
    job = install_weekly_job(scheduler, settings, func)
    log_event(
        _log,
        "scheduler_started",
        schedule=settings.schedule,
        timezone=settings.timezone,
        next_run=job.next_run_time,
    )
    scheduler.resume()
    return job


def _on_missed(event: JobExecutionEvent) -> None:
    fire: datetime = event.scheduled_run_time
    log_event(
        _log,
        "job_missed",
        level=logging.WARNING,
        job=event.job_id,
        scheduled_for=fire,
        week=str(current_week(fire)),
        late_by=str(datetime.now(UTC) - fire),
    )


def _on_error(event: JobExecutionEvent) -> None:
    log_event(_log, "job_error", level=logging.ERROR, job=event.job_id, error=repr(event.exception))


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True, slots=True)
class WeeklyResult:
    """What one run of the weekly job did: the issue's state after it, and the send summary."""

    week: IsoWeek
    status: str  # the issue's status, or "skipped" when nothing was attempted
    summary: SendSummary | None = None


def weekly_job(week: str | None = None) -> None:
    """The scheduled job: build and send the issue of the week its fire time falls in.

    Module level and stored by name, as persistent job stores require. It never raises: a
    failure is logged as one event and the issue's recorded state says where it stopped.
    """
    try:
        settings = get_settings()
        if week is None and settings.local_time_delivery:
            local_time_tick(settings, stop=_shutdown)
            return
        now = db.utcnow()
        target = parse_week(week) if week else scheduled_week(settings, now)
        run_weekly(settings, target, now=now, stop=_shutdown)
    except Exception as exc:
        log_event(_log, "job_failed", level=logging.ERROR, week=week, error=str(exc), exc_info=True)


def run_weekly(
    settings: Settings,
    week: IsoWeek,
    *,
    now: datetime,
    stop: threading.Event | None = None,
) -> WeeklyResult:
    """Build `week`'s issue if needed and send it; safe to call from several processes at once.

    A sent issue is left alone; a failed one too (an operator cancelled it or it broke: that
    decision is theirs, `digest issue resume`); a paused one resumes where it stopped.
    """
    if stop is not None and stop.is_set():
        log_event(_log, "job_skipped", week=str(week), reason="shutting down")
        return WeeklyResult(week, "skipped")
    log_event(_log, "job_fired", week=str(week))
    engine = db.make_engine(settings.database_url)
    try:
        issue = get_issue(engine, week)
        if issue is not None and issue.status in ("sent", "failed"):
            return _nothing_to_do(issue)
        if issue is None or issue.status in ("planned", "built"):
            issue = _build(engine, settings, week, now)
            if issue.status in ("sent", "failed"):  # another process finished it meanwhile
                return _nothing_to_do(issue)
        return _send(engine, settings, week, stop)
    finally:
        engine.dispose()


def _nothing_to_do(issue: IssueRecord) -> WeeklyResult:
    log_event(
        _log,
        "job_nothing_to_do",
        week=str(issue.week),
        status=issue.status,
        reason=issue.status_reason,
    )
    return WeeklyResult(issue.week, issue.status)


def send_week(
    settings: Settings, week: IsoWeek, *, stop: threading.Event | None = None
) -> WeeklyResult:
    """Send (or resume sending) an issue that is already built: `digest issue resume`."""
    engine = db.make_engine(settings.database_url)
    try:
        return _send(engine, settings, week, stop)  # SendError names a missing or unbuilt issue
    finally:
        engine.dispose()


def _build(engine: Engine, settings: Settings, week: IsoWeek, now: datetime) -> IssueRecord:
    from digest.build import build_issue
    from digest.glossary import load_glossary

    glossary = load_glossary(settings.terms_dir)
    try:
        issue = build_issue(engine, settings, glossary, week, now=now)
    except (IntegrityError, InvalidTransition):
        # Another process built (or started sending) this week's issue a moment ago: use theirs.
        stored = get_issue(engine, week)
        if stored is None:
            raise
        issue = stored
    log_event(
        _log,
        # build_issue stamps built_at with our `now` only when it (re)built the issue.
        "issue_built" if issue.built_at == now else "issue_reused",
        week=str(week),
        status=issue.status,
        featured=issue.featured_slug,
        pick=issue.pick_source,
    )
    return issue


def _send(
    engine: Engine,
    settings: Settings,
    week: IsoWeek,
    stop: threading.Event | None,
    *,
    now: datetime | None = None,
    zones: frozenset[str | None] | None = None,
) -> WeeklyResult:
    from digest.delivery import make_transport
    from digest.delivery.runner import send_issue
    from digest.preflight import send_gate

    summary = send_issue(
        engine,
        settings,
        make_transport(settings),
        week,
        now=db.utcnow if now is None else now,
        preflight=send_gate(engine, settings),
        stop=stop,
        zones=zones,
    )
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


# --------------------------------------------------------------------------- local-time delivery

# Every zone's offset from UTC is a whole number of quarter hours (India +5:30, Nepal +5:45), so a
# tick every 15 minutes on the schedule's own minute lands exactly on each zone's send time.
TICK_MINUTES = 15


@dataclass(frozen=True, slots=True)
class ZoneSlot:
    """When the readers with one stored time zone get a week's issue (local-time delivery)."""

    zone: str | None  # subscribers.timezone as stored; None: not set, DIGEST_TIMEZONE applies
    tz_name: str  # the IANA zone the time is read in (DIGEST_TIMEZONE for unknown names)
    send_at: datetime  # aware, in that zone


@dataclass(frozen=True, slots=True)
class LocalSend:
    """One week's local-time send seen at one moment: its zones, earliest first, and the due ones."""

    week: IsoWeek
    slots: tuple[ZoneSlot, ...]
    due: frozenset[str | None]  # stored zone values whose send time has come

    @property
    def final(self) -> bool:
        """Every zone's time has come: this send may finish the issue."""
        return len(self.due) == len(self.slots)


def job_trigger(settings: Settings) -> CronTrigger:
    """The stored job's trigger: the schedule, or with local-time delivery a 15-minute tick.

    The tick runs on the schedule's minute modulo 15 (09:10 → :10, :25, :40, :55 UTC), so no
    zone waits for its time to be noticed.
    """
    trigger = parse_schedule(settings.schedule, settings.zone)
    if not settings.local_time_delivery:
        return trigger
    sample = trigger.get_next_fire_time(None, datetime(2000, 1, 3, tzinfo=UTC))
    offset = sample.minute % TICK_MINUTES if sample is not None else 0
    return CronTrigger(minute=f"{offset}-59/{TICK_MINUTES}", timezone=UTC)


def week_fire(settings: Settings, week: IsoWeek) -> datetime | None:
    """The schedule's first fire inside `week` (in DIGEST_TIMEZONE): when its issue is due.

    A schedule firing on several days still sends one issue a week, at the first of them; a
    monthly crontab has weeks without any (None).
    """
    trigger = parse_schedule(settings.schedule, settings.zone)
    fire = trigger.get_next_fire_time(None, week.starts_at(settings.zone))
    if fire is None or fire >= (week + 1).starts_at(settings.zone):
        return None
    return fire  # type: ignore[no-any-return]


def local_send_time(fire: datetime, zone: ZoneInfo) -> datetime:
    """`fire`'s wall-clock date and time read in `zone`: Monday 09:00 in Amsterdam becomes
    Monday 09:00 in Tokyo. A time that a DST change skips falls just after the gap, once."""
    return datetime.combine(fire.date(), fire.time(), tzinfo=zone)


def zone_slots(
    settings: Settings, fire: datetime, zones: Iterable[str | None]
) -> tuple[ZoneSlot, ...]:
    """Each stored zone's send time for the week of `fire`, earliest first."""
    slots = []
    for stored in set(zones):
        name = _zone_name(stored, settings)
        slots.append(ZoneSlot(stored, name, local_send_time(fire, ZoneInfo(name))))
    return tuple(sorted(slots, key=lambda s: (s.send_at, s.zone or "")))


def plan_local_sends(
    settings: Settings, zones: Iterable[str | None], now: datetime
) -> list[LocalSend]:
    """The weeks that have a zone due at `now`, with which zones: what one tick should do.

    Pure. A week's send times span at most 26 hours (UTC-12 to UTC+14) around its fire in
    DIGEST_TIMEZONE, so only last week, this week and next week can have a zone due now (the
    earliest zones start next week's issue while it is still Sunday in DIGEST_TIMEZONE). With
    no readers at all the configured zone stands in, so the issue is still sent and archived.
    """
    audience = set(zones) or {None}
    this_week = current_week(now, settings.zone)
    plans: list[LocalSend] = []
    for week in (this_week - 1, this_week, this_week + 1):
        fire = week_fire(settings, week)
        if fire is None:
            continue
        slots = zone_slots(settings, fire, audience)
        due = frozenset(s.zone for s in slots if s.send_at <= now)
        if due:
            plans.append(LocalSend(week, slots, due))
    return plans


def reader_zones(engine: Engine) -> list[str | None]:
    """The distinct time zones active readers have stored (None for readers without one)."""
    query = select(db.subscribers.c.timezone).where(db.subscribers.c.status == "active").distinct()
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def local_time_tick(
    settings: Settings, now: datetime | None = None, *, stop: threading.Event | None = None
) -> list[WeeklyResult]:
    """One tick of local-time delivery: send each open week's issue to the readers whose local
    send time has come, building it first at the earliest zone's time.

    The ledger keeps every reader to one delivery, whichever tick (or zone) reaches them first,
    so a reader who moves to another zone mid-week still gets the issue once. Only the tick at
    or after the last zone's time sends unrestricted and may mark the issue sent. A week none of
    whose zones came due within `misfire_grace_time` of the last one is not started late.
    `now` as in `send_issue`: None reads the clock, a value freezes it (tests).
    """
    moment = now or db.utcnow()
    if stop is not None and stop.is_set():
        log_event(_log, "job_skipped", reason="shutting down")
        return []
    grace = timedelta(seconds=settings.misfire_grace_time)
    engine = db.make_engine(settings.database_url)
    results: list[WeeklyResult] = []
    try:
        for plan in plan_local_sends(settings, reader_zones(engine), moment):
            issue = get_issue(engine, plan.week)
            if issue is not None and issue.status in ("sent", "failed"):
                continue  # quietly: every tick of the week sees last week's sent issue
            started = issue is not None and issue.status in ("sending", "paused")
            late_by = moment - (plan.slots[-1].send_at + grace)
            if not started and late_by > timedelta(0):
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
            log_event(
                _log,
                "job_fired",
                week=str(plan.week),
                zones_due=len(plan.due),
                zones=len(plan.slots),
            )
            if issue is None or issue.status in ("planned", "built"):
                issue = _build(engine, settings, plan.week, moment)
                if issue.status in ("sent", "failed"):
                    continue
            zones = None if plan.final else plan.due
            results.append(_send(engine, settings, plan.week, stop, now=now, zones=zones))
    finally:
        engine.dispose()
    return results


def _zone_name(stored: str | None, settings: Settings) -> str:
    """The IANA zone a stored value means; an empty or unknown one means DIGEST_TIMEZONE."""
    if stored:
        try:
            ZoneInfo(stored)
            return stored
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return settings.timezone


# --------------------------------------------------------------------------- digest run


def serve(settings: Settings, *, host: str, port: int, fire_now: bool = False) -> None:
    """`digest run`: the web app and the scheduler in one process until SIGTERM or SIGINT.

    On a signal uvicorn stops taking requests, the running send finishes its batch and records
    its state, and the scheduler shuts down waiting for it; the process then exits 0.
    """
    import uvicorn

    from digest.web import create_app

    parse_schedule(settings.schedule, settings.zone)  # a bad schedule fails before anything starts
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    interrupted = _interrupted_week(engine, settings, db.utcnow())
    resume_at = _resume_time(engine, interrupted, db.utcnow()) if interrupted else None
    engine.dispose()

    _shutdown.clear()

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            _shutdown.set()  # tell the send at once, not after uvicorn has drained
            super().handle_exit(sig, frame)

    server = _Server(
        uvicorn.Config(
            create_app(settings),
            host=host,
            port=port,
            log_config=None,  # keep digest's structured handler
            # Access lines carry confirm/unsubscribe tokens in their paths: only when debugging.
            access_log=settings.log_level.upper() == "DEBUG",
        )
    )

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        # Before uvicorn runs and after it returns (it re-raises the signal it caught).
        _shutdown.set()
        server.should_exit = True

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    scheduler = make_scheduler(settings)
    try:
        start_scheduler(scheduler, settings)
        if fire_now or interrupted is not None:
            # A dead sender's lease is taken over at once (digest.owner), so "now" resumes it;
            # one that must be waited out (alive, on another host, not checkable) is tried
            # again the moment its lease runs out rather than left for next week's fire.
            later = resume_at if not fire_now else None
            log_event(
                _log,
                "job_run_now",
                reason="--now" if fire_now else "resuming an interrupted send",
                week=str(interrupted) if interrupted else None,
                at=later.isoformat() if later else "now",
            )
            scheduler.add_job(
                WEEKLY_JOB,
                trigger="date",
                run_date=later,
                id=_NOW_JOB_ID,
                jobstore="memory",
                replace_existing=True,
                misfire_grace_time=None,
            )
        log_event(_log, "service_started", host=host, port=port)
        if not _shutdown.is_set():
            server.run()
    finally:
        _shutdown.set()
        if scheduler.running:
            scheduler.shutdown(wait=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log_event(_log, "service_stopped")


def _resume_time(engine: Engine, week: IsoWeek, now: datetime) -> datetime | None:
    """When a restarted `digest run` can resume `week`'s send: None for now (nobody holds it,
    its lease lapsed, or its holder is provably gone), else just after the holder's lease ends."""
    holder = lease_holder(engine, week)
    if holder is None or holder.until is None or holder.lapsed(now):
        return None
    if owner_liveness(holder.owner).gone:
        return None
    return holder.until + timedelta(seconds=1)


def _interrupted_week(engine: Engine, settings: Settings, now: datetime) -> IsoWeek | None:
    """The due week, if its send was cut short (killed, or stopped by a signal) and is resumable.

    Only within the grace window of its fire time: an issue is not sent days late by a restart.
    """
    trigger = parse_schedule(settings.schedule, settings.zone)
    fired = due_fire_time(trigger, now, timedelta(seconds=settings.misfire_grace_time))
    if fired is None:
        return None
    week = current_week(fired, settings.zone)
    issue = get_issue(engine, week)
    if issue is not None and issue.status in ("sending", "paused"):
        return week
    return None
