"""Several batches in flight: requests at the provider at once, each reader still sent once.

Real parts: SQLite and PostgreSQL, the SendGrid transport over HTTP to the local test server
(which counts the requests it has open at once and keeps a timeline of its answers), the outbox
on disk, and a real `digest send` process stopped with SIGTERM.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert

from digest.config import Settings
from digest.delivery.in_flight import RateLimitPause, batches_at_once
from digest.delivery.ledger import batch_key
from digest.delivery.outbox import OutboxTransport
from digest.delivery.personalise import issue_message, subscriber_recipient
from digest.delivery.runner import send_issue
from digest.delivery.sendgrid import SendGridTransport
from digest.model.issue import IssueRecord
from digest.store.db import deliveries, utcnow
from digest.store.issues import get_issue, transition
from tests.sendgrid_server import SendGridTestServer
from tests.sending import (
    NOW,
    WEEK,
    build_issue,
    cli_env,
    ledger,
    mails_per_address,
    run_send,
    seed_subscribers,
    send_leases_of,
    start_send,
    wait_for,
)


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    return Settings(
        batches_in_flight=4,
        batch_size=10,
        max_retries=3,
        retry_base_delay=0.01,
        retry_max_delay=3.0,  # long enough to wait out a 429 resetting two seconds off
        sendgrid_timeout=2.0,
    )


@pytest.fixture
def sendgrid() -> Iterator[SendGridTestServer]:
    with SendGridTestServer() as server:
        server.state.keep_payloads = 0
        yield server


def transport(server: SendGridTestServer, settings: Settings) -> SendGridTransport:
    # activity_settle=0: the test server's activity feed has no lag to wait out.
    return SendGridTransport(
        server.api_key, host=server.url, timeout=settings.sendgrid_timeout, activity_settle=0
    )


def each_reader_once(server: SendGridTestServer, count: int, prefix: str = "reader") -> bool:
    received = server.deliveries()
    return received == {f"{prefix}{i}@example.org": 1 for i in range(count)}


# --------------------------------------------------------------------------- how many at once


def test_four_batches_in_flight_are_at_sendgrid_together_and_each_reader_gets_it_once(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 80)
    build_issue(engine)
    sendgrid.state.delay = 0.3  # eight batches one after another: 2.4 s at the least
    seen: list[tuple[int, int]] = []

    started = time.monotonic()
    summary = send_issue(
        engine, settings, transport(sendgrid, settings), WEEK, now=NOW,
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    elapsed = time.monotonic() - started

    assert (summary.status, summary.sent, summary.batches, summary.api_calls) == (
        "sent", 80, 8, 8,
    )  # fmt: skip
    assert sendgrid.stats()["max_open_requests"] == 4
    assert elapsed < 2.0, f"{elapsed:.2f} s: the batches did not overlap"
    assert each_reader_once(sendgrid, 80) and ledger(engine) == {"sent": 80}
    assert seen[-1] == (80, 80) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_one_batch_in_flight_sends_one_request_at_a_time(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 40)
    build_issue(engine)
    sendgrid.state.delay = 0.05
    one = settings.model_copy(update={"batches_in_flight": 1})

    summary = send_issue(engine, one, transport(sendgrid, one), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.api_calls) == ("sent", 40, 4)
    assert sendgrid.stats()["max_open_requests"] == 1
    assert each_reader_once(sendgrid, 40)


class TwoAtOnce(SendGridTransport):
    """A transport that says it takes two batches at once, whatever the setting asks."""

    max_in_flight = 2


def test_a_transport_that_takes_fewer_batches_at_once_is_never_sent_more(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 60)
    build_issue(engine)
    sendgrid.state.delay = 0.1
    two = TwoAtOnce(sendgrid.api_key, host=sendgrid.url, timeout=2.0)

    summary = send_issue(engine, settings, two, WEEK, now=NOW)

    assert (summary.status, summary.sent) == ("sent", 60)
    assert sendgrid.stats()["max_open_requests"] == 2
    assert batches_at_once(two, 4) == 2 and batches_at_once(two, 1) == 1


def test_the_outbox_takes_batches_in_flight_and_writes_each_reader_once(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    seed_subscribers(engine, 95)
    build_issue(engine)

    summary = send_issue(
        engine, settings, OutboxTransport(tmp_path / "outbox", clock=utcnow), WEEK, now=NOW
    )

    assert (summary.status, summary.sent, summary.batches) == ("sent", 95, 10)
    assert set(mails_per_address(tmp_path / "outbox").values()) == {1}
    assert len(mails_per_address(tmp_path / "outbox")) == 95
    assert len(list((tmp_path / "outbox" / ".batches").glob("*.json"))) == 10


# --------------------------------------------------------------------------- faults


def test_a_429_pauses_every_batch_in_flight_together(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 80)
    build_issue(engine)
    sendgrid.state.delay = 0.2
    # The first request to arrive hears "wait two seconds" (X-RateLimit-Reset is whole epoch
    # seconds: between one and two from now).
    sendgrid.fail_next({"kind": "status", "status": 429, "reset_in": 2})

    summary = send_issue(engine, settings, transport(sendgrid, settings), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.api_calls) == ("sent", 80, 9)
    answered = sendgrid.answered()
    limited = [answer for _arrived, answer, status in answered if status == 429]
    assert len(limited) == 1, "one 429, not one per batch"
    # Every request after it (the limited batch's retry, and the batches that had not reached
    # SendGrid yet or were claimed since) kept to that one pause: none reached SendGrid before
    # the limit reset. (One already on its way when the 429 was heard may land just after it.)
    later = [arrived for arrived, _answer, _status in answered if arrived > limited[0] + 0.05]
    assert len(later) >= 5
    assert min(later) >= limited[0] + 0.9, [round(a - limited[0], 3) for a, _b, _s in answered]
    assert each_reader_once(sendgrid, 80) and ledger(engine) == {"sent": 80}


def test_the_shared_pause_is_the_longest_held_and_waited_out_once() -> None:
    now = [100.0]
    pause = RateLimitPause(clock=lambda: now[0])

    assert pause.until == 0.0
    assert pause.hold(5.0) == 105.0
    assert pause.hold(2.0) == 105.0  # a shorter pause heard later does not cut it short
    now[0] = 103.0
    assert pause.left(pause.until) == 2.0
    assert pause.hold(4.0) == 107.0


def test_a_rejected_request_stops_the_claiming_and_the_batches_in_flight_are_settled(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 100)
    build_issue(engine)
    sendgrid.state.delay = 0.2
    sendgrid.fail_next(
        {"kind": "ok"}, {"kind": "status", "status": 400, "field": "from", "message": "bad"}
    )

    failed = send_issue(engine, settings, transport(sendgrid, settings), WEEK, now=NOW)

    stats = sendgrid.stats()
    assert failed.status == "failed" and "(400): from: bad" in (failed.reason or "")
    # Nobody was claimed after the refusal: at most the four batches in flight were tried.
    assert stats["requests"] == failed.api_calls <= 4
    counts = ledger(engine)
    assert counts.get("failed") == 10 and "claimed" not in counts
    assert counts.get("sent", 0) == 10 * stats["accepted"] == failed.sent
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "failed"

    resumed = send_issue(engine, settings, transport(sendgrid, settings), WEEK, now=NOW)

    assert (resumed.status, resumed.total_sent) == ("sent", 100)
    assert each_reader_once(sendgrid, 100) and ledger(engine) == {"sent": 100}


def test_stop_lets_the_batches_in_flight_finish_claims_no_more_and_the_next_run_finishes(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 100)
    build_issue(engine)
    sendgrid.state.delay = 0.3
    stop = threading.Event()

    def stop_at_the_first_batch(done: int, total: int) -> None:
        if done >= 10:
            stop.set()

    first = send_issue(
        engine, settings, transport(sendgrid, settings), WEEK, now=NOW, stop=stop,
        progress=stop_at_the_first_batch,
    )  # fmt: skip

    assert first.status == "paused" and "stopped on request" in (first.reason or "")
    assert (first.sent, first.api_calls, sendgrid.stats()["requests"]) == (40, 4, 4)
    assert ledger(engine) == {"sent": 40}

    second = send_issue(engine, settings, transport(sendgrid, settings), WEEK, now=NOW)

    assert (second.status, second.sent, second.total_sent) == ("sent", 60, 100)
    assert each_reader_once(sendgrid, 100)


def test_stop_cuts_a_batch_in_flights_backoff_short_and_it_is_released_unsent(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 100)
    build_issue(engine)
    sendgrid.state.delay = 0.3
    slow = settings.model_copy(update={"retry_base_delay": 20.0, "retry_max_delay": 30.0})
    # The first request to arrive is refused for now, and so is every retry of it; the other
    # three batches beside it are taken.
    sendgrid.fail_next(
        {"kind": "status", "status": 503}, *[{"kind": "ok"}] * 3,
        *[{"kind": "status", "status": 503}] * 5,
    )  # fmt: skip
    stop = threading.Event()

    def stop_at_the_first_batch(done: int, total: int) -> None:
        if done >= 10:
            stop.set()

    started = time.monotonic()
    first = send_issue(
        engine, slow, transport(sendgrid, slow), WEEK, now=NOW, stop=stop,
        progress=stop_at_the_first_batch,
    )  # fmt: skip

    assert time.monotonic() - started < 10  # not a backoff of up to 20 s, five times
    assert first.status == "paused" and first.sent == 30
    assert "SendGrid server error (503)" in (first.reason or "")
    assert ledger(engine) == {"sent": 30}  # the refused batch was released, not left claimed

    sendgrid.state.faults.clear()
    second = send_issue(engine, settings, transport(sendgrid, settings), WEEK, now=NOW)

    assert (second.status, second.total_sent) == ("sent", 100)
    assert each_reader_once(sendgrid, 100)


def test_the_lease_is_renewed_while_the_batches_in_flight_wait_on_sendgrid(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    sendgrid.state.delay = 2.5
    # A six-second lease, renewed by the waiting run every two (a third of it): a request
    # that takes 2.5 s sees at least one renewal while it is open.
    long = settings.model_copy(
        update={"send_lease": 6.0, "sendgrid_timeout": 3.0, "retry_max_delay": 0.05}
    )
    leases: list[object] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if sendgrid.state.open_requests:
                # The run's lease: the issue's (alone) or its crew row's (a shared send).
                leases.append(tuple(lease.until for lease in send_leases_of(engine)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = send_issue(engine, long, transport(sendgrid, long), WEEK, now=NOW)
    finally:
        done.set()
        watcher.join()

    assert (summary.status, summary.sent) == ("sent", 5)
    assert len(set(leases)) >= 2, leases


# --------------------------------------------------------------------------- resuming


def _crashed_with_batches_open(
    engine: Engine, ids: list[int], batches: int, per_batch: int = 10
) -> IssueRecord:
    """The ledger a run killed with `batches` batches in flight leaves: each claimed."""
    issue = transition(engine, WEEK, "sending", now=NOW)
    rows = [
        {"issue_id": issue.id, "subscriber_id": sid, "batch": 1 + i // per_batch,
         "status": "claimed", "attempts": 0, "claimed_at": NOW}
        for i, sid in enumerate(ids[: batches * per_batch])
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(deliveries), rows)
    return issue


def test_a_resume_settles_every_batch_a_kill_left_in_flight_by_asking_the_outbox(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    ids = seed_subscribers(engine, 65)
    build_issue(engine)
    issue = _crashed_with_batches_open(engine, ids, batches=4)
    outbox = OutboxTransport(tmp_path / "outbox", clock=utcnow)
    # Of the four batches the killed run had in flight, the outbox had written 2 and 3.
    for batch in (2, 3):
        crashed = [
            subscriber_recipient(settings, sid, f"reader{i}@example.org", "Reader")
            for i, sid in enumerate(ids)
            if (i // 10) + 1 == batch
        ]
        outbox.send(issue_message(settings, issue, crashed, batch_key(issue, batch)))

    summary = send_issue(engine, settings, outbox, WEEK, now=NOW)

    # Batches 1 and 4 are written again, 2 and 3 recorded as they were; then the other 25.
    assert (summary.status, summary.sent, summary.api_calls) == ("sent", 65, 5)
    assert set(mails_per_address(tmp_path / "outbox").values()) == {1}
    assert len(mails_per_address(tmp_path / "outbox")) == 65
    assert ledger(engine) == {"sent": 65}


@pytest.mark.slow
def test_sigterm_lets_the_batches_in_flight_finish_and_a_second_send_finishes(
    engine: Engine, settings_env: dict[str, str], sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 1000)
    build_issue(engine)
    sendgrid.state.delay = 0.5
    env = cli_env(settings_env, sendgrid, DIGEST_BATCHES_IN_FLIGHT="4")

    proc = start_send(env)
    wait_for(lambda: sendgrid.state.open_requests == 4)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)

    assert proc.returncode == 2, out.decode()
    assert "stopped on request" in out.decode()
    # The four batches at SendGrid when the signal came were let finish and recorded.
    assert ledger(engine) == {"sent": 400} and sendgrid.stats()["requests"] == 4
    sendgrid.state.delay = 0.0

    done = run_send(env, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    assert each_reader_once(sendgrid, 1000) and ledger(engine) == {"sent": 1000}
