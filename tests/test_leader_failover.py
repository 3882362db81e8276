"""Replicas of `digest run` on one PostgreSQL database: only the leader runs the scheduler, and
when it dies (or loses its session, or stops) another takes the lead within the retry interval
and fires the job that came due, once."""

from __future__ import annotations

import signal
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from digest.cli import app
from digest.config import get_settings
from digest.model.weeks import IsoWeek
from digest.scheduler import JOB_ID, make_scheduler, start_scheduler
from digest.store.issues import get_issue
from digest.store.jobs import JOBS_TABLE
from digest.store.leadership import who_leads
from tests.test_run import (
    Service,
    _recent_schedule,
    add_subscribers,
    ledger,
    mail_per_address,
    outbox,  # noqa: F401  (a fixture)
    services,  # noqa: F401  (a fixture)
    wait_until,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

RETRY = 0.3  # DIGEST_LEADER_RETRY_INTERVAL for these replicas


@pytest.fixture
def due_an_hour_ago(settings_env, monkeypatch) -> datetime:
    """A weekly schedule whose latest fire was an hour ago, well within the grace window."""
    monkeypatch.setenv("DIGEST_SCHEDULE", _recent_schedule(1))
    monkeypatch.setenv("DIGEST_MISFIRE_GRACE_TIME", str(3 * 3600))
    monkeypatch.setenv("DIGEST_LEADER_RETRY_INTERVAL", str(RETRY))
    get_settings.cache_clear()
    return (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)


def _make_stored_job_due(fired_at: datetime) -> None:
    """What a fire time passing while no scheduler runs leaves behind: the stored weekly job
    overdue (as test_run's restart test does)."""
    settings = get_settings()
    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings)
    scheduler.pause()
    scheduler.modify_job(JOB_ID, next_run_time=fired_at)
    scheduler.shutdown()


def _replicas(tmp_path, services, count: int = 2) -> list[Service]:  # noqa: F811
    started = [Service(tmp_path) for _ in range(count)]
    services.extend(started)
    return started


def _the_leader(pair: list[Service]) -> tuple[Service, Service]:
    def elected() -> Service | None:
        return next((s for s in pair if "event=leader_elected" in s.log), None)

    leader = wait_until(elected, timeout=30)
    assert leader is not None, [s.log for s in pair]
    (follower,) = [s for s in pair if s is not leader]
    assert wait_until(lambda: "event=leader_waiting" in follower.log, timeout=30), follower.log
    return leader, follower


def _runs_of_the_job(service: Service) -> int:
    return service.log.count("event=send_finished")


def test_of_two_live_replicas_only_the_leader_runs_the_due_job(
    engine,
    due_an_hour_ago,
    outbox,  # noqa: F811
    services,  # noqa: F811
    tmp_path,
):
    readers = add_subscribers(engine, 5)
    _make_stored_job_due(due_an_hour_ago)
    week = IsoWeek.of(due_an_hour_ago)

    leader, follower = _the_leader(_replicas(tmp_path, services))
    assert wait_until(lambda: _runs_of_the_job(leader) == 1, timeout=30), leader.log
    assert get_issue(engine, week).status == "sent"
    assert ledger(engine, week) == {"sent": 5}
    assert mail_per_address(outbox) == dict.fromkeys(readers, 1)
    # The follower serves the web all along, but never started a scheduler of its own.
    assert wait_until(follower.healthz, timeout=30) is not None
    assert "event=scheduler_started" not in follower.log
    assert _runs_of_the_job(follower) == 0
    assert who_leads(engine) == f"digest-leader {socket.gethostname()} pid {leader.proc.pid}"
    status = CliRunner().invoke(app, ["status"])
    assert f"led by {socket.gethostname()} pid {leader.proc.pid}" in status.output, status.output
    for service in (leader, follower):
        assert service.stop() == 0, service.log
        assert "Traceback" not in service.log


def test_when_the_leader_dies_before_the_fire_the_other_takes_over_and_sends_once(
    engine,
    due_an_hour_ago,
    outbox,  # noqa: F811
    services,  # noqa: F811
    tmp_path,
):
    readers = add_subscribers(engine, 5)
    leader, follower = _the_leader(_replicas(tmp_path, services))
    assert wait_until(lambda: "event=scheduler_started" in leader.log, timeout=30), leader.log

    # The leader stops answering, the fire time passes (the stored job comes due), then the
    # leader is killed: its session, and so its lock, go with it.
    leader.proc.send_signal(signal.SIGSTOP)
    _make_stored_job_due(due_an_hour_ago)
    killed_at = time.monotonic()
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait(10)

    assert wait_until(lambda: "event=leader_elected" in follower.log, timeout=10), follower.log
    assert time.monotonic() - killed_at < 5 * RETRY + 2
    week = IsoWeek.of(due_an_hour_ago)
    assert wait_until(lambda: _runs_of_the_job(follower) == 1, timeout=30), follower.log
    assert get_issue(engine, week).status == "sent"
    assert ledger(engine, week) == {"sent": 5}
    assert mail_per_address(outbox) == dict.fromkeys(readers, 1)
    assert _runs_of_the_job(leader) == 0
    assert "event=job_missed" not in follower.log  # run, not skipped: within the grace
    with engine.connect() as conn:
        stored = conn.execute(text(f"SELECT id FROM {JOBS_TABLE}")).scalars().all()
    assert stored == [JOB_ID]
    assert follower.stop() == 0, follower.log
    assert "Traceback" not in follower.log


def test_a_leader_that_loses_its_session_steps_down_and_sigterm_hands_the_lead_back(
    engine,
    due_an_hour_ago,
    services,  # noqa: F811
    tmp_path,
):
    first, second = _the_leader(_replicas(tmp_path, services))
    name = who_leads(engine)
    assert name is not None and name.endswith(f"pid {first.proc.pid}")

    with engine.connect() as conn:  # what an operator would do to move the lead
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :n"
            ),
            {"n": name},
        )
    assert wait_until(lambda: "event=leader_lost" in first.log, timeout=10), first.log
    assert wait_until(lambda: "event=leader_elected" in second.log, timeout=10), second.log
    assert wait_until(lambda: (who_leads(engine) or "").endswith(f"pid {second.proc.pid}"), 10)

    # SIGTERM: the new leader releases the lock on its way out; the first takes it back.
    stopped_at = time.monotonic()
    assert second.stop() == 0, second.log
    assert wait_until(lambda: first.log.count("event=leader_elected") == 2, timeout=10), first.log
    assert time.monotonic() - stopped_at < 10
    assert (who_leads(engine) or "").endswith(f"pid {first.proc.pid}")
    assert first.stop() == 0, first.log
    for service in (first, second):
        assert "Traceback" not in service.log
    assert who_leads(engine) is None
