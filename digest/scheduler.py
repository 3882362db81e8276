"""The APScheduler wiring: a background scheduler whose weekly job lives in digest's database,
the job's entry point, and the listeners that log missed and failed runs. With approval
required, a second stored job (APPROVAL_JOB, every 15 minutes) builds issues ahead for the
editors and sends one approved after its fire (campaign.lifecycle.approval_tick).

The job is stored by its textual reference (WEEKLY_JOB) so a restart finds it again; a fire
missed while no process ran is sent once if it is still within `misfire_grace_time`, and
skipped (and logged) otherwise. Of several `digest run` replicas only the leader runs a
scheduler (digest.service, digest.store.leadership); one that takes over the lead starts it
then, and finds the missed fire in the stored job the same way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine

from digest.campaign.lifecycle import approval_tick, local_time_tick, run_weekly
from digest.config import Settings, get_settings
from digest.core.cadence import TICK_MINUTES, job_trigger, scheduled_week
from digest.logs import get_logger, log_event
from digest.model.weeks import current_week, parse_week
from digest.store import db
from digest.store.jobs import create_jobs_table, make_jobstore, next_run_in

__all__ = [
    "APPROVAL_JOB",
    "APPROVAL_JOB_ID",
    "JOB_ID",
    "WEEKLY_JOB",
    "approval_job",
    "install_approval_job",
    "install_weekly_job",
    "make_scheduler",
    "run_soon",
    "start_scheduler",
    "stopping",
    "weekly_job",
]

JOB_ID = "digest-weekly-issue"
# Stored in the job table. Before the #14 redesign it was "digest.schedule:weekly_job"; a job
# stored under that name no longer unpickles, and install_weekly_job replaces it (see there).
WEEKLY_JOB = "digest.scheduler:weekly_job"
_NOW_JOB_ID = "digest-weekly-issue-now"
APPROVAL_JOB_ID = "digest-approval"
APPROVAL_JOB = "digest.scheduler:approval_job"

_log = get_logger("digest.schedule")  # the name operators' log filters know (docs/operations.md)

# Set on SIGTERM/SIGINT by digest.service: the running send finishes its batch, records its
# state and returns; queued jobs do not start. A process-wide flag because the job is stored by
# name and cannot be handed an Event.
stopping = threading.Event()


class _Scheduler(BackgroundScheduler):  # type: ignore[misc]  # APScheduler 3 ships no types
    def __init__(self, store: SQLAlchemyJobStore, **options: Any) -> None:
        super().__init__(jobstores={"default": store, "memory": MemoryJobStore()}, **options)
        self.store = store  # the default store, for reads that must not unpickle a job

    def _process_jobs(self) -> float | None:
        # APScheduler 3's loop looks for due jobs once more after shutdown(); a job due then is
        # handed to the stopped executor, fails, and its fire time is advanced: a lost issue.
        if self.state == STATE_STOPPED:
            return None
        return super()._process_jobs()  # type: ignore[no-any-return]


def make_scheduler(settings: Settings, engine: Engine | None = None) -> BackgroundScheduler:
    """A background scheduler whose jobs live in digest's database (shared file on SQLite).

    One worker: the weekly job and a `--now` run queue behind each other in a process instead
    of racing; across processes the issue's send lease decides.
    """
    scheduler = _Scheduler(
        make_jobstore(engine or db.make_engine(settings.database_url)),
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
    A stored job that no longer unpickles (its function was renamed, as `digest.schedule` was)
    is replaced too; its run time is read from the table's own column, so its fire is kept.
    """
    trigger = job_trigger(settings)
    overdue: dict[str, Any] = {}
    try:
        stored = scheduler.get_job(JOB_ID, jobstore="default")
        due = stored.next_run_time if stored is not None else None
    except Exception as exc:  # a stored job whose function no longer imports
        log_event(_log, "stored_job_unreadable", level=logging.WARNING, error=str(exc))
        due = next_run_in(scheduler.store) if isinstance(scheduler, _Scheduler) else None
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
    if isinstance(scheduler, _Scheduler):
        create_jobs_table(scheduler.store)
    scheduler.start(paused=True)
    job = install_weekly_job(scheduler, settings, func)
    install_approval_job(scheduler, settings)
    log_event(
        _log,
        "scheduler_started",
        schedule=settings.schedule,
        timezone=settings.timezone,
        next_run=job.next_run_time,
        require_approval=settings.require_approval,
    )
    scheduler.resume()
    return job


def install_approval_job(
    scheduler: BaseScheduler, settings: Settings, func: str = APPROVAL_JOB
) -> Job | None:
    """Store the approval job when approval is required, and remove a stored one when not.

    A tick rather than a date trigger: the send time depends on the schedule, the readers'
    zones and the lead setting, all of which may change; each tick works it out again, and
    its work is idempotent (the editors are told once per issue, a built issue is kept).
    """
    if not settings.require_approval:
        with contextlib.suppress(JobLookupError):  # none stored: nothing to remove
            scheduler.remove_job(APPROVAL_JOB_ID, jobstore="default")
        return None
    return scheduler.add_job(
        func,
        trigger=CronTrigger(minute=f"*/{TICK_MINUTES}", timezone=UTC),
        id=APPROVAL_JOB_ID,
        name="approval: build ahead, notify editors, send once approved",
        jobstore="default",
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=settings.misfire_grace_time,
    )


def run_soon(scheduler: BaseScheduler, at: datetime | None = None) -> Job:
    """Run the weekly job once more, at `at` (None: now), besides its schedule.

    Kept in memory, not the database: it is this process's decision (`--now`, or resuming an
    interrupted send), and the stored table then holds only the weekly job.
    """
    return scheduler.add_job(
        WEEKLY_JOB,
        trigger="date",
        run_date=at,
        id=_NOW_JOB_ID,
        jobstore="memory",
        replace_existing=True,
        misfire_grace_time=None,
    )


_tick_engines: dict[str, Engine] = {}
_tick_engines_lock = threading.Lock()


def _tick_engine(url: str) -> Engine:
    """The one engine the local-time ticks of this process share for `url`. A tick comes every
    few minutes for the life of the service; an engine each time was a new pool and new
    connections each time. Stored jobs are called by name, so it is kept here, not passed."""
    with _tick_engines_lock:
        engine = _tick_engines.get(url)
        if engine is None:
            engine = _tick_engines[url] = db.make_engine(url)
        return engine


def weekly_job(week: str | None = None) -> None:
    """The scheduled job: build and send the issue of the week its fire time falls in.

    Module level and stored by name, as persistent job stores require. It never raises: a
    failure is logged as one event and the issue's recorded state says where it stopped.
    """
    try:
        settings = get_settings()
        if week is None and settings.local_time_delivery:
            engine = _tick_engine(settings.database_url)
            local_time_tick(settings, db.utcnow, stop=stopping, engine=engine)
            return
        now = db.utcnow()
        target = parse_week(week) if week else scheduled_week(settings, now)
        run_weekly(settings, target, now=now, stop=stopping)
    except Exception as exc:
        log_event(_log, "job_failed", level=logging.ERROR, week=week, error=str(exc), exc_info=True)


def approval_job() -> None:
    """The stored approval job (see `install_approval_job`); like `weekly_job`, it never
    raises: a failure is logged as one event."""
    try:
        settings = get_settings()
        engine = _tick_engine(settings.database_url)
        approval_tick(settings, db.utcnow(), stop=stopping, engine=engine)
    except Exception as exc:
        log_event(
            _log,
            "job_failed",
            level=logging.ERROR,
            job=APPROVAL_JOB_ID,
            error=str(exc),
            exc_info=True,
        )


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
