"""The schedule: the setting becomes the right cron trigger in the right zone, the job is stored
once, and a fire missed while nothing ran is sent once within the grace window, else skipped.
"""

from __future__ import annotations

import logging
import pickle
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import inspect, select, text

from digest.config import Settings, get_settings
from digest.core.cadence import due_fire_time, scheduled_week
from digest.model.schedule import ScheduleError, parse_schedule
from digest.model.weeks import IsoWeek
from digest.scheduler import JOB_ID, WEEKLY_JOB, make_scheduler, start_scheduler
from digest.store import db
from digest.store.jobs import JOBS_TABLE, make_jobstore

AMS = ZoneInfo("Europe/Amsterdam")
RECORDER = "tests.test_schedule:record_fire"

# What `record_fire` saw, one entry per run: the week the job would send.
FIRED: list[IsoWeek] = []
_fired_event = threading.Event()


def record_fire() -> None:
    """Stands in for the weekly job's side effects: records the week it would build and send."""
    FIRED.append(scheduled_week(get_settings(), db.utcnow()))
    _fired_event.set()


def fire_times(trigger, start: datetime, count: int) -> list[datetime]:
    times, fire = [], None
    for _ in range(count):
        fire = trigger.get_next_fire_time(fire, fire or start)
        times.append(fire)
    return times


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --------------------------------------------------------------------------- trigger


def test_monday_nine_local_is_eight_utc_in_winter_and_seven_in_summer():
    trigger = parse_schedule("mon 09:00", "Europe/Amsterdam")
    # Summer time starts on the last Sunday of March (2026-03-29).
    spring = fire_times(trigger, utc(2026, 3, 16), 3)
    assert [f.astimezone(UTC) for f in spring] == [
        utc(2026, 3, 16, 8),
        utc(2026, 3, 23, 8),
        utc(2026, 3, 30, 7),
    ]
    # and ends on the last Sunday of October (2026-10-25).
    autumn = fire_times(trigger, utc(2026, 10, 12), 3)
    assert [f.astimezone(UTC) for f in autumn] == [
        utc(2026, 10, 12, 7),
        utc(2026, 10, 19, 7),
        utc(2026, 10, 26, 8),
    ]
    assert all(f.astimezone(AMS).hour == 9 and f.weekday() == 0 for f in spring + autumn)


def test_a_fire_time_inside_the_skipped_spring_hour_still_fires_once():
    # 02:30 does not exist on 2026-03-29 in Amsterdam; the week must not lose its issue.
    trigger = parse_schedule("sun 02:30", "Europe/Amsterdam")
    times = fire_times(trigger, utc(2026, 3, 21), 3)
    assert [t.date().isoformat() for t in times] == ["2026-03-22", "2026-03-29", "2026-04-05"]


def test_schedule_accepts_day_lists_ranges_and_full_names():
    start = utc(2026, 4, 6)  # a Monday
    assert [t.weekday() for t in fire_times(parse_schedule("mon,thu 07:30", "UTC"), start, 4)] == [
        0,
        3,
        0,
        3,
    ]
    weekdays = fire_times(parse_schedule("mon-fri 7:05", "UTC"), start, 6)
    assert [t.weekday() for t in weekdays] == [0, 1, 2, 3, 4, 0]
    assert weekdays[0] == utc(2026, 4, 6, 7, 5)
    assert str(parse_schedule("Tuesday 10:00", "UTC")) == str(parse_schedule("tue 10:00", "UTC"))


@pytest.mark.parametrize(
    ("crontab", "weekdays"),
    [
        ("0 9 * * 1", [0]),  # cron's 1 is Monday
        ("0 9 * * 0", [6]),  # cron's 0 is Sunday (APScheduler 3's own numbers say Monday)
        ("0 9 * * 7", [6]),  # so is 7
        ("0 9 * * 1-5", [0, 1, 2, 3, 4]),
        ("0 9 * * 5-7", [4, 5, 6]),
        ("0 9 * * */2", [6, 1, 3, 5]),  # Sun, Tue, Thu, Sat: weekday() numbers them 6, 1, 3, 5
        ("0 9 * * sun,wed", [2, 6]),
    ],
)
def test_crontab_weekday_numbers_mean_what_they_mean_to_cron(crontab, weekdays):
    trigger = parse_schedule(crontab, "UTC")
    seen = {t.weekday() for t in fire_times(trigger, utc(2026, 4, 6), 14)}
    assert seen == set(weekdays)
    assert all(t.hour == 9 and t.minute == 0 for t in fire_times(trigger, utc(2026, 4, 6), 3))


