"""Operations end to end: `digest run` serves and sends, stops cleanly on SIGTERM and never
re-sends on restart; two processes firing the weekly job at once send each subscriber one mail.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_binary_file
from email.policy import default as default_policy
from email.utils import getaddresses
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select, text
from typer.testing import CliRunner

from digest.campaign.build import build_issue
from digest.campaign.lifecycle import run_weekly
from digest.campaign.status import gather_status
from digest.cli import app
from digest.config import get_settings
from digest.core.cadence import scheduled_week
from digest.delivery import make_transport
from digest.delivery.runner import send_issue
from digest.model.weeks import IsoWeek
from digest.scheduler import JOB_ID, make_scheduler, start_scheduler
from digest.store import db
from digest.store.issues import get_issue
from digest.store.jobs import JOBS_TABLE
from digest.store.terms import load_glossary
from tests.forked_python import ForkedPython, run_forked

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def add_subscribers(engine, count: int, *, start: int = 0) -> set[str]:
    """`count` confirmed, active subscribers (confirmed yesterday); returns their addresses."""
    now = db.utcnow()
    rows = [
        {
            "email": f"reader{n:04d}@example.org",
            "name": f"Reader {n}",
            "status": "active",
            "source": "import",
            "created_at": now - timedelta(days=2),
            "confirmed_at": now - timedelta(days=1),
            "updated_at": now - timedelta(days=1),
        }
        for n in range(start, start + count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(db.subscribers), rows)
    return {row["email"] for row in rows}


def mail_per_address(outbox: Path) -> Counter[str]:
    """How many .eml files the outbox holds for each To address."""
    seen: Counter[str] = Counter()
    for path in outbox.glob("*.eml"):
        with path.open("rb") as fh:
            message = message_from_binary_file(fh, policy=default_policy)
        for _name, address in getaddresses([str(message["To"])]):
            seen[address] += 1
    return seen


def ledger(engine, week) -> Counter[str]:
    issue = get_issue(engine, week)
    with engine.connect() as conn:
        rows = conn.execute(
            select(db.deliveries.c.status, func.count())
            .where(db.deliveries.c.issue_id == issue.id)
            .group_by(db.deliveries.c.status)
        )
        return Counter(dict(rows.all()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 60.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


class Service:
    """`digest run` as a process of its own (forked warm: tests/forked_python.py), its log in a
    file."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log_path = tmp_path / f"run-{self.port}.log"
        self.proc = ForkedPython(
            ["-m", "digest.cli", "run", "--port", str(self.port), *args],
            env={**os.environ, **(env or {})},
            cwd=tmp_path,
            output=self.log_path,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def healthz(self) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2)
        except httpx.TransportError:
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def services():
    started: list[Service] = []
    yield started
    for service in started:
        service.kill()


@pytest.fixture
def outbox(settings_env) -> Path:
    return Path(settings_env["DIGEST_OUTBOX_DIR"])


def _recent_schedule(hours_ago: float = 1.0) -> str:
    """A weekly crontab whose latest fire was `hours_ago`, so it is inside the grace window."""
    fired = datetime.now(UTC) - timedelta(hours=hours_ago)
    return f"{fired.minute} {fired.hour} * * {(fired.weekday() + 1) % 7}"


# --------------------------------------------------------------------------- digest run


def test_run_sends_once_serves_health_stops_cleanly_and_never_resends(
    engine, settings_env, outbox, services, tmp_path
):
    readers = add_subscribers(engine, 5)
    week = scheduled_week(get_settings(), db.utcnow())

    first = Service(tmp_path, "--now")
    services.append(first)
    assert wait_until(lambda: _status(engine, week) == "sent"), first.log
    assert mail_per_address(outbox) == dict.fromkeys(readers, 1)
    health = wait_until(first.healthz, timeout=30)
    assert health is not None and health.status_code == 200, first.log
    assert health.json() == {"status": "ok"}
    ready = httpx.get(f"http://127.0.0.1:{first.port}/readyz", timeout=5)
    assert (ready.status_code, ready.json()["status"]) == (200, "ready"), ready.text
    assert first.stop() == 0, first.log
    assert "event=service_stopped" in first.log
    assert "Traceback" not in first.log

    second = Service(tmp_path, "--now")
    services.append(second)
    assert wait_until(lambda: "event=job_nothing_to_do" in second.log), second.log
    assert wait_until(second.healthz, timeout=30) is not None
    assert second.stop() == 0, second.log
    assert mail_per_address(outbox) == dict.fromkeys(readers, 1)
    assert get_issue(engine, week).status == "sent"
    assert ledger(engine, week) == {"sent": 5}
    with engine.connect() as conn:
        stored = conn.execute(text(f"SELECT id FROM {JOBS_TABLE}")).scalars().all()
    assert stored == [JOB_ID]  # two starts, one stored weekly job


