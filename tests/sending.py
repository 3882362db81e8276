"""Helpers shared by the send tests: subscribers, a built issue, the ledger, `digest send` runs.

Used by test_sender, test_crash, test_faults, test_check (and the outbox and webhook tests); the
issue they build is small but passes `digest check`, as a real build would.
"""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from digest.delivery.sendgrid import SendGridTransport
from digest.model.issue import IssueRecord, LeaseHolder
from digest.model.weeks import IsoWeek
from digest.store.db import deliveries, issues, send_crew, subscribers
from digest.store.issues import get_issue, save_built
from digest.store.send_crew import send_leases
from tests.forked_python import ForkedPython, run_forked
from tests.sendgrid_server import SendGridTestServer

__all__ = [
    "HTML",
    "JOINED",
    "NOW",
    "REPO",
    "TEXT",
    "WEEK",
    "FakeSleep",
    "build_issue",
    "cli_env",
    "lease_runs_out",
    "ledger",
    "mails_per_address",
    "run_send",
    "seed_subscribers",
    "sendgrid_transport",
    "start_send",
    "wait_for",
]

REPO = Path(__file__).resolve().parent.parent
WEEK = IsoWeek(2026, 10)
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
JOINED = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)

HTML = (
    "<!doctype html><html lang='en'><body><p>Hello %%name_html%%,</p>"
    "<p>This week: attention, the mechanism that lets a model weigh every word of its input "
    "against every other word.</p>"
    "<p><a href='https://glossary.example.org/attention'>Read the whole entry</a></p>"
    "<p><a href='%%preferences_url%%'>Preferences</a> · "
    "<a href='%%unsubscribe_url%%'>Unsubscribe</a></p></body></html>"
)
TEXT = (
    "Hello %%name%%,\n\nThis week: attention, the mechanism that lets a model weigh every word "
    "of its input against every other word when it builds the meaning of a sentence.\n\n"
    "Read the whole entry:\nhttps://glossary.example.org/attention\n\n"
    "Preferences: %%preferences_url%%\nUnsubscribe: %%unsubscribe_url%%\n"
)


def seed_subscribers(
    engine: Engine,
    count: int,
    *,
    prefix: str = "reader",
    status: str = "active",
    confirmed_at: datetime | None = JOINED,
    paused_until: datetime | None = None,
    name: str | None = "Reader",
) -> list[int]:
    """Insert subscribers directly (as an import would) and return their ids in order."""
    rows = [
        {
            "email": f"{prefix}{i}@example.org",
            "name": name,
            "status": status,
            "source": "import",
            "created_at": JOINED - timedelta(days=1),
            "confirmed_at": confirmed_at,
            "paused_until": paused_until,
            "updated_at": JOINED,
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(subscribers), rows)
        return list(
            conn.execute(
                select(subscribers.c.id)
                .where(subscribers.c.email.like(f"{prefix}%@example.org"))
                .order_by(subscribers.c.id)
            ).scalars()
        )


def build_issue(engine: Engine, week: IsoWeek = WEEK) -> IssueRecord:
    """Store a small built issue for `week` (no glossary, no rendering: fast)."""
    return save_built(
        engine,
        week=week,
        featured_slug="attention",
        related_slugs=["transformer"],
        pick_source="queue",
        subject="Attention, %%name%%",
        preheader="The term of the week",
        html=HTML,
        text=TEXT,
        archive_html="<!doctype html><html lang='en'><body><p>Attention</p></body></html>",
        snapshot={},
        now=NOW - timedelta(hours=1),
    )


def mails_per_address(folder: Path) -> Counter[str]:
    """How many .eml files in `folder` are addressed to each address (as written, punycode)."""
    counts: Counter[str] = Counter()
    for path in folder.glob("*.eml"):
        with open(path, "rb") as fh:
            mail = email.message_from_binary_file(fh, policy=email.policy.default)
        counts[mail["To"].addresses[0].addr_spec] += 1
    return counts


def ledger(engine: Engine, week: IsoWeek = WEEK) -> dict[str, int]:
    """The week's deliveries counted by status."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.status, func.count())
            .select_from(deliveries.join(issues))
            .where(issues.c.week == str(week))
            .group_by(deliveries.c.status)
        ).all()
    return {status: count for status, count in rows}


def reader_rows(engine: Engine, week: IsoWeek = WEEK) -> dict[str, tuple[str, str | None]]:
    """Each reader's ledger row for `week`, by address: its status and error."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(subscribers.c.email, deliveries.c.status, deliveries.c.error)
            .select_from(deliveries.join(issues).join(subscribers))
            .where(issues.c.week == str(week))
        ).all()
    return {mail: (status, error) for mail, status, error in rows}


def sendgrid_transport(server: SendGridTestServer, **kwargs: Any) -> SendGridTransport:
    return SendGridTransport(server.api_key, host=server.url, timeout=0.5, **kwargs)


class FakeSleep:
    """Stands in for time.sleep: remembers what the sender asked to wait, waits for nothing."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


# --------------------------------------------------------------------------- `digest send` runs


def cli_env(
    settings_env: dict[str, str], sendgrid: SendGridTestServer, **extra: str
) -> dict[str, str]:
    """The environment of a `digest send` subprocess sending through the test server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env |= settings_env
    env |= {
        "DIGEST_TRANSPORT": "sendgrid",
        "SENDGRID_API_KEY": sendgrid.api_key,
        "DIGEST_SENDGRID_HOST": sendgrid.url,
        "DIGEST_SENDGRID_TIMEOUT": "30",
        "DIGEST_BATCH_SIZE": "100",
        "DIGEST_RETRY_BASE_DELAY": "0.01",
        "DIGEST_RETRY_MAX_DELAY": "0.05",
        "PYTHONPATH": str(REPO),
    }
    env |= extra
    return env


def start_send(env: dict[str, str], week: IsoWeek = WEEK) -> ForkedPython:
    """Start `python -m digest.cli send --week W` in a child process (output captured, merged),
    forked warm: it starts in milliseconds rather than a second (tests/forked_python.py)."""
    return ForkedPython(["-m", "digest.cli", "send", "--week", str(week)], env=env, cwd=REPO)


def run_send(
    env: dict[str, str], week: IsoWeek = WEEK, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`python -m digest.cli send --week W` run to its end, as `subprocess.run` with captured
    output reports it, forked warm as `start_send` is (killed after `timeout`)."""
    return run_forked(
        ["-m", "digest.cli", "send", "--week", str(week)], env=env, cwd=REPO, timeout=timeout
    )


def wait_for(
    condition: Callable[[], bool], timeout: float = 30.0, what: str = "the sending process"
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def lease_runs_out(engine: Engine, week: IsoWeek = WEEK) -> None:
    """What waiting out a killed sender's lease amounts to (without waiting minutes): the
    issue's lease, and every crew member's of a shared send (PostgreSQL)."""
    ended = datetime.now(UTC) - timedelta(seconds=1)
    with engine.begin() as conn:
        conn.execute(update(issues).where(issues.c.week == str(week)).values(claimed_until=ended))
        conn.execute(
            update(send_crew)
            .where(send_crew.c.issue_id.in_(select(issues.c.id).where(issues.c.week == str(week))))
            .values(until=ended)
        )


def send_leases_of(engine: Engine, week: IsoWeek = WEEK) -> list[LeaseHolder]:
    """Who holds `week`'s send now: the issue's lease (a sender alone) or its crew's."""
    issue = get_issue(engine, week)
    assert issue is not None
    return send_leases(engine, issue.id)