def test_crontab_without_weekday_runs_on_its_days_of_month():
    trigger = parse_schedule("30 6 1 * *", "UTC")
    assert fire_times(trigger, utc(2026, 4, 6), 2) == [
        utc(2026, 5, 1, 6, 30),
        utc(2026, 6, 1, 6, 30),
    ]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("", "the schedule is empty"),
        ("mon", "cannot read schedule 'mon'; use '<day_of_week> HH:MM'"),
        ("monday9:00", "cannot read schedule"),
        ("mnday 09:00", "'mnday' is not a day; use mon, tue"),
        ("mon 24:00", "24:00 is not a time"),
        ("mon 09:60", "09:60 is not a time"),
        ("mon 9", "cannot read schedule"),
        ("0 9 * *", "cannot read schedule"),
        ("0 25 * * *", "crontab .*'25'.*higher than the maximum value \\(23\\)"),
        ("0 9 * * 8", "'8' is not a day of week \\(0-7 or sun-sat\\)"),
        ("0 9 * * 5-1", "day-of-week range '5-1' runs backwards"),
        ("0 9 1 * mon", "restricts both day of month and day of week"),
    ],
)
def test_bad_schedules_are_refused_saying_what_is_accepted(schedule, message):
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(schedule, "UTC")


def test_schedule_errors_are_value_errors_so_settings_callers_can_catch_one_type():
    assert issubclass(ScheduleError, ValueError)


# --------------------------------------------------------------------------- which week


def test_due_fire_time_is_the_latest_fire_inside_the_window():
    trigger = parse_schedule("mon 09:00", "Europe/Amsterdam")
    monday_nine = datetime(2026, 3, 30, 9, tzinfo=AMS)
    assert due_fire_time(trigger, monday_nine, timedelta(hours=6)) == monday_nine
    later = monday_nine + timedelta(hours=5, minutes=59)
    assert due_fire_time(trigger, later, timedelta(hours=6)) == monday_nine
    assert due_fire_time(trigger, monday_nine + timedelta(hours=8), timedelta(hours=6)) is None
    assert due_fire_time(trigger, monday_nine - timedelta(seconds=1), timedelta(hours=6)) is None


def test_a_late_run_sends_the_week_of_its_fire_time_not_of_now():
    settings = Settings(
        schedule="sun 23:00", timezone="Europe/Amsterdam", misfire_grace_time=6 * 3600
    )
    # Fired Sunday 2026-04-05 23:00 (week 14); the machine came back at 02:00 on Monday (week 15).
    late = datetime(2026, 4, 6, 2, 0, tzinfo=AMS)
    assert scheduled_week(settings, late) == IsoWeek(2026, 14)
    # Outside the grace window it is a run by hand: this week.
    assert scheduled_week(settings, late + timedelta(hours=5)) == IsoWeek(2026, 15)


def test_the_week_is_the_one_in_the_configured_zone():
    # Monday 09:00 in Tokyo is still Sunday 00:00 UTC: the issue belongs to Tokyo's Monday week.
    settings = Settings(schedule="mon 09:00", timezone="Asia/Tokyo")
    assert scheduled_week(settings, utc(2026, 4, 6, 0, 5)) == IsoWeek(2026, 15)
    assert IsoWeek.of(utc(2026, 4, 5, 0, 5)) == IsoWeek(2026, 14)


# --------------------------------------------------------------------------- the job store


@pytest.fixture
def scheduler_env(settings_env, monkeypatch):
    """Settings from the environment, as the job sees them, with `set(**values)` to change them."""
    FIRED.clear()
    _fired_event.clear()

    def set_env(**values: object) -> Settings:
        for key, value in values.items():
            monkeypatch.setenv(f"DIGEST_{key.upper()}", str(value))
        get_settings.cache_clear()
        return get_settings()

    return set_env


def _cron_at(moment: datetime) -> str:
    """A weekly crontab that fired at `moment` (to the minute, UTC)."""
    cron_weekday = (moment.weekday() + 1) % 7
    return f"{moment.minute} {moment.hour} * * {cron_weekday}"