def _status(engine, week) -> str | None:
    issue = get_issue(engine, week)
    return issue.status if issue else None


def test_sigterm_mid_send_finishes_the_batch_pauses_and_a_restart_completes_it(
    engine, settings_env, outbox, services, tmp_path, monkeypatch
):
    readers = add_subscribers(engine, 400)
    env = {
        "DIGEST_SCHEDULE": _recent_schedule(1),
        "DIGEST_MISFIRE_GRACE_TIME": str(3 * 3600),
        "DIGEST_BATCH_SIZE": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    week = scheduled_week(get_settings(), db.utcnow())  # the week of the fire an hour ago
    first = Service(tmp_path, "--now")
    services.append(first)
    assert wait_until(lambda: any(outbox.glob("*.eml")), every=0.01), first.log
    assert first.stop() == 0, first.log

    stopped = get_issue(engine, week)
    assert stopped.status == "paused", first.log
    assert "stopped on request" in stopped.status_reason
    counts = ledger(engine, week)
    # The batch in flight was finished and recorded: nothing is left claimed, and the ledger
    # and the outbox agree on who got the issue.
    assert set(counts) == {"sent"} and 0 < counts["sent"] < 400
    assert sum(mail_per_address(outbox).values()) == counts["sent"]

    # Restarted without --now: the due week's interrupted send is resumed, to the end.
    second = Service(tmp_path)
    services.append(second)
    assert wait_until(lambda: get_issue(engine, week).status == "sent"), second.log
    assert "resuming an interrupted send" in second.log
    assert second.stop() == 0, second.log
    assert mail_per_address(outbox) == dict.fromkeys(readers, 1)
    assert ledger(engine, week) == {"sent": 400}


def test_a_bad_schedule_stops_run_before_anything_starts(settings_env, tmp_path):
    result = run_forked(
        ["-m", "digest.cli", "run", "--port", str(free_port())],
        env={**os.environ, "DIGEST_SCHEDULE": "mon 9"},
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot read schedule 'mon 9'" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- two processes


_FIRE_AT = """
import sys, time
from digest.logs import configure_logging
from digest.scheduler import weekly_job
configure_logging("INFO")
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
weekly_job()
"""


def test_two_processes_firing_at_once_send_each_subscriber_one_mail(
    engine, settings_env, outbox, tmp_path
):
    readers = add_subscribers(engine, 300)
    env = {**os.environ, "DIGEST_BATCH_SIZE": "20"}
    fire_at = time.time() + 1.0  # both have started by then (forked warm: ~0.1 s)
    procs = [ForkedPython(["-c", _FIRE_AT, repr(fire_at)], env=env) for _ in range(2)]
    logs = [proc.communicate(timeout=120)[0].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], logs
    assert not any("event=job_failed" in log for log in logs), logs

    assert mail_per_address(outbox) == dict.fromkeys(readers, 1)
    week = scheduled_week(get_settings(), db.utcnow())
    assert get_issue(engine, week).status == "sent"
    assert ledger(engine, week) == {"sent": 300}
    # Between them the two processes report exactly the 300 sends.
    reported = [
        int(part.split("=")[1])
        for log in logs
        for line in log.splitlines()
        if "event=send_finished" in line
        for part in line.split()
        if part.startswith("sent=")
    ]
    assert sum(reported) == 300, logs


# --------------------------------------------------------------------------- status, resume, cancel


runner = CliRunner()


def test_status_shows_schedule_issue_deliveries_queue_and_subscribers(engine, settings_env):
    add_subscribers(engine, 3)
    now = db.utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(db.subscribers).values(
                email="new@example.org",
                status="pending",
                source="web",
                created_at=now,
                updated_at=now,
            )
        )
    settings = get_settings()
    week = scheduled_week(settings, now)
    run_weekly(settings, week, now=now)

    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "schedule mon 09:00 (UTC)" in out
    assert "(computed: `digest run` has not stored the job yet)" in out
    issue = get_issue(engine, week)
    assert f"issue {week} {issue.featured_slug} — sent" in out
    assert "deliveries 3 sent" in out
    assert "queue 0 terms" in out
    assert "3 active" in out and "1 pending" in out


def test_cancel_marks_the_issue_failed_and_the_weekly_job_leaves_it_alone(
    engine, settings_env, outbox
):
    add_subscribers(engine, 3)
    settings = get_settings()
    week = scheduled_week(settings, db.utcnow())
    build_issue(engine, settings, load_glossary(settings.terms_dir), week, now=db.utcnow())
    result = runner.invoke(app, ["issue", "cancel", str(week), "--reason", "wrong term"])
    assert result.exit_code == 0, result.output
    assert f"{week}: failed (wrong term)" in result.output

    outcome = run_weekly(settings, week, now=db.utcnow())
    assert outcome.status == "failed"
    assert not any(outbox.glob("*.eml"))
    assert get_issue(engine, week).status_reason == "wrong term"


def test_cancel_refuses_a_sent_issue(engine, settings_env):
    add_subscribers(engine, 1)
    settings = get_settings()
    week = scheduled_week(settings, db.utcnow())
    run_weekly(settings, week, now=db.utcnow())
    result = runner.invoke(app, ["issue", "cancel", str(week)])
    assert result.exit_code == 1
    assert f"issue {week} cannot go from sent to failed" in result.output


def test_resume_sends_the_rest_of_a_paused_issue(engine, settings_env, outbox):
    readers = add_subscribers(engine, 4)
    settings = get_settings()
    week = scheduled_week(settings, db.utcnow())
    build_issue(engine, settings, load_glossary(settings.terms_dir), week, now=db.utcnow())
    stop = threading.Event()
    stop.set()  # as if SIGTERM arrived before the first batch
    summary = send_issue(engine, settings, make_transport(settings), week, now=db.utcnow, stop=stop)
    assert summary.status == "paused"
    assert get_issue(engine, week).status == "paused"

    result = runner.invoke(app, ["issue", "resume", str(week)])
    assert result.exit_code == 0, result.output
    assert f"{week}: sent — 4 sent" in result.output
    assert get_issue(engine, week).status == "sent"
    assert mail_per_address(outbox) == dict.fromkeys(readers, 1)


def test_resume_of_a_week_without_an_issue_says_so(engine, settings_env):
    result = runner.invoke(app, ["issue", "resume", "2026-W17"])
    assert result.exit_code == 1
    assert "there is no issue for 2026-W17" in result.output
    result = runner.invoke(app, ["issue", "resume", "2026-17"])
    assert result.exit_code == 1
    assert "must be an ISO week like 2026-W17" in result.output


# --------------------------------------------------------------------------- the stored job


def test_the_stored_weekly_job_overdue_within_grace_sends_the_week_of_its_fire_on_start(
    engine, settings_env, outbox, monkeypatch
):
    readers = add_subscribers(engine, 3)
    fired_at = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    monkeypatch.setenv("DIGEST_SCHEDULE", _recent_schedule(1))
    monkeypatch.setenv("DIGEST_MISFIRE_GRACE_TIME", str(2 * 3600))
    get_settings.cache_clear()
    settings = get_settings()
    # A scheduler stored the real job, then the machine was off while its fire time passed.
    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings)
    scheduler.pause()
    scheduler.modify_job(JOB_ID, next_run_time=fired_at)
    scheduler.shutdown()

    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings)
    try:
        week = IsoWeek.of(fired_at)
        assert wait_until(lambda: _status(engine, week) == "sent", timeout=60)
    finally:
        scheduler.shutdown()
    assert mail_per_address(outbox) == dict.fromkeys(readers, 1)

    report = gather_status(engine, settings, db.utcnow())
    assert report.scheduled and not report.overdue
    assert report.next_fire == fired_at + timedelta(days=7)
    assert report.issue is not None and report.issue.issue.week == week
    assert report.issue.deliveries == {"sent": 3}


def test_status_says_when_the_stored_run_is_overdue(engine, settings_env):
    settings = get_settings()
    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings)
    scheduler.pause()
    past = db.utcnow() - timedelta(days=1)
    scheduler.modify_job(JOB_ID, next_run_time=past)
    scheduler.shutdown()
    report = gather_status(engine, settings, db.utcnow())
    assert report.scheduled and report.overdue
    assert abs(report.next_fire - past) < timedelta(milliseconds=1)  # a float timestamp
    result = runner.invoke(app, ["status"])
    assert "overdue: no `digest run` is running" in " ".join(result.output.split())
