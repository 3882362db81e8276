"""A dead sender's lease does not hold its issue: a claimant on the same host that can prove the
holder gone (another boot, or no process with that pid and start time) takes the lease over at
once; a live holder, a holder on another host and one that cannot be checked are waited out.

The owner facts come from the real /proc of this machine (Linux); real child processes stand in
for live and dead senders. The end-to-end tests kill a real `digest send` / `digest run` with
SIGKILL and run it again at once, with the default five-minute lease.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select, update
from typer.testing import CliRunner

from digest.cli import app
from digest.config import Settings
from digest.delivery.outbox import OutboxTransport
from digest.delivery.runner import retry_failed, send_issue
from digest.model.owner import Machine, Owner
from digest.model.weeks import IsoWeek
from digest.owner import (
    Liveness,
    ProcessInfo,
    current_owner,
    judge,
    owner_liveness,
    parse_stat,
    probe_process,
    this_machine,
)
from digest.store.db import deliveries, issues, subscribers, utcnow
from digest.store.issues import (
    claim_send,
    get_issue,
    lease_holder,
    list_issues,
    release_send,
    transition,
)
from tests.forked_python import ForkedPython
from tests.sendgrid_server import SendGridTestServer
from tests.sending import (
    NOW,
    REPO,
    WEEK,
    build_issue,
    cli_env,
    lease_runs_out,
    ledger,
    run_send,
    seed_subscribers,
    send_leases_of,
    sendgrid_transport,
    start_send,
)

LEASE = timedelta(minutes=5)
HERE = Machine("sender-1", "boot-a", "pid:[4026531836]")


def owner(
    machine: Machine = HERE, pid: int = 4242, started: int | None = 1000, run: str = "r1"
) -> Owner:
    return Owner(machine, pid, started, run)


def probe_of(seen: dict[int, ProcessInfo | str]) -> Callable[[int], ProcessInfo | str]:
    return lambda pid: seen.get(pid, "absent")  # type: ignore[return-value]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process on this host, standing in for a sender that is still at work."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait(10)


def dead_process() -> int:
    """The pid of a process that ran on this host and has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


def owner_of(pid: int) -> Owner:
    """The owner facts a process `pid` on this machine would record."""
    seen = probe_process(pid)
    assert isinstance(seen, ProcessInfo), seen
    return Owner(this_machine(), pid, seen.started, "child")


# --------------------------------------------------------------------------- the owner, pure


def test_stat_is_read_after_the_last_parenthesis_since_the_command_name_may_hold_some() -> None:
    fields = " ".join(["S", *map(str, range(4, 22)), "987654", "0"])
    assert parse_stat(f"4242 (digest ) S (x)) {fields}") == ProcessInfo(987654, zombie=False)
    assert parse_stat(f"4242 (a b) {fields.replace('S', 'Z', 1)}") == ProcessInfo(987654, True)
    assert parse_stat("4242 (no fields)") is None
    assert parse_stat("") is None


def test_an_owner_is_gone_when_its_host_has_booted_again() -> None:
    verdict = judge(owner(replace(HERE, boot_id="boot-old")), HERE, probe_of({}))
    assert verdict == Liveness("gone", "host sender-1 has booted again since it started")


def test_an_owner_is_gone_when_no_process_has_its_pid() -> None:
    verdict = judge(owner(), HERE, probe_of({}))
    assert verdict == Liveness("gone", "no process with pid 4242 is running")


def test_a_reused_pid_is_not_mistaken_for_the_owner() -> None:
    later = probe_of({4242: ProcessInfo(started=5000, zombie=False)})
    assert judge(owner(started=1000), HERE, later).state == "gone"
    assert "another process" in judge(owner(started=1000), HERE, later).reason


def test_a_killed_owner_its_parent_has_not_reaped_yet_is_gone() -> None:
    zombie = probe_of({4242: ProcessInfo(started=1000, zombie=True)})
    assert judge(owner(), HERE, zombie).state == "gone"


def test_a_running_owner_on_this_host_is_running() -> None:
    alive = probe_of({4242: ProcessInfo(started=1000, zombie=False)})
    assert judge(owner(), HERE, alive) == Liveness("running", "pid 4242 is still running")


def test_an_owner_on_another_host_cannot_be_checked_from_here() -> None:
    elsewhere = owner(Machine("sender-2", "boot-a", HERE.pid_ns))
    assert judge(elsewhere, HERE, probe_of({})).state == "elsewhere"


