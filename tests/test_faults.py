"""Fault injection: a send through a misbehaving SendGrid or a locked database loses nobody and
doubles nobody — it retries, or pauses with a clear reason and a later run finishes the job.

Real parts: SQLite and PostgreSQL, the SendGrid transport over HTTP to the local test server
(which scripts 429s, 5xx, hangs and dropped connections), another connection really holding the
database's write lock, and real (tiny) retry waits from the settings.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from digest.config import Settings
from digest.delivery.runner import SendSummary, send_issue
from digest.delivery.sendgrid import SendGridTransport
from digest.store import db
from digest.store.issues import get_issue
from tests.sendgrid_server import SendGridTestServer
from tests.sending import NOW, WEEK, build_issue, lease_runs_out, ledger, seed_subscribers

READERS = 500  # five batches of 100
EMAILS = {f"reader{i}@example.org" for i in range(READERS)}


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    # One batch at a time unless a test says otherwise: a fault script (`at_batch`) names the
    # batch by the order of the requests, which only one batch in flight keeps.
    return Settings(
        batches_in_flight=1,
        batch_size=100,
        max_retries=2,
        retry_base_delay=0.01,
        retry_max_delay=2.0,  # long enough to wait out a 429 whose reset is a second away
        sendgrid_timeout=1.0,  # well above a loaded machine's answer time: only hangs time out
        send_lease=1.0,
    )


@pytest.fixture(scope="module")
def sendgrid_server() -> Iterator[SendGridTestServer]:
    # One server for the module (stopping one takes half a second), reset for every test.
    with SendGridTestServer() as server:
        yield server


@pytest.fixture
def sendgrid(sendgrid_server: SendGridTestServer) -> SendGridTestServer:
    sendgrid_server.state.reset()
    return sendgrid_server


@pytest.fixture
def audience(engine: Engine) -> None:
    seed_subscribers(engine, READERS)
    seed_subscribers(engine, 3, prefix="gone", status="unsubscribed")
    seed_subscribers(engine, 3, prefix="pending", status="pending", confirmed_at=None)
    build_issue(engine)


def transport(server: SendGridTestServer, settings: Settings) -> SendGridTransport:
    # activity_settle=0: the test server's Email Activity feed has no lag to wait out, so
    # "not found" is an answer at once (see docs/delivery.md on lookups).
    return SendGridTransport(
        server.api_key, host=server.url, timeout=settings.sendgrid_timeout, activity_settle=0
    )


def send(engine: Engine, settings: Settings, server: SendGridTestServer) -> SendSummary:
    return send_issue(engine, settings, transport(server, settings), WEEK, now=NOW)


def assert_each_reader_got_it_once(engine: Engine, *servers: SendGridTestServer) -> None:
    received: Counter[str] = Counter()
    for server in servers:
        received.update(server.deliveries())
    assert set(received) == EMAILS, "gaps or strangers"
    assert [e for e, n in received.items() if n > 1] == [], "duplicates"
    assert ledger(engine) == {"sent": READERS}
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "sent"


def at_batch(batch: int, *faults: dict[str, Any]) -> list[dict[str, Any]]:
    """A fault script: `batch - 1` requests go through, then `faults`, one per attempt."""
    return [{"kind": "ok"}] * (batch - 1) + list(faults)


# --------------------------------------------------------------------------- passing faults

PASSING = {
    # fault at batch 3: (fault, requests sent again, lookups made)
    "429 with X-RateLimit-Reset": ({"kind": "status", "status": 429, "reset_in": 1}, 1, 0),
    "500": ({"kind": "status", "status": 500}, 1, 0),
    "503": ({"kind": "status", "status": 503}, 1, 0),
    "hang past the timeout, not taken": ({"kind": "hang", "seconds": 1.5}, 1, 1),
    "hang past the timeout after taking it": (
        {"kind": "hang", "seconds": 1.5, "accept": True}, 0, 1
    ),
    "connection closed before answering": ({"kind": "drop"}, 1, 1),
    "connection closed mid-response after taking it": ({"kind": "drop", "accept": True}, 0, 1),
}  # fmt: skip


@pytest.mark.parametrize("in_flight", [1, 4], ids=["one batch in flight", "four in flight"])
@pytest.mark.parametrize(("fault", "resent", "lookups"), PASSING.values(), ids=PASSING.keys())
def test_a_passing_fault_is_retried_and_nobody_is_lost_or_doubled(
    engine: Engine,
    settings: Settings,
    sendgrid: SendGridTestServer,
    audience: None,
    fault: dict[str, Any],
    resent: int,
    lookups: int,
    in_flight: int,
) -> None:
    # With four in flight the third request to arrive meets the fault, whichever batch it is:
    # the counts below hold either way.
    sendgrid.fail_next(*at_batch(3, fault))

    summary = send(engine, settings.model_copy(update={"batches_in_flight": in_flight}), sendgrid)

    assert (summary.status, summary.sent, summary.uncertain) == ("sent", READERS, 0)
    stats = sendgrid.stats()
    assert stats["faults_pending"] == 0 and stats["requests"] == 5 + resent
    # A batch that certainly did not go out is posted again; one SendGrid may have taken before
    # the answer was lost is looked up first, and posted again only if it is not there.
    assert (summary.api_calls, stats["lookups"]) == (5 + resent, lookups)
    assert_each_reader_got_it_once(engine, sendgrid)


# --------------------------------------------------------------------------- lasting faults

LASTING = {
    "500": ({"kind": "status", "status": 500}, "SendGrid server error (500)"),
    "503": ({"kind": "status", "status": 503}, "SendGrid server error (503)"),
    "hang past the timeout": ({"kind": "hang", "seconds": 1.5}, "SendGrid's answer timed out"),
    "connection closed mid-response": ({"kind": "drop"}, "SendGrid's answer failed"),
}


@pytest.mark.parametrize(("fault", "said"), LASTING.values(), ids=LASTING.keys())
def test_a_lasting_fault_pauses_with_its_reason_and_the_next_run_finishes(
    engine: Engine,
    settings: Settings,
    sendgrid: SendGridTestServer,
    audience: None,
    fault: dict[str, Any],
    said: str,
) -> None:
    sendgrid.fail_next(*at_batch(3, *[fault] * (settings.max_retries + 1)))

    paused = send(engine, settings, sendgrid)

    assert (paused.status, paused.sent, paused.api_calls) == ("paused", 200, 5)
    assert paused.reason is not None and paused.reason.startswith(said)
    assert paused.reason.endswith("(batch 3; run `digest send` again to resume)")
    issue = get_issue(engine, WEEK)
    assert issue is not None and (issue.status, issue.status_reason) == ("paused", paused.reason)
    assert issue.claimed_by is None  # a later run may start at once

    resumed = send(engine, settings, sendgrid)

    assert (resumed.status, resumed.total_sent) == ("sent", READERS)
    assert_each_reader_got_it_once(engine, sendgrid)


def test_a_rate_limit_resetting_later_than_the_longest_wait_pauses_at_once(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer, audience: None
) -> None:
    sendgrid.fail_next(*at_batch(2, {"kind": "status", "status": 429, "reset_in": 3600}))

    started = time.monotonic()
    paused = send(engine, settings, sendgrid)

    assert time.monotonic() - started < 2  # no hour-long sleep
    assert (paused.status, paused.sent, paused.api_calls) == ("paused", 100, 2)
    assert paused.reason is not None and paused.reason.startswith("SendGrid rate limit (429)")

    assert send(engine, settings, sendgrid).status == "sent"
    assert_each_reader_got_it_once(engine, sendgrid)


def test_sendgrid_going_away_mid_send_pauses_and_a_run_after_it_is_back_finishes(
    engine: Engine, settings: Settings, audience: None
) -> None:
    first = SendGridTestServer().start()
    port = int(first.url.rsplit(":", 1)[1])

    def outage(done: int, total: int) -> None:
        if done >= 200 and first.state.accepted:
            first.stop()
            first.state.accepted = 0  # stop only once

    paused = send_issue(
        engine, settings, transport(first, settings), WEEK, now=NOW, progress=outage
    )

    assert (paused.status, paused.sent) == ("paused", 200)
    assert paused.reason is not None and paused.reason.startswith("cannot reach SendGrid")
    assert ledger(engine) == {"sent": 200}  # the batch that never left was released

    with SendGridTestServer(api_key=first.api_key, port=port) as back:
        resumed = send(engine, settings, back)
        assert (resumed.status, resumed.sent) == ("sent", 300)
        assert_each_reader_got_it_once(engine, first, back)


# --------------------------------------------------------------------------- a locked database


class WriteLock:
    """Another connection holding the database's write lock, as a backup or a long migration
    would: SQLite's BEGIN EXCLUSIVE, PostgreSQL's EXCLUSIVE table locks (reads still go on)."""

    def __init__(self, engine: Engine, database_url: str) -> None:
        self.engine = engine
        self.url = database_url
        self.taken = threading.Event()
        self.released = threading.Event()

    def hold_when(self, ready: Any, seconds: float) -> threading.Thread:
        """From a thread: wait until `ready()`, then hold the lock for `seconds`."""

        def run() -> None:
            while not ready():
                time.sleep(0.005)
            if self.engine.dialect.name == "sqlite":
                path = self.engine.url.database
                assert path is not None
                conn = sqlite3.connect(path, isolation_level=None)
                conn.execute("BEGIN EXCLUSIVE")
                self.taken.set()
                time.sleep(seconds)
                conn.execute("COMMIT")
                conn.close()
            else:
                other = db.make_engine(self.url)
                with other.begin() as conn:
                    conn.execute(text("LOCK TABLE deliveries, issues IN EXCLUSIVE MODE"))
                    self.taken.set()
                    time.sleep(seconds)
                other.dispose()
            self.released.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def bound_lock_waits(engine: Engine, milliseconds: int) -> None:
    """Make the engine's connections give up on a lock after `milliseconds` (SQLite's busy
    timeout, PostgreSQL's lock_timeout) instead of digest's default (30 s, and forever)."""

    @event.listens_for(engine, "connect")
    def _bound(dbapi_connection: Any, _record: Any) -> None:
        if engine.dialect.name == "sqlite":
            dbapi_connection.execute(f"PRAGMA busy_timeout={milliseconds}")
        else:
            dbapi_connection.execute(f"SET lock_timeout = {milliseconds}")
            dbapi_connection.commit()

    engine.dispose()  # connections made before the listener keep the old bound


def test_a_lock_shorter_than_the_busy_timeout_only_slows_the_send(
    engine: Engine,
    database_url: str,
    settings: Settings,
    sendgrid: SendGridTestServer,
    audience: None,
) -> None:
    sendgrid.state.delay = 0.2  # the lock is taken while batch 3 is at SendGrid
    lock = WriteLock(engine, database_url)
    holder = lock.hold_when(lambda: sendgrid.stats()["requests"] >= 3, seconds=2.0)

    started = time.monotonic()
    summary = send(engine, settings, sendgrid)
    holder.join()

    assert lock.taken.is_set() and time.monotonic() - started >= 2.0
    assert (summary.status, summary.sent, summary.api_calls) == ("sent", READERS, 5)
    assert_each_reader_got_it_once(engine, sendgrid)


def test_a_lock_longer_than_the_bound_pauses_and_the_batch_in_flight_is_not_resent(
    engine: Engine,
    database_url: str,
    settings: Settings,
    sendgrid: SendGridTestServer,
    audience: None,
) -> None:
    bound_lock_waits(engine, 300)
    sendgrid.state.delay = 0.2
    lock = WriteLock(engine, database_url)
    # Taken while batch 3 is at SendGrid: SendGrid takes it, the ledger cannot record it.
    holder = lock.hold_when(lambda: sendgrid.stats()["requests"] >= 3, seconds=3.0)

    paused = send(engine, settings, sendgrid)

    assert lock.taken.is_set() and not lock.released.is_set()
    assert paused.status == "paused" and paused.sent == 200
    assert paused.reason is not None
    assert paused.reason.startswith("the database was unavailable (")
    assert "run `digest send` again to resume" in paused.reason
    assert sendgrid.stats()["accepted"] == 3
    holder.join()
    # The pause could not be written while the lock lasted: the issue is still `sending` and
    # its lease lapses by itself (3 s here: the timeout plus the longest backoff) before a new
    # run may take over; the test lets it lapse at once instead of sleeping through it.
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "sending"
    assert ledger(engine) == {"sent": 200, "claimed": 100}
    lease_runs_out(engine)
    sendgrid.state.delay = 0.0

    resumed = send(engine, settings, sendgrid)

    assert (resumed.status, resumed.api_calls) == ("sent", 2)  # batch 3 looked up, not resent
    assert sendgrid.stats()["lookups"] == 1
    assert_each_reader_got_it_once(engine, sendgrid)
