"""Shared sends: on PostgreSQL several `digest send` processes send one issue together, each
with its own lease (digest.delivery.crew); one killed with SIGKILL loses only its lease and the
others take its batches over; on SQLite one sends and the others say busy, as before.

Real processes (forked warm) against the local SendGrid server, real PostgreSQL and SQLite.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select

from digest.campaign.status import lease_note
from digest.config import Settings
from digest.delivery.crew import Seat
from digest.delivery.ledger import mark_batch, take_batch
from digest.delivery.outbox import OutboxTransport
from digest.delivery.runner import retry_failed, send_issue
from digest.model.owner import Machine, Owner
from digest.owner import current_owner, owner_liveness
from digest.store.db import deliveries, issues, send_crew, subscribers, utcnow
from digest.store.issues import claim_send, get_issue, transition
from digest.store.send_crew import join, live_members
from tests.forked_python import ForkedPython
from tests.sendgrid_server import SendGridTestServer
from tests.sending import (
    NOW,
    WEEK,
    build_issue,
    cli_env,
    lease_runs_out,
    ledger,
    seed_subscribers,
    start_send,
    wait_for,
)
from tests.test_run import free_port

pytestmark = pytest.mark.slow

READERS = 3000
ACTIVE = {f"reader{i}@example.org" for i in range(READERS)}
SEED = int(os.environ.get("DIGEST_CRASH_SEED", "20260302"))
postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def sendgrid() -> Iterator[SendGridTestServer]:
    with SendGridTestServer() as server:
        server.state.keep_payloads = 0
        yield server


@pytest.fixture
def env(settings_env: dict[str, str], sendgrid: SendGridTestServer) -> dict[str, str]:
    # Two batches in flight a sender and a provider that takes 0.3 s a request: three senders
    # need a couple of seconds for 30 batches, long enough to kill one in the middle.
    return cli_env(
        settings_env,
        sendgrid,
        DIGEST_BATCH_SIZE="100",
        DIGEST_BATCHES_IN_FLIGHT="2",
        DIGEST_SENDGRID_TIMEOUT="2",
        DIGEST_SEND_LEASE="3",
    )


@pytest.fixture
def readers(engine: Engine) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)


def _outputs(procs: list[ForkedPython]) -> list[tuple[int, str]]:
    return [(p.wait(timeout=180), p.communicate()[0].decode()) for p in procs]


def _sent_by(out: str) -> int:
    found = re.search(r"sent ([\d,]+), skipped", out)
    assert found, out
    return int(found[1].replace(",", ""))


def _uncertain(engine: Engine) -> set[str]:
    """Readers the ledger itself reports as not known to have gone out (the skip rule)."""
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(subscribers.c.email)
                .select_from(deliveries.join(subscribers))
                .where(deliveries.c.status == "skipped", deliveries.c.error.like("uncertain:%"))
            ).scalars()
        )


def _recorded_sent(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(subscribers.c.email)
                .select_from(deliveries.join(subscribers))
                .where(deliveries.c.status == "sent")
            ).scalars()
        )


def test_three_senders_started_together_share_the_issue_or_wait_their_turn(
    engine: Engine, env: dict[str, str], sendgrid: SendGridTestServer, readers: None
) -> None:
    sendgrid.state.delay = 0.3
    started = time.monotonic()
    outputs = _outputs([start_send(env) for _ in range(3)])
    elapsed = time.monotonic() - started

    received = sendgrid.deliveries()
    assert set(received) == ACTIVE and max(received.values()) == 1
    assert ledger(engine) == {"sent": READERS}
    assert get_issue(engine, WEEK).status == "sent"  # type: ignore[union-attr]
    if engine.dialect.name == "postgresql":
        # Every one of them exits 0, each sent a share, and none of them was busy.
        assert [code for code, _ in outputs] == [0, 0, 0], outputs
        shares = [_sent_by(out) for _, out in outputs]
        assert sum(shares) == READERS and min(shares) > 0, outputs
        with engine.connect() as conn:  # all left the crew; batch numbers unique and dense
            assert conn.execute(select(send_crew)).all() == []
            batches = conn.execute(select(deliveries.c.batch).distinct()).scalars().all()
        assert sorted(batches) == list(range(1, 31))
        print(f"\nthree shared senders, 30 batches at 0.3 s: {elapsed:.1f} s, shares {shares}")
    else:
        # SQLite: one sender at a time; the others say busy (or, late, find it sent).
        codes = sorted(code for code, _ in outputs)
        assert codes in ([0, 0, 2], [0, 2, 2], [0, 0, 0]), outputs
        assert sum(_sent_by(out) for code, out in outputs if code == 0) == READERS


@postgresql_only
def test_one_of_three_senders_killed_midway_the_others_finish_and_nobody_gets_it_twice(
    engine: Engine, env: dict[str, str], sendgrid: SendGridTestServer, readers: None
) -> None:
    rng = random.Random(f"{SEED}-crew")
    sendgrid.state.delay = 0.3
    procs = [start_send(env) for _ in range(3)]
    wait_for(lambda: sendgrid.stats()["accepted"] >= rng.randint(4, 10), 60)
    victim = rng.randrange(3)
    procs[victim].kill()  # kill -9, with batches at SendGrid and others' claims around it
    survivors = _outputs([p for i, p in enumerate(procs) if i != victim])
    procs[victim].wait(10)

    assert [code for code, _ in survivors] == [0, 0], survivors
    assert any("took over the batches of pid" in out for _, out in survivors), survivors
    received = sendgrid.deliveries()
    duplicates = sorted(e for e, n in received.items() if n > 1)
    gaps = ACTIVE - set(received)
    assert duplicates == []
    # The ledger agrees with SendGrid about who got it; every gap is a reader it reports as
    # uncertain (a batch at SendGrid when its sender died, not re-sent: DIGEST_AMBIGUOUS_BATCHES).
    assert _recorded_sent(engine) == set(received)
    assert gaps == _uncertain(engine)
    counts = ledger(engine)
    assert set(counts) <= {"sent", "skipped"} and sum(counts.values()) == READERS
    assert get_issue(engine, WEEK).status == "sent"  # type: ignore[union-attr]
    print(f"\ncrew kill: {counts}, {sendgrid.stats()['lookups']} lookups")


@postgresql_only
def test_a_member_stopped_by_sigterm_leaves_and_the_others_carry_the_send_on(
    engine: Engine, env: dict[str, str], sendgrid: SendGridTestServer, readers: None
) -> None:
    sendgrid.state.delay = 0.3
    first, second = start_send(env), start_send(env)
    wait_for(lambda: sendgrid.stats()["accepted"] >= 4, 60)
    first.send_signal(signal.SIGTERM)  # a rolling restart of one replica
    (stopped_code, stopped), (code, out) = _outputs([first, second])

    # It stops at once, issue untouched (not paused): exit 2, "run again" as any stopped send.
    assert stopped_code == 2 and "1 other sender of this issue carries the send on" in stopped
    assert code == 0, out
    assert get_issue(engine, WEEK).status == "sent"  # type: ignore[union-attr]
    assert ledger(engine) == {"sent": READERS}
    received = sendgrid.deliveries()
    assert set(received) == ACTIVE and max(received.values()) == 1


def _elsewhere() -> Owner:
    """A crew member on another host: it cannot be checked from here, only waited out."""
    return Owner(Machine("replica-b.internal", "boot-b", "pid:[1]"), 4242, 777, "other")


@postgresql_only
def test_a_member_on_another_host_is_waited_out_then_its_batch_is_taken_over(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    ids = seed_subscribers(engine, 30)
    build_issue(engine)
    issue = transition(engine, WEEK, "sending", now=NOW)
    other = _elsewhere()
    assert join(
        engine, issue.id, other, None, timedelta(seconds=2), now=utcnow(),
        judge_holder=owner_liveness,
    )  # fmt: skip
    with engine.begin() as conn:  # its batch 1, claimed, never at the outbox
        conn.execute(
            insert(deliveries),
            [
                {"issue_id": issue.id, "subscriber_id": sid, "batch": 1, "status": "claimed",
                 "attempts": 0, "claimed_at": NOW, "claimed_by": other.token}
                for sid in ids[:10]
            ],
        )  # fmt: skip
    quick = settings.model_copy(update={"send_lease": 1.0, "batch_size": 10})
    started = time.monotonic()
    summary = send_issue(
        engine, quick, OutboxTransport(tmp_path / "outbox", clock=utcnow), WEEK, now=NOW
    )
    waited = time.monotonic() - started

    assert (summary.status, summary.sent) == ("sent", 30), summary
    assert waited >= 1.5  # its lease (2 s) was waited out: another host's process is unknowable
    assert ledger(engine) == {"sent": 30}
    assert live_members(engine, issue.id, utcnow()) == []


@postgresql_only
def test_a_retry_never_runs_beside_a_shared_send_nor_a_send_beside_a_retry(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    issue = transition(engine, WEEK, "sending", now=NOW)
    outbox = OutboxTransport(tmp_path / "outbox", clock=utcnow)
    live = replace(current_owner(), run="member")  # this very process: provably running
    assert join(
        engine, issue.id, live, None, timedelta(minutes=5), now=utcnow(),
        judge_holder=owner_liveness,
    )  # fmt: skip

    retried = retry_failed(engine, settings, outbox, WEEK, now=NOW)
    assert retried.status == "busy" and "another process is sending this issue" in (
        retried.reason or ""
    )
    assert get_issue(engine, WEEK).claimed_by is None  # type: ignore[union-attr]  # let go

    with engine.begin() as conn:
        conn.execute(send_crew.delete())
    retry = replace(current_owner(), run="retry")
    assert claim_send(engine, WEEK, retry, timedelta(minutes=5), now=utcnow())
    joined = send_issue(engine, settings, outbox, WEEK, now=NOW)
    assert joined.status == "busy" and f"pid {os.getpid()}" in (joined.reason or "")
    assert ledger(engine) == {}


@postgresql_only
def test_a_send_to_every_zone_does_not_join_a_local_time_crew(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    issue = transition(engine, WEEK, "sending", now=NOW)
    tick = replace(current_owner(), run="tick")
    assert join(
        engine, issue.id, tick, frozenset({"Europe/Amsterdam"}), timedelta(minutes=5),
        now=utcnow(), judge_holder=owner_liveness,
    )  # fmt: skip

    summary = send_issue(
        engine, settings, OutboxTransport(tmp_path / "outbox", clock=utcnow), WEEK, now=NOW
    )

    assert summary.status == "busy" and "other time zones only" in (summary.reason or "")
    assert ledger(engine) == {}
    members = live_members(engine, issue.id, utcnow())
    note = lease_note(get_issue(engine, WEEK), None, utcnow(), crew=members)  # type: ignore[arg-type]
    assert note == f"pid {os.getpid()} on host {tick.host} is sending it; " + (
        f"`digest send --week {WEEK}` joins it"
    )
    with engine.connect() as conn:
        assert conn.execute(select(issues.c.claimed_by)).scalar_one() is None


@postgresql_only
def test_a_digest_run_replica_joins_a_send_another_process_started(
    engine: Engine, env: dict[str, str], sendgrid: SendGridTestServer, readers: None,
    tmp_path: Path,
) -> None:  # fmt: skip
    sendgrid.state.delay = 0.3
    log = tmp_path / "replica.log"
    replica_env = env | {"DIGEST_SEND_JOIN_INTERVAL": "0.2", "DIGEST_LOG_FORMAT": "logfmt"}
    replica = ForkedPython(
        ["-m", "digest.cli", "run", "--port", str(free_port())],
        env=replica_env, cwd=tmp_path, output=log,
    )  # fmt: skip
    try:
        wait_for(lambda: "service_started" in log.read_text(), 60, "the replica to start")
        [(code, out)] = _outputs([start_send(env)])  # a send started by hand, elsewhere
        assert code == 0, out
        wait_for(lambda: "send_finished" in log.read_text(), 60, "the replica's part")
    finally:
        replica.send_signal(signal.SIGTERM)
        replica.wait(60)
    text = log.read_text()
    assert "event=send_joined" in text, text
    joined = re.search(r"event=send_finished .*?sent=(\d+)", text)
    assert joined and int(joined[1]) > 0 and _sent_by(out) < READERS, (out, text)
    assert _sent_by(out) + int(joined[1]) == READERS
    received = sendgrid.deliveries()
    assert set(received) == ACTIVE and max(received.values()) == 1
    assert get_issue(engine, WEEK).status == "sent"  # type: ignore[union-attr]


@postgresql_only
def test_a_member_whose_batch_was_taken_over_cannot_settle_it(
    engine: Engine, settings: Settings
) -> None:
    ids = seed_subscribers(engine, 3)
    build_issue(engine)
    issue = transition(engine, WEEK, "sending", now=NOW)
    with engine.begin() as conn:
        conn.execute(
            insert(deliveries),
            [
                {"issue_id": issue.id, "subscriber_id": sid, "batch": 1, "status": "claimed",
                 "attempts": 0, "claimed_at": NOW, "claimed_by": "slow-member"}
                for sid in ids
            ],
        )  # fmt: skip

    assert take_batch(engine, issue, 1, owner="slow-member", to="taker")
    assert not take_batch(engine, issue, 1, owner="slow-member", to="second-taker")
    # The slow member (judged dead, but only slow) comes back with its answer: nothing moves.
    assert mark_batch(engine, issue, 1, "sent", error=None, sent_at=NOW, by="slow-member") == 0
    assert ledger(engine) == {"claimed": 3}
    assert mark_batch(engine, issue, 1, "sent", error=None, sent_at=NOW, by="taker") == 3
    assert ledger(engine) == {"sent": 3}


@postgresql_only
def test_batches_of_a_live_sender_from_before_shared_sends_are_not_taken_over(
    engine: Engine,
) -> None:
    # A rolling upgrade: an older digest (no crew, rows without a claimer) holds the issue's
    # lease and has a batch at the provider while a new replica sends beside it.
    ids = seed_subscribers(engine, 4)
    build_issue(engine)
    issue = transition(engine, WEEK, "sending", now=NOW)
    older = replace(current_owner(), run="older")  # this process: provably running
    assert claim_send(engine, WEEK, older, timedelta(minutes=5), now=utcnow())
    with engine.begin() as conn:
        conn.execute(
            insert(deliveries),
            [
                {"issue_id": issue.id, "subscriber_id": sid, "batch": 1, "status": "claimed",
                 "attempts": 0, "claimed_at": NOW}
                for sid in ids
            ],
        )  # fmt: skip
    seat = Seat(engine, issue, replace(current_owner(), run="new"), timedelta(minutes=5), True)

    assert seat.orphans(utcnow()) == []
    lease_runs_out(engine)  # the older sender died and its lease ran out: now it is an orphan
    assert [o.batch for o in seat.orphans(utcnow())] == [1]