def _stored(engine) -> list[tuple[str, datetime | None]]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT id, next_run_time FROM {JOBS_TABLE}")).all()
    return [(i, datetime.fromtimestamp(t, UTC) if t is not None else None) for i, t in rows]


def _leave_job_due_at(settings: Settings, due: datetime, func: str = RECORDER) -> None:
    """A scheduler ran once, stored the job, then the machine was off while `due` passed."""
    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings, func)
    scheduler.pause()
    scheduler.modify_job(JOB_ID, next_run_time=due)
    scheduler.shutdown()


def _wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_job_is_stored_in_the_digest_database_once_however_often_it_starts(engine, scheduler_env):
    settings = scheduler_env(schedule="mon 09:00", timezone="Europe/Amsterdam")
    for _ in range(3):
        scheduler = make_scheduler(settings)
        job = start_scheduler(scheduler, settings)
        scheduler.shutdown()
    assert JOBS_TABLE in inspect(engine).get_table_names()
    stored = _stored(engine)
    assert [job_id for job_id, _ in stored] == [JOB_ID]
    assert job.func_ref == WEEKLY_JOB
    expected = parse_schedule("mon 09:00", "Europe/Amsterdam").get_next_fire_time(
        None, datetime.now(UTC)
    )
    assert stored[0][1] == expected
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 6 * 3600)


def test_changing_the_schedule_replaces_the_stored_job(engine, scheduler_env):
    settings = scheduler_env(schedule="mon 09:00")
    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings)
    scheduler.shutdown()
    settings = scheduler_env(schedule="fri 16:30")
    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings)
    scheduler.shutdown()
    [(_, next_run)] = _stored(engine)
    assert (next_run.weekday(), next_run.hour, next_run.minute) == (4, 16, 30)


def test_a_fire_missed_while_down_runs_once_on_restart_within_the_grace_window(
    engine, scheduler_env
):
    fired_at = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
    settings = scheduler_env(schedule=_cron_at(fired_at), misfire_grace_time=3 * 3600)
    _leave_job_due_at(settings, fired_at)
    # Shutting a scheduler down while its job is due neither runs it nor drops the fire time.
    assert FIRED == []
    assert _stored(engine) == [(JOB_ID, fired_at)]

    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings, RECORDER)
    try:
        assert _fired_event.wait(15), "the overdue job did not run"
    finally:
        # Not a pause to let a second run show: shutdown() waits for every run already handed
        # to the worker, and any later run needs a due fire time, which the store rules out.
        scheduler.shutdown()
    assert [IsoWeek.of(fired_at)] == FIRED
    [(_, next_run)] = _stored(engine)
    assert next_run == fired_at + timedelta(days=7)


def test_a_fire_missed_beyond_the_grace_window_is_skipped_and_logged(engine, scheduler_env, caplog):
    caplog.set_level(logging.INFO)
    fired_at = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
    settings = scheduler_env(schedule=_cron_at(fired_at), misfire_grace_time=3600)
    _leave_job_due_at(settings, fired_at)

    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings, RECORDER)
    try:
        missed = lambda: [r for r in caplog.records if r.getMessage() == "job_missed"]  # noqa: E731
        assert _wait_for(missed), "no job_missed event was logged"
    finally:
        scheduler.shutdown()
    assert FIRED == []
    [record] = missed()
    assert record.levelno == logging.WARNING
    assert record.digest_fields["scheduled_for"] == fired_at
    assert record.digest_fields["week"] == str(IsoWeek.of(fired_at))
    [(_, next_run)] = _stored(engine)
    assert next_run == fired_at + timedelta(days=7)


def test_a_machine_down_for_weeks_sends_once_not_once_per_missed_week(engine, scheduler_env):
    fired_at = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    settings = scheduler_env(schedule=_cron_at(fired_at), misfire_grace_time=3 * 3600)
    _leave_job_due_at(settings, fired_at - timedelta(days=14))

    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings, RECORDER)
    try:
        assert _fired_event.wait(15)
    finally:
        scheduler.shutdown()  # waits for every run handed to the worker (one per missed week?)
    # Coalesced into the latest fire, which is within the window: one run, for that week.
    assert [IsoWeek.of(fired_at)] == FIRED
    # and nothing else is due: the next run is next week's, not a missed week's.
    assert _stored(engine) == [(JOB_ID, fired_at + timedelta(days=7))]