@pytest.mark.parametrize(
    ("holder", "here", "seen"),
    [
        pytest.param(None, HERE, {}, id="holder-recorded-no-process"),
        pytest.param(owner(replace(HERE, boot_id=None)), HERE, {}, id="no-boot-id-there"),
        pytest.param(owner(), replace(HERE, boot_id=None), {}, id="no-boot-id-here"),
        pytest.param(owner(replace(HERE, pid_ns="pid:[1]")), HERE, {}, id="other-pid-namespace"),
        pytest.param(owner(replace(HERE, pid_ns=None)), HERE, {}, id="no-pid-namespace"),
        pytest.param(owner(started=None), HERE, {}, id="no-start-time"),
        pytest.param(owner(), HERE, {4242: "hidden"}, id="hidden-by-hidepid"),
        pytest.param(
            owner(Machine("localhost", "boot-old", None)),
            Machine("localhost", "boot-a", None),
            {},
            id="anonymous-host-name",
        ),
    ],
)
def test_an_owner_that_cannot_be_checked_is_never_judged_gone(
    holder: Owner | None, here: Machine, seen: dict[int, ProcessInfo | str]
) -> None:
    assert judge(holder, here, probe_of(seen)).state == "unknown"


def test_the_recorded_owner_survives_the_database_and_a_bad_record_is_no_owner() -> None:
    me = current_owner()
    assert Owner.from_json(me.to_json()) == me
    assert len(me.token) <= 64
    assert Owner.from_json(None) is None
    assert Owner.from_json({"host": "h", "pid": "12", "run": "r"}) is None
    assert Owner.from_json({"host": "h", "pid": True, "run": "r"}) is None
    assert Owner.from_json(["h", 12]) is None


# --------------------------------------------------------------------------- the owner, this machine


def test_this_process_is_running_by_its_own_facts_and_not_by_another_start_time() -> None:
    me = current_owner()
    assert me.machine.boot_id and me.machine.pid_ns and me.started is not None
    assert owner_liveness(me).state == "running"
    # Same pid, another start time: what the kernel handing our pid on would look like.
    reused = replace(me, started=me.started - 1)
    assert owner_liveness(reused) == Liveness(
        "gone", f"pid {me.pid} is now another process, started later"
    )


def test_a_child_is_running_until_killed_then_a_zombie_then_absent() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child = owner_of(proc.pid)
        assert owner_liveness(child).state == "running"
        proc.kill()
        deadline = time.monotonic() + 10
        while probe_process(proc.pid) != "absent" and not _zombie(proc.pid):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert owner_liveness(child).state == "gone"  # killed, not yet reaped
    finally:
        proc.kill()
        proc.wait(10)
    assert probe_process(proc.pid) == "absent"
    assert owner_liveness(child) == Liveness("gone", f"no process with pid {proc.pid} is running")


def _zombie(pid: int) -> bool:
    seen = probe_process(pid)
    return isinstance(seen, ProcessInfo) and seen.zombie


def test_without_proc_an_owner_records_what_it_cannot_tell_and_is_waited_out(
    tmp_path: Path,
) -> None:
    blind = current_owner(proc=tmp_path)  # a platform without /proc
    assert (blind.machine.boot_id, blind.machine.pid_ns, blind.started) == (None, None, None)
    assert owner_liveness(blind).state == "unknown"
    verdict = judge(owner_of(os.getpid()), this_machine(tmp_path), probe_process)
    assert verdict.state == "unknown"


# --------------------------------------------------------------------------- claim_send


def _claimed_by(engine: Engine, holder: Owner | str, until: timedelta = LEASE) -> None:
    assert claim_send(engine, WEEK, holder, until, now=utcnow())


