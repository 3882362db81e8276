"""Crash tests: `digest send` killed with SIGKILL at random points still gets every active reader
the issue exactly once — counted at the (local) SendGrid, and the ledger agrees.

A real `digest send` process (forked warm: tests/forked_python.py) sends a few thousand readers
through the SendGrid transport to tests/sendgrid_server.py, is killed at a seeded random moment
(while starting, claiming, with a request at SendGrid, or recording), and is started again once
its lease has lapsed, as an operator or `digest run` would (the test makes it lapse at once
rather than sleep). With SendGrid's batch lookup working, the default ambiguity policy (skip)
never has to guess, so there may be no gaps either.

DIGEST_CRASH_TRIALS (default 6, the CI budget; 20 for a full run) issues are sent per backend,
with the kill schedule drawn from DIGEST_CRASH_SEED (default fixed), so a failure replays.
The loop runs with one batch in flight and with four: then a kill leaves several batches
claimed at once, and the run after it settles each (the loop checks a kill did).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import Engine, select

from digest.model.weeks import IsoWeek
from digest.store.db import deliveries, issues, subscribers
from tests.forked_python import ForkedPython
from tests.sendgrid_server import SendGridTestServer
from tests.sending import (
    WEEK,
    build_issue,
    cli_env,
    lease_runs_out,
    ledger,
    run_send,
    seed_subscribers,
    start_send,
    wait_for,
)

pytestmark = pytest.mark.slow

TRIALS = int(os.environ.get("DIGEST_CRASH_TRIALS", "6"))
SEED = int(os.environ.get("DIGEST_CRASH_SEED", "20260302"))
READERS = 2000
BATCH = 100
BATCHES = READERS // BATCH
ACTIVE = {f"reader{i}@example.org" for i in range(READERS)}


@pytest.fixture
def sendgrid() -> Iterator[SendGridTestServer]:
    with SendGridTestServer() as server:
        server.state.keep_payloads = 0  # 2,000 readers a trial: keep counts, not bodies
        yield server


@pytest.fixture
def env(settings_env: dict[str, str], sendgrid: SendGridTestServer) -> dict[str, str]:
    # A short lease (1 s, the request timeout plus the longest backoff): a live sender renews it
    # between batches, as in production. A killed one's is made to lapse (`lease_runs_out`)
    # rather than slept out: a second a kill, two dozen kills a run.
    return cli_env(
        settings_env,
        sendgrid,
        DIGEST_BATCH_SIZE=str(BATCH),
        DIGEST_SENDGRID_TIMEOUT="1",
        DIGEST_SEND_LEASE="1",
    )


@pytest.fixture
def readers(engine: Engine) -> None:
    seed_subscribers(engine, READERS)
    seed_subscribers(engine, 5, prefix="gone", status="unsubscribed")
    seed_subscribers(engine, 5, prefix="pending", status="pending", confirmed_at=None)
    seed_subscribers(engine, 5, prefix="bounced", status="bounced")


@dataclass
class Tally:
    """What a crash loop saw, over all its trials."""

    trials: int = 0
    kills: int = 0
    lookups: int = 0  # batches a restarted run had to ask SendGrid about
    duplicates: int = 0
    gaps: int = 0
    ledger_disagreements: int = 0
    most_open: int = 0  # the most batches a kill left claimed
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"trials={self.trials} kills={self.kills} lookups={self.lookups} "
            f"duplicates={self.duplicates} gaps={self.gaps} "
            f"ledger_disagreements={self.ledger_disagreements} most_open={self.most_open} "
            f"seed={SEED}"
        )


# --------------------------------------------------------------------------- helpers


def _kill_at_random(proc: ForkedPython, server: SendGridTestServer, rng: random.Random) -> bool:
    """SIGKILL `proc` at a random moment; False when it finished first."""
    if rng.random() < 0.25:
        # Anywhere from start-up (settings, migrations, the issue check) into the batches; the
        # imports happened in the warm fork server, so a late draw may find the run finished.
        deadline = time.monotonic() + rng.uniform(0.0, 1.5)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
    else:
        # After a random number of this run's requests, then a little more: the kill lands
        # while claiming, with a request at SendGrid, or between its answer and the ledger.
        start = server.stats()["requests"]
        left = BATCHES - server.stats()["accepted"]
        target = start + rng.randrange(0, max(1, left))
        while server.stats()["requests"] <= target and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.06))
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait(timeout=10)
    return True


def _open_batches(engine: Engine, week: IsoWeek) -> int:
    """How many of `week`'s batches are claimed and not settled: what a kill left in flight."""
    with engine.connect() as conn:
        return len(
            set(
                conn.execute(
                    select(deliveries.c.batch)
                    .select_from(deliveries.join(issues))
                    .where(issues.c.week == str(week), deliveries.c.status == "claimed")
                ).scalars()
            )
        )


def _run_to_the_end(env: dict[str, str], week: IsoWeek) -> subprocess.CompletedProcess[str]:
    done = run_send(env, week, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _ledger_sent(engine: Engine, week: IsoWeek) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(subscribers.c.email)
                .select_from(deliveries.join(issues).join(subscribers))
                .where(issues.c.week == str(week), deliveries.c.status == "sent")
            ).scalars()
        )