def test_a_restart_before_the_fire_time_does_not_run_the_job(engine, scheduler_env):
    settings = scheduler_env(schedule="mon 09:00")
    coming = parse_schedule("mon 09:00", settings.timezone).get_next_fire_time(
        None, datetime.now(UTC)
    )
    for _ in range(2):
        scheduler = make_scheduler(settings)
        job = start_scheduler(scheduler, settings, RECORDER)
        # Not a pause to see whether it runs: the scheduler hands a job to its worker only once
        # its next run time has come, and in memory as in the store that is the coming Monday.
        assert job.next_run_time == coming > datetime.now(UTC)
        assert _stored(engine) == [(JOB_ID, coming)]
        scheduler.shutdown()  # and a run handed to the worker anyway would finish before this
    assert FIRED == []
    with engine.connect() as conn:
        assert conn.execute(select(db.issues.c.id)).first() is None


# --------------------------------------------------------------------------- an upgraded database

OLD_WEEKLY_JOB = "digest.schedule:weekly_job"  # the reference digest stored before the #14 split


@pytest.fixture
def old_module_gone(monkeypatch):
    """`digest.schedule` cannot be imported, as in an installed digest after the split (a
    checkout's editable install could otherwise still find the file in another tree)."""
    monkeypatch.setitem(sys.modules, "digest.schedule", None)


def _store_under(engine, func_ref: str) -> None:
    """Rewrite the stored job as if it had been stored under `func_ref`."""
    with engine.begin() as conn:
        state = pickle.loads(conn.execute(text(f"SELECT job_state FROM {JOBS_TABLE}")).scalar_one())
        state["func"] = func_ref
        conn.execute(
            text(f"UPDATE {JOBS_TABLE} SET job_state = :state"), {"state": pickle.dumps(state)}
        )


def _stored_func(engine) -> str:
    with engine.connect() as conn:
        state = pickle.loads(conn.execute(text(f"SELECT job_state FROM {JOBS_TABLE}")).scalar_one())
    return state["func"]


def test_a_job_stored_under_the_old_module_name_is_replaced_on_start(
    engine, scheduler_env, old_module_gone, caplog
):
    caplog.set_level(logging.INFO)
    settings = scheduler_env(schedule="mon 09:00")
    _leave_job_due_at(settings, datetime.now(UTC) + timedelta(days=2), func=WEEKLY_JOB)
    _store_under(engine, OLD_WEEKLY_JOB)
    with pytest.raises(LookupError):  # it no longer unpickles: digest.schedule is gone
        make_jobstore(engine).lookup_job(JOB_ID)

    scheduler = make_scheduler(settings)
    job = start_scheduler(scheduler, settings)
    scheduler.shutdown()
    assert job.func_ref == WEEKLY_JOB == "digest.scheduler:weekly_job"
    assert _stored_func(engine) == WEEKLY_JOB
    assert make_jobstore(engine).lookup_job(JOB_ID).func_ref == WEEKLY_JOB
    unreadable = [r for r in caplog.records if r.getMessage() == "stored_job_unreadable"]
    assert len(unreadable) == 1 and OLD_WEEKLY_JOB.partition(":")[0] in str(
        unreadable[0].digest_fields["error"]
    )
    # Not overdue: the fresh next run time is the schedule's, as for any replaced job.
    coming = parse_schedule("mon 09:00", settings.timezone).get_next_fire_time(
        None, datetime.now(UTC)
    )
    assert _stored(engine) == [(JOB_ID, coming)]


def test_an_overdue_fire_stored_under_the_old_module_name_still_runs_once(
    engine, scheduler_env, old_module_gone, caplog
):
    caplog.set_level(logging.INFO)
    # An upgrade while the machine was down across a fire: the fire is not lost with the name.
    fired_at = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
    settings = scheduler_env(schedule=_cron_at(fired_at), misfire_grace_time=3 * 3600)
    _leave_job_due_at(settings, fired_at)
    _store_under(engine, OLD_WEEKLY_JOB)

    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings, RECORDER)
    try:
        assert _fired_event.wait(15), "the overdue job did not run"
    finally:
        scheduler.shutdown()
    assert [IsoWeek.of(fired_at)] == FIRED
    assert _stored(engine) == [(JOB_ID, fired_at + timedelta(days=7))]
    assert _stored_func(engine) == RECORDER
    assert [r.getMessage() for r in caplog.records].count("stored_job_unreadable") == 1