def test_a_dead_owner_on_this_host_is_taken_over_at_once_and_the_takeover_is_logged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    build_issue(engine)
    dead = replace(owner_of(os.getpid()), pid=dead_process(), run="dead")
    _claimed_by(engine, dead)
    me = current_owner()

    with caplog.at_level(logging.WARNING, logger="digest.store.issues"):
        claim = claim_send(engine, WEEK, me, LEASE, judge_holder=owner_liveness, now=utcnow())

    assert claim and claim.took_over
    assert claim.holder is not None and claim.holder.owner == dead
    assert claim.liveness == Liveness("gone", f"no process with pid {dead.pid} is running")
    holder = lease_holder(engine, WEEK)
    assert holder is not None and (holder.token, holder.owner) == (me.token, me)
    [record] = [r for r in caplog.records if r.getMessage() == "send_lease_taken_over"]
    assert record.levelno == logging.WARNING
    assert record.digest_fields == {
        "week": str(WEEK),
        "holder": dead.describe(),
        "lease_until": claim.holder.until.isoformat(),  # type: ignore[union-attr]
        "reason": f"no process with pid {dead.pid} is running",
    }


def test_a_live_owner_on_this_host_is_never_taken_over(
    engine: Engine, sleeper: subprocess.Popen[bytes]
) -> None:
    build_issue(engine)
    live = owner_of(sleeper.pid)
    _claimed_by(engine, live)

    for _ in range(3):
        claim = claim_send(
            engine, WEEK, current_owner(), LEASE, judge_holder=owner_liveness, now=utcnow()
        )
        assert not claim
        assert claim.liveness == Liveness("running", f"pid {sleeper.pid} is still running")
    holder = lease_holder(engine, WEEK)
    assert holder is not None and holder.owner == live


def test_a_lease_held_on_another_host_is_waited_out_until_it_lapses(engine: Engine) -> None:
    build_issue(engine)
    start = datetime.now(UTC)
    foreign = Owner(Machine("sender-2.example.org", "b", "pid:[1]"), 4242, 1000, "far")
    assert claim_send(engine, WEEK, foreign, LEASE, now=start)
    me = current_owner()

    claim = claim_send(
        engine, WEEK, me, LEASE, now=start + timedelta(minutes=4), judge_holder=owner_liveness
    )
    assert not claim and claim.liveness is not None and claim.liveness.state == "elsewhere"
    assert claim.holder is not None and claim.holder.until == start + LEASE

    later = start + LEASE + timedelta(seconds=1)
    assert claim_send(engine, WEEK, me, LEASE, now=later, judge_holder=owner_liveness)
    assert lease_holder(engine, WEEK).owner == me  # type: ignore[union-attr]


def test_a_lease_whose_holder_recorded_no_process_is_waited_out(engine: Engine) -> None:
    build_issue(engine)
    _claimed_by(engine, "other-host:1")  # a bare token, as older digests stored
    claim = claim_send(
        engine, WEEK, current_owner(), LEASE, judge_holder=owner_liveness, now=utcnow()
    )
    assert not claim and claim.liveness is not None and claim.liveness.state == "unknown"


def test_a_renewal_never_takes_a_lease_over(engine: Engine) -> None:
    build_issue(engine)
    dead = replace(owner_of(os.getpid()), pid=dead_process(), run="dead")
    _claimed_by(engine, dead)
    assert not claim_send(engine, WEEK, current_owner(), LEASE, now=utcnow())  # no judge: a renewal
    assert lease_holder(engine, WEEK).owner == dead  # type: ignore[union-attr]


def test_pid_reuse_is_detected_so_the_dead_owner_of_a_reused_pid_is_taken_over(
    engine: Engine,
) -> None:
    build_issue(engine)
    mine = owner_of(os.getpid())
    # The owner had our pid once, in an earlier process life: same pid, earlier start time.
    earlier = replace(mine, started=mine.started - 100, run="earlier")  # type: ignore[operator]
    _claimed_by(engine, earlier)
    claim = claim_send(
        engine, WEEK, current_owner(), LEASE, judge_holder=owner_liveness, now=utcnow()
    )
    assert claim.took_over and claim.liveness is not None
    assert claim.liveness.reason == f"pid {mine.pid} is now another process, started later"