def _count(tally: Tally, engine: Engine, server: SendGridTestServer, week: IsoWeek) -> None:
    """Compare what SendGrid received for `week` with who should have, and with the ledger."""
    received = server.deliveries()
    duplicates = sorted(e for e, n in received.items() if n > 1)
    gaps = sorted(ACTIVE - set(received))
    strangers = sorted(set(received) - ACTIVE)
    recorded = _ledger_sent(engine, week)
    disagreements = recorded.symmetric_difference(received)
    tally.duplicates += len(duplicates)
    tally.gaps += len(gaps) + len(strangers)
    tally.ledger_disagreements += len(disagreements)
    tally.lookups += server.stats()["lookups"]
    if duplicates or gaps or strangers or disagreements:
        tally.notes.append(
            f"{week}: duplicates {duplicates[:3]}, gaps {gaps[:3]}, strangers {strangers[:3]}, "
            f"ledger differs for {sorted(disagreements)[:3]}; ledger {ledger(engine, week)}"
        )


# --------------------------------------------------------------------------- the crash loop


@pytest.mark.parametrize("in_flight", [1, 4], ids=["one batch in flight", "four in flight"])
def test_a_send_killed_at_random_points_reaches_every_reader_exactly_once(
    engine: Engine,
    env: dict[str, str],
    sendgrid: SendGridTestServer,
    readers: None,
    in_flight: int,
) -> None:
    rng = random.Random(f"{SEED}-{engine.dialect.name}-{in_flight}")
    env = env | {"DIGEST_BATCHES_IN_FLIGHT": str(in_flight)}
    sendgrid.state.delay = 0.02  # a request spends a moment at SendGrid: kills land inside it
    tally = Tally()

    for trial in range(TRIALS):
        week = WEEK + trial
        build_issue(engine, week)
        sendgrid.state.reset()
        sendgrid.state.delay = 0.02
        for _ in range(rng.randint(1, 3)):  # this issue's run is killed up to three times
            if not _kill_at_random(start_send(env, week), sendgrid, rng):
                break
            tally.kills += 1
            open_now = _open_batches(engine, week)
            assert open_now <= in_flight, f"a kill left {open_now} batches claimed"
            tally.most_open = max(tally.most_open, open_now)
            # A lapsed lease stands for minutes, in which SendGrid has finished the killed
            # sender's request: a resumed run must not ask before the server has recorded it.
            wait_for(lambda: sendgrid.state.open_requests == 0, 10, "SendGrid's open requests")
            lease_runs_out(engine, week)
        _run_to_the_end(env, week)
        tally.trials += 1
        _count(tally, engine, sendgrid, week)
        assert ledger(engine, week) == {"sent": READERS}

    print(f"\ncrash loop ({engine.dialect.name}): {tally}")
    assert (tally.duplicates, tally.gaps, tally.ledger_disagreements) == (0, 0, 0), tally.notes
    assert tally.trials == TRIALS and tally.kills >= TRIALS // 2
    if in_flight > 1:  # the kills really landed with several batches at SendGrid
        assert tally.most_open >= 2, tally


def test_two_senders_started_together_send_each_reader_once_even_when_killed(
    engine: Engine,
    env: dict[str, str],
    sendgrid: SendGridTestServer,
    readers: None,
) -> None:
    rng = random.Random(f"{SEED}-pair-{engine.dialect.name}")
    sendgrid.state.delay = 0.1  # slow enough that the second sender starts while the first sends
    build_issue(engine)
    tally = Tally()
    if engine.dialect.name == "postgresql":
        # PostgreSQL: the two share the send (both exit 0, neither is busy); a kill of one
        # mid-send is tests/test_shared_sends.py's.
        pair = [start_send(env), start_send(env)]
        outputs = [(p.wait(timeout=180), p.communicate()[0].decode()) for p in pair]
        assert [code for code, _ in outputs] == [0, 0], outputs
        assert all("busy" not in out for _, out in outputs), outputs
        each = [int(re.search(r"sent ([\d,]+),", out)[1].replace(",", "")) for _, out in outputs]  # type: ignore[index]
        assert sum(each) == READERS and min(each) > 0, outputs  # both sent a share
        tally.trials = 1
        _count(tally, engine, sendgrid, WEEK)
        assert (tally.duplicates, tally.gaps, tally.ledger_disagreements) == (0, 0, 0), tally.notes
        assert ledger(engine) == {"sent": READERS}
        return

    # SQLite, one sender at a time. Round one: both start at the same moment; one sends, the
    # other finds it busy and stops.
    # Then the one that sends is killed mid-send.
    pair = [start_send(env), start_send(env)]
    enough = rng.randint(2, BATCHES // 2)
    wait_for(
        lambda: any(p.poll() is not None for p in pair) and sendgrid.stats()["accepted"] >= enough
    )
    outputs = []
    for proc in pair:
        if proc.poll() is None:
            proc.kill()
            tally.kills += 1
        out, _ = proc.communicate(timeout=10)
        outputs.append((proc.returncode, out.decode()))
    busy = [out for code, out in outputs if code == 2 and "another process" in out]
    assert len(busy) == 1 and tally.kills == 1, outputs
    wait_for(
        lambda: sendgrid.state.open_requests == 0, 10, "SendGrid's open requests"
    )  # as in the loop above
    lease_runs_out(engine, WEEK)

    # Round two: both start together again; one resumes to the end, the other is busy (or, if
    # it came late, finds the issue already sent).
    pair = [start_send(env), start_send(env)]
    outputs = [(p.wait(timeout=180), p.communicate()[0].decode()) for p in pair]
    assert sorted(code for code, _ in outputs) in ([0, 0], [0, 2]), outputs
    assert any(code == 0 and "already sent" not in out for code, out in outputs), outputs

    tally.trials = 1
    _count(tally, engine, sendgrid, WEEK)
    assert (tally.duplicates, tally.gaps, tally.ledger_disagreements) == (0, 0, 0), tally.notes
    assert ledger(engine) == {"sent": READERS}
