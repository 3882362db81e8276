"""`digest status` reads the scheduler's stored run time through APScheduler's own job store,
never starting it: before any scheduler ran it computes the time and creates nothing, and a job
whose pickled state this process could not load still shows when it fires.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, update

from digest.campaign.status import gather_status
from digest.config import Settings
from digest.core.cadence import next_fire_time
from digest.model.schedule import parse_schedule
from digest.scheduler import JOB_ID, make_scheduler, start_scheduler
from digest.store import db
from digest.store.jobs import JOBS_TABLE, make_jobstore


def _leave_job_due_at(settings: Settings, due: datetime) -> None:
    """A scheduler ran once, stored the weekly job, and stopped with it due at `due`."""
    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings)
    scheduler.pause()
    scheduler.modify_job(JOB_ID, next_run_time=due)
    scheduler.shutdown()


def test_before_any_scheduler_ran_status_computes_the_next_fire_and_creates_no_table(
    engine, settings
):
    now = db.utcnow()
    report = gather_status(engine, settings, now)
    assert not report.scheduled and not report.overdue
    trigger = parse_schedule(settings.schedule, settings.zone)
    assert report.next_fire == next_fire_time(trigger, now)
    assert not inspect(engine).has_table(JOBS_TABLE)


def test_status_shows_the_run_time_the_scheduler_stored_rather_than_the_computed_one(
    engine, settings
):
    # Off the schedule on purpose, so only the stored value can produce it.
    due = (db.utcnow() + timedelta(days=3)).replace(hour=12, minute=34, second=0, microsecond=0)
    _leave_job_due_at(settings, due)
    report = gather_status(engine, settings, db.utcnow())
    assert report.scheduled and not report.overdue
    assert abs(report.next_fire - due) < timedelta(milliseconds=1)  # a float timestamp
    assert report.next_fire.tzinfo == settings.zone


def test_status_agrees_with_the_job_store_the_scheduler_uses(engine, settings):
    scheduler = make_scheduler(settings)
    job = start_scheduler(scheduler, settings)
    scheduler.shutdown()
    assert make_jobstore(engine).get_next_run_time() == job.next_run_time.astimezone(UTC)
    assert gather_status(engine, settings, db.utcnow()).next_fire == job.next_run_time


def test_status_shows_the_stored_run_time_even_when_the_job_itself_cannot_be_loaded(
    engine, settings
):
    # A job pickled by another APScheduler or digest version: status never unpickles it.
    due = (db.utcnow() + timedelta(days=2)).replace(second=0, microsecond=0)
    _leave_job_due_at(settings, due)
    store = make_jobstore(engine)
    with engine.begin() as conn:
        conn.execute(update(store.jobs_t).values(job_state=b"not a pickle"))
    with pytest.raises(pickle.UnpicklingError):
        store.lookup_job(JOB_ID)
    report = gather_status(engine, settings, db.utcnow())
    assert report.scheduled
    assert abs(report.next_fire - due) < timedelta(milliseconds=1)