def test_two_claimants_racing_for_a_dead_owners_lease_have_exactly_one_winner(
    engine: Engine,
) -> None:
    rounds, contenders = 8, 2
    for n in range(rounds):
        build_issue(engine, WEEK + n)
    for n in range(rounds):
        week = WEEK + n
        dead = replace(owner_of(os.getpid()), pid=dead_process(), run=f"dead{n}")
        assert claim_send(engine, week, dead, LEASE, now=utcnow())
        # Both have judged the holder dead before either swaps: the swap alone must decide.
        judged = threading.Barrier(contenders)

        def judge_then_wait(holder: Owner | None, judged: threading.Barrier = judged) -> Liveness:
            verdict = owner_liveness(holder)
            judged.wait(10)
            return verdict

        wins: list[str] = []
        claimants = [current_owner() for _ in range(contenders)]

        def contend(
            me: Owner, week: IsoWeek = week, wins: list[str] = wins, j=judge_then_wait
        ) -> None:
            if claim_send(engine, week, me, LEASE, judge_holder=j, now=utcnow()):
                wins.append(me.token)

        threads = [threading.Thread(target=contend, args=(me,)) for me in claimants]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(wins) == 1, f"round {n}: {wins}"
        assert lease_holder(engine, week).token == wins[0]  # type: ignore[union-attr]


def test_a_takeover_loses_to_a_holder_that_renewed_after_it_was_judged(engine: Engine) -> None:
    build_issue(engine)
    holder = replace(owner_of(os.getpid()), pid=dead_process(), run="slow")
    _claimed_by(engine, holder)

    def misjudge(seen: Owner | None) -> Liveness:
        # Judged dead, wrongly, and it renews before the swap: the swap must not match.
        assert claim_send(engine, WEEK, holder, LEASE + timedelta(seconds=5), now=utcnow())
        return Liveness("gone", "judged wrongly")

    assert not claim_send(engine, WEEK, current_owner(), LEASE, judge_holder=misjudge, now=utcnow())
    assert lease_holder(engine, WEEK).owner == holder  # type: ignore[union-attr]


def test_release_clears_the_recorded_owner_too(engine: Engine) -> None:
    build_issue(engine)
    me = current_owner()
    _claimed_by(engine, me)
    assert get_issue(engine, WEEK).claimed_owner == me  # type: ignore[union-attr]
    release_send(engine, WEEK, me)
    stored = get_issue(engine, WEEK)
    assert stored is not None
    assert (stored.claimed_by, stored.claimed_until, stored.claimed_owner) == (None, None, None)


# --------------------------------------------------------------------------- send_issue, retry


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    return Settings(batch_size=10, sendgrid_timeout=0.5, retry_base_delay=0.01)


@pytest.fixture
def sendgrid() -> Iterator[SendGridTestServer]:
    with SendGridTestServer() as server:
        yield server


def _crashed_mid_batch(engine: Engine, ids: list[int], holder: Owner | str) -> None:
    """The ledger and lease a sender killed with a batch at the provider leaves behind: the
    batch `claimed`, the issue `sending`, the lease still running for minutes."""
    issue = transition(engine, WEEK, "sending", now=NOW)
    rows = [
        {"issue_id": issue.id, "subscriber_id": sid, "batch": 1, "status": "claimed",
         "attempts": 0, "claimed_at": NOW}
        for sid in ids
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(deliveries), rows)
    _claimed_by(engine, holder)


def _dead_sender() -> Owner:
    return replace(owner_of(os.getpid()), pid=dead_process(), run="killed")


def test_a_send_after_its_sender_was_killed_resumes_at_once_and_the_outbox_settles_its_batch(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    ids = seed_subscribers(engine, 25)
    build_issue(engine)
    _crashed_mid_batch(engine, ids[:10], _dead_sender())  # the outbox never got batch 1

    summary = send_issue(
        engine, settings, OutboxTransport(tmp_path / "outbox", clock=utcnow), WEEK, now=NOW
    )

    # The outbox knows at once that batch 1 is not on disk: it is sent, nobody is skipped.
    assert (summary.status, summary.sent, summary.uncertain) == ("sent", 25, 0)
    assert ledger(engine) == {"sent": 25}
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 25


def test_a_send_that_takes_over_at_once_records_a_batch_sendgrid_has_as_sent(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    ids = seed_subscribers(engine, 25)
    build_issue(engine)
    _crashed_mid_batch(engine, ids[:10], _dead_sender())
    issue = get_issue(engine, WEEK)
    assert issue is not None
    from digest.delivery.ledger import batch_key
    from digest.delivery.personalise import issue_message, subscriber_recipient

    went_out = [subscriber_recipient(settings, sid, f"reader{i}@example.org", "Reader")
                for i, sid in enumerate(ids[:10])]  # fmt: skip
    sendgrid_transport(sendgrid).send(issue_message(settings, issue, went_out, batch_key(issue, 1)))

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    # Batch 1 recorded from the lookup, not re-sent: two requests for the other 15 readers.
    assert (summary.status, summary.sent, summary.api_calls, summary.uncertain) == (
        "sent", 25, 2, 0,
    )  # fmt: skip
    assert ledger(engine) == {"sent": 25}
    assert set(sendgrid.deliveries().values()) == {1} and len(sendgrid.deliveries()) == 25


def test_sendgrid_not_finding_a_batch_just_taken_over_is_no_proof_so_the_policy_decides(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    ids = seed_subscribers(engine, 25)
    build_issue(engine)
    _crashed_mid_batch(engine, ids[:10], _dead_sender())

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    # SendGrid's activity feed lags: "not found" seconds after the kill may be a batch that did
    # go out. Within the dead sender's lease it is "cannot tell", and the default policy skips.
    assert (summary.status, summary.sent, summary.uncertain) == ("sent", 15, 10)
    assert ledger(engine) == {"sent": 15, "skipped": 10}
    with engine.connect() as conn:
        errors = set(
            conn.execute(
                select(deliveries.c.error).where(deliveries.c.status == "skipped")
            ).scalars()
        )
    [error] = errors
    assert error.startswith("uncertain: its sender was killed mid-request and taken over at once")
    assert "DIGEST_AMBIGUOUS_BATCHES=skip" in error
    assert len(sendgrid.deliveries()) == 15


def test_sendgrid_not_finding_a_batch_of_a_lapsed_lease_is_believed_as_before(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    ids = seed_subscribers(engine, 25)
    build_issue(engine)
    _crashed_mid_batch(engine, ids[:10], _dead_sender())
    lease_runs_out(engine)

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.uncertain) == ("sent", 25, 0)
    assert len(sendgrid.deliveries()) == 25


def test_a_send_waits_out_a_lease_held_on_another_host_and_says_which_and_until_when(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    foreign = Owner(Machine("sender-2.example.org", "b", "pid:[1]"), 4242, 1000, "far")
    _claimed_by(engine, foreign)
    until = lease_holder(engine, WEEK).until  # type: ignore[union-attr]

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert summary.status == "busy" and sendgrid.stats()["requests"] == 0
    assert summary.reason == (
        "another process is sending this issue: held by host sender-2.example.org until "
        f"{until:%Y-%m-%d %H:%M:%S} UTC (pid 4242 there; a process on another machine cannot be "
        "checked from here, so its lease is waited out)"
    )


def test_a_send_beside_a_live_sender_on_this_host_is_busy_and_names_it(
    engine: Engine,
    settings: Settings,
    sendgrid: SendGridTestServer,
    sleeper: subprocess.Popen[bytes],
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    _claimed_by(engine, owner_of(sleeper.pid))

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert summary.status == "busy" and sendgrid.stats()["requests"] == 0
    assert summary.reason is not None
    assert summary.reason.startswith(
        f"another process is sending this issue: held by pid {sleeper.pid} on host "
        f"{this_machine().host}, which is running, until "
    )


def test_a_retry_of_failed_rows_takes_over_a_dead_senders_lease_too(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    ids = seed_subscribers(engine, 5)
    build_issue(engine)
    issue = transition(engine, WEEK, "sending", now=NOW)
    with engine.begin() as conn:
        conn.execute(insert(deliveries), [
            {"issue_id": issue.id, "subscriber_id": sid, "batch": 1, "status": "failed",
             "attempts": 1, "claimed_at": NOW, "error": "SendGrid refused"}
            for sid in ids
        ])  # fmt: skip
    _claimed_by(engine, _dead_sender())

    summary = retry_failed(
        engine, settings, OutboxTransport(tmp_path / "outbox", clock=utcnow), WEEK, now=NOW
    )

    assert (summary.status, summary.sent) == ("sent", 5)
    assert ledger(engine) == {"sent": 5}


# --------------------------------------------------------------------------- digest status


runner = CliRunner()


def _status_line(settings_env: dict[str, str]) -> str:
    """`digest status`'s issue row, its table folding undone."""
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split()).split(" issue ", 1)[1].split(" deliveries ")[0]


def test_status_says_a_dead_senders_issue_can_be_resumed_now(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    ids = seed_subscribers(engine, 5)
    build_issue(engine)
    dead = _dead_sender()
    _crashed_mid_batch(engine, ids[:2], dead)

    assert _status_line(settings_env) == (
        f"{WEEK} attention — sending — held by pid {dead.pid} on host {dead.host}, which is no "
        f"longer running (no process with pid {dead.pid} is running); "
        f"`digest send --week {WEEK}` resumes it now"
    )


def test_status_says_until_when_a_lease_on_another_host_holds_the_issue(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    ids = seed_subscribers(engine, 5)
    build_issue(engine)
    foreign = Owner(Machine("sender-2.example.org", "b", "pid:[1]"), 4242, 1000, "far")
    _crashed_mid_batch(engine, ids[:2], foreign)
    until = lease_holder(engine, WEEK).until  # type: ignore[union-attr]

    line = _status_line(settings_env)
    assert line.startswith(
        f"{WEEK} attention — sending — held by host sender-2.example.org until "
        f"{until:%Y-%m-%d %H:%M:%S} UTC"
    )
    assert "resumes it now" not in line


def test_status_of_a_sending_issue_nobody_holds_says_a_send_resumes_it(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    transition(engine, WEEK, "sending", now=NOW)

    assert _status_line(settings_env) == (
        f"{WEEK} attention — sending — no process is sending it; "
        f"`digest send --week {WEEK}` resumes it now"
    )


def test_a_restarted_run_resumes_a_dead_senders_send_now_and_waits_only_for_a_live_lease(
    engine: Engine,
) -> None:
    from digest.service import _resume_time

    build_issue(engine)
    now = datetime.now(UTC)
    _claimed_by(engine, _dead_sender())
    assert _resume_time(engine, WEEK, now) is None  # now

    release_send(engine, WEEK, lease_holder(engine, WEEK).token)  # type: ignore[union-attr]
    foreign = Owner(Machine("sender-2.example.org", "b", "pid:[1]"), 4242, 1000, "far")
    _claimed_by(engine, foreign)
    until = lease_holder(engine, WEEK).until  # type: ignore[union-attr]
    assert _resume_time(engine, WEEK, now) == until + timedelta(seconds=1)
    assert _resume_time(engine, WEEK, until + timedelta(seconds=1)) is None  # it lapsed


# --------------------------------------------------------------------------- kill -9, then at once

# `digest send` killed with SIGKILL at seeded random points, then run again at once, with the
# default five-minute lease: before takeovers every such rerun answered "busy" for minutes.
TRIALS = int(os.environ.get("DIGEST_TAKEOVER_TRIALS", "3"))
SEED = int(os.environ.get("DIGEST_CRASH_SEED", "20260302"))
READERS = 1000
BATCH = 100


def _kill_at_random(proc: ForkedPython, progress: Callable[[], int], rng: random.Random) -> bool:
    """SIGKILL `proc` at a random moment of its send; False when it finished first."""
    if rng.random() < 0.25:  # anywhere from start-up into the first batches
        deadline = time.monotonic() + rng.uniform(0.0, 1.5)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
    else:  # after some of this run's batches, then a little more: claiming, sending, recording
        target = progress() + rng.randrange(0, READERS // BATCH)
        while progress() <= target and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.06))
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait(timeout=10)
    return True


def _kill_then_send_at_once(
    env: dict[str, str], week: IsoWeek, progress: Callable[[], int], rng: random.Random
) -> tuple[int, float]:
    """Kill `digest send` up to three times, each started the moment the last was killed, then
    send once more at once; returns the kills and the seconds from the last kill to the end.

    A run that ends before its kill must have finished the issue: "busy" is what a restart
    straight after a kill used to answer, for as long as the dead run's lease had left.
    """
    kills, killed = 0, time.monotonic()
    for _ in range(rng.randint(1, 3)):
        proc = start_send(env, week)
        if not _kill_at_random(proc, progress, rng):
            out = proc.communicate()[0].decode()
            assert proc.returncode == 0, out
            return kills, time.monotonic() - killed
        kills += 1
        killed = time.monotonic()
    done = run_send(env, week, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return kills, time.monotonic() - killed


def _rows(engine: Engine, week: IsoWeek, status: str) -> dict[str, str | None]:
    """email → error of the week's ledger rows in `status`."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(subscribers.c.email, deliveries.c.error)
            .select_from(deliveries.join(issues).join(subscribers))
            .where(issues.c.week == str(week), deliveries.c.status == status)
        ).all()
    return {email: error for email, error in rows}


@pytest.mark.slow
def test_after_kill_9_at_random_points_an_immediate_send_finishes_the_issue_through_sendgrid(
    engine: Engine, settings_env: dict[str, str], sendgrid: SendGridTestServer
) -> None:
    rng = random.Random(f"{SEED}-takeover-{engine.dialect.name}")
    seed_subscribers(engine, READERS)
    everyone = {f"reader{i}@example.org" for i in range(READERS)}
    # DIGEST_SEND_LEASE is left at its default (300 s): an immediate rerun must not wait for it.
    env = cli_env(settings_env, sendgrid, DIGEST_BATCH_SIZE=str(BATCH), DIGEST_SENDGRID_TIMEOUT="1")
    kills, waits, uncertain = 0, [], 0

    for trial in range(TRIALS):
        week = WEEK + trial
        build_issue(engine, week)
        sendgrid.state.reset()
        sendgrid.state.keep_payloads = 0
        sendgrid.state.delay = 0.02  # a request spends a moment at SendGrid: kills land inside
        killed, wait = _kill_then_send_at_once(env, week, lambda: sendgrid.stats()["requests"], rng)
        kills += killed
        waits.append(wait)

        received = sendgrid.deliveries()
        skipped = _rows(engine, week, "skipped")
        # Each reader at most once; the ledger agrees with SendGrid; and everyone SendGrid did
        # not get is a reader the ledger itself reports skipped as uncertain, saying why.
        assert {email for email, n in received.items() if n > 1} == set()
        assert set(_rows(engine, week, "sent")) == set(received)
        assert everyone - set(received) == set(skipped)
        assert all(str(error).startswith("uncertain: ") for error in skipped.values()), skipped
        assert get_issue(engine, week).status == "sent"  # type: ignore[union-attr]
        uncertain += len(skipped)
        if skipped:  # and the delivery log shows the reader why, as the operator reads it
            shown = runner.invoke(app, ["deliveries", next(iter(skipped))])
            assert shown.exit_code == 0, shown.output
            assert f"{week}" in shown.output and "uncertain: " in shown.output, shown.output

    print(
        f"\nkill -9 then send at once ({engine.dialect.name}, sendgrid): trials={TRIALS} "
        f"kills={kills} uncertain={uncertain} last-kill-to-sent max={max(waits):.1f} s "
        f"mean={sum(waits) / len(waits):.1f} s (lease 300 s)"
    )
    assert kills >= 1
    assert max(waits) < 60  # seconds, not the lease's five minutes


@pytest.mark.slow
def test_after_kill_9_an_immediate_send_to_the_outbox_reaches_every_reader_exactly_once(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    rng = random.Random(f"{SEED}-takeover-outbox-{engine.dialect.name}")
    seed_subscribers(engine, READERS)
    outbox = Path(settings_env["DIGEST_OUTBOX_DIR"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env |= settings_env | {"DIGEST_BATCH_SIZE": str(BATCH), "PYTHONPATH": str(REPO)}
    kills, waits = 0, []

    for trial in range(2):
        week = WEEK + trial

        def batches_written(week: IsoWeek = week) -> int:
            return len(list((outbox / ".batches").glob(f"{week}-*.json")))

        build_issue(engine, week)
        killed, wait = _kill_then_send_at_once(env, week, batches_written, rng)
        kills += killed
        waits.append(wait)
        # The outbox's lookup is exact: nobody is skipped, and each reader has one file.
        assert ledger(engine, week) == {"sent": READERS}
        assert len(list(outbox.glob(f"{week}-*.eml"))) == READERS

    print(
        f"\nkill -9 then send at once ({engine.dialect.name}, outbox): kills={kills} "
        f"last-kill-to-sent max={max(waits):.1f} s"
    )
    assert max(waits) < 60


# --------------------------------------------------------------------------- digest send says so


def test_digest_send_says_whose_lease_it_took_over_and_why(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    ids = seed_subscribers(engine, 5)
    build_issue(engine)
    dead = _dead_sender()
    _crashed_mid_batch(engine, ids[:2], dead)

    result = runner.invoke(app, ["send", "--week", str(WEEK)])

    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert (
        f"{WEEK}: took the send over at once from pid {dead.pid} on host {dead.host}, which is "
        f"no longer running (no process with pid {dead.pid} is running)"
    ) in out
    assert f"{WEEK}: sent" in out and ledger(engine) == {"sent": 5}


def test_digest_send_beside_a_lease_on_another_host_says_whose_and_until_when(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    foreign = Owner(Machine("sender-2.example.org", "b", "pid:[1]"), 4242, 1000, "far")
    _claimed_by(engine, foreign)
    until = lease_holder(engine, WEEK).until  # type: ignore[union-attr]

    result = runner.invoke(app, ["send", "--week", str(WEEK)])

    assert result.exit_code == 2, result.output
    assert (
        f"{WEEK}: busy: another process is sending this issue: held by host sender-2.example.org "
        f"until {until:%Y-%m-%d %H:%M:%S} UTC (pid 4242 there; a process on another machine "
        "cannot be checked from here, so its lease is waited out); run "
        f"`digest send --week {WEEK}` again once that process has finished or its lease has "
        "run out"
    ) in " ".join(result.output.split())


# --------------------------------------------------------------------------- digest run restarts


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_digest_run_restarted_after_kill_9_resumes_the_send_as_soon_as_it_starts(
    engine: Engine, settings_env: dict[str, str], tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    fired = now - timedelta(hours=1)  # the weekly job fired an hour ago, within the grace window
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env |= settings_env | {
        "PYTHONPATH": str(REPO),
        "DIGEST_SCHEDULE": f"{fired.minute} {fired.hour} * * {(fired.weekday() + 1) % 7}",
        "DIGEST_MISFIRE_GRACE_TIME": str(3 * 3600),
        "DIGEST_BATCH_SIZE": "1",
    }
    seed_subscribers(engine, 300, confirmed_at=now - timedelta(days=1))
    outbox = Path(settings_env["DIGEST_OUTBOX_DIR"])
    logs: list[Path] = []

    def start(*args: str) -> ForkedPython:
        logs.append(tmp_path / f"run-{len(logs)}.log")
        return ForkedPython(
            ["-m", "digest.cli", "run", "--port", str(_free_port()), *args],
            env=env, cwd=tmp_path, output=logs[-1],
        )  # fmt: skip

    first = start("--now")
    try:
        assert _wait_until(lambda: len(list(outbox.glob("*.eml"))) >= 20, 120), logs[0].read_text()
        first.kill()  # kill -9, mid-send
        first.wait(10)
        killed = time.monotonic()
        [stopped] = list_issues(engine)  # the fired week's, cut off mid-send
        # Its lease with its process facts: the issue's (SQLite) or its crew row's (PostgreSQL).
        holders = send_leases_of(engine, stopped.week)
        assert stopped.status == "sending" and [h.owner is not None for h in holders] == [True]
        week = stopped.week
        second = start()  # no --now: the restart itself must resume
        try:
            sent = _wait_until(lambda: get_issue(engine, week).status == "sent", 120)  # type: ignore[union-attr]
            elapsed = time.monotonic() - killed
            log = logs[1].read_text()
            assert sent, log
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert 'reason="resuming an interrupted send"' in log and "at=now" in log
    # Alone, the issue's lease is taken over; in a shared send, the dead member's batches.
    shared = engine.dialect.name == "postgresql"
    assert f"event=send_{'member' if shared else 'lease'}_taken_over" in log
    assert ledger(engine, week) == {"sent": 300}
    assert len(list(outbox.glob("*.eml"))) == 300
    print(f"\ndigest run: kill -9 to a sent issue after the restart: {elapsed:.1f} s (lease 300 s)")
    assert elapsed < 90


def test_a_lease_an_older_digest_took_beside_a_dead_holders_facts_is_waited_out(
    engine: Engine,
) -> None:
    build_issue(engine)
    _claimed_by(engine, _dead_sender())
    lease_runs_out(engine)
    # An older digest takes the lapsed lease: it writes its token and leaves claimed_owner be.
    with engine.begin() as conn:
        conn.execute(
            update(issues)
            .where(issues.c.week == str(WEEK))
            .values(claimed_by="old-host:77:abcd1234", claimed_until=datetime.now(UTC) + LEASE)
        )

    claim = claim_send(
        engine, WEEK, current_owner(), LEASE, judge_holder=owner_liveness, now=utcnow()
    )

    assert not claim and claim.liveness is not None and claim.liveness.state == "unknown"
    assert get_issue(engine, WEEK).lease.owner is None  # type: ignore[union-attr]
