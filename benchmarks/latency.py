"""The latency benchmark: `digest send` to 20,000 readers through a fake SendGrid that takes
0.25 s to answer each request, with 1, 4 and 8 batches in flight.

One batch at a time, the send waits out every answer in turn (20 requests × 0.25 s = 5 s of
waiting alone); with several in flight the waits overlap. Each run is a child process on a
fresh copy of the same SQLite database, measured with wait4; the fake SendGrid is a process of
its own, which counts what every address received so "exactly once" is checked at the provider
and in the ledger.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import ChildRun, FakeSendGrid, Goal, base_env, run_child, text_table
from benchmarks.send import prepare_issue
from digest.model.weeks import IsoWeek

__all__ = ["LatencyResult", "latency_goals", "latency_table", "run_latency"]

WEEK = IsoWeek(2026, 18)
BUILT_AT = datetime(2026, 4, 27, 8, 0, tzinfo=UTC)
READERS = 20_000
DELAY = 0.25  # seconds the fake SendGrid takes to answer each mail/send request
IN_FLIGHT = (1, 4, 8)
DEFAULT_IN_FLIGHT = 4  # Settings.batches_in_flight's default: the goal is measured with it
GOAL_SECONDS = 2.0
ISSUE_TERMS = 50
SEED = 20260417


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """One `digest send` with `in_flight` batches at once: what it took and whom it reached."""

    in_flight: int
    readers: int
    delay: float
    run: ChildRun  # the whole process: start-up, imports, the send
    send_seconds: float  # the send alone, as `digest send` prints it (-1: not found)
    api_calls: int
    max_open_requests: int  # the most requests the fake SendGrid had open at once
    ledger_sent: int
    problems: tuple[str, ...]

    @property
    def exactly_once(self) -> bool:
        return not self.problems


def _prepare(workdir: Path, readers: int) -> Path:
    """A migrated SQLite file with `readers` subscribers and the week's built issue."""
    path = workdir / "template.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    prepare_issue(
        workdir,
        f"sqlite:///{path}",
        readers,
        SEED,
        week=WEEK,
        built_at=BUILT_AT,
        terms_count=ISSUE_TERMS,
    )
    # Fold the write-ahead log into the file, so one copy of it is the whole database.
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _configure(server: FakeSendGrid, delay: float) -> None:
    body = json.dumps({"delay": delay, "keep_payloads": 0}).encode()
    request = urllib.request.Request(f"{server.url}/_test/config", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass


def _deliveries(server: FakeSendGrid) -> dict[str, int]:
    with urllib.request.urlopen(f"{server.url}/_test/deliveries", timeout=60) as response:
        data: dict[str, int] = json.loads(response.read())
        return data


def _send_seconds(run: ChildRun) -> float:
    """The send's own duration as `digest send` prints it ("… in 1.3 s (20 batches, …"), to a
    tenth of a second: the wall time less start-up and imports. -1 when it is not there."""
    match = re.search(r" in (\d+(?:\.\d+)?) s \(\d+ batch", run.stdout)
    return float(match.group(1)) if match else -1.0


def _requests(run: ChildRun) -> int:
    match = re.search(r"(\d+) requests?\)", run.stdout)
    return int(match.group(1)) if match else -1


def _measure(
    workdir: Path, template: Path, server: FakeSendGrid, in_flight: int, readers: int, delay: float
) -> LatencyResult:
    path = workdir / f"send-{in_flight}.db"
    shutil.copyfile(template, path)
    url = f"sqlite:///{path}"
    env = {
        **base_env(workdir, url),
        **server.env(),
        "DIGEST_BATCHES_IN_FLIGHT": str(in_flight),
    }
    server.reset()
    _configure(server, delay)
    try:
        run = run_child(["-m", "digest.cli", "send", "--week", str(WEEK)], env)
        stats = server.stats()
        received = _deliveries(server)
        with sqlite3.connect(path) as conn:
            (ledger_sent,) = conn.execute(
                "SELECT count(*) FROM deliveries WHERE status = 'sent'"
            ).fetchone()
            (expected,) = conn.execute(
                "SELECT count(*) FROM subscribers WHERE status = 'active'"
            ).fetchone()
            sent_to = {
                email.lower()
                for (email,) in conn.execute(
                    "SELECT s.email FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
                    " WHERE d.status = 'sent'"
                )
            }
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    problems: list[str] = []
    if run.returncode != 0:
        problems.append(f"digest send exited {run.returncode}: {run.stderr.strip()[-300:]}")
    twice = sum(1 for n in received.values() if n > 1)
    if len(received) != expected or twice:
        problems.append(
            f"the server saw {len(received)} distinct readers ({twice} more than once), "
            f"expected {expected} once each"
        )
    if ledger_sent != expected or set(received) != sent_to:
        problems.append(
            f"the ledger records {ledger_sent} sent; {len(set(received) ^ sent_to)} readers "
            "differ between the ledger and the server"
        )
    if stats["rejected"]:
        problems.append(f"the server rejected requests: {stats['rejected'][:1]}")
    return LatencyResult(
        in_flight=in_flight,
        readers=readers,
        delay=delay,
        run=run,
        send_seconds=_send_seconds(run),
        api_calls=_requests(run),
        max_open_requests=int(stats["max_open_requests"]),
        ledger_sent=int(ledger_sent),
        problems=tuple(problems),
    )


def run_latency(
    workdir: Path,
    *,
    readers: int = READERS,
    delay: float = DELAY,
    in_flight: Sequence[int] = IN_FLIGHT,
) -> list[LatencyResult]:
    """Send to `readers` subscribers through a fake SendGrid answering in `delay` s, once per
    number of batches in flight, each on a fresh copy of the same database."""
    workdir.mkdir(parents=True, exist_ok=True)
    template = _prepare(workdir, readers)
    server = FakeSendGrid(workdir)
    try:
        return [_measure(workdir, template, server, n, readers, delay) for n in in_flight]
    finally:
        server.stop()
        template.unlink(missing_ok=True)


def latency_goals(results: Sequence[LatencyResult]) -> list[Goal]:
    """Issue 17, goal 2: ≤ 2 s with the default batches in flight; every reader exactly once."""
    goals: list[Goal] = []
    default = [r for r in results if r.in_flight == DEFAULT_IN_FLIGHT]
    sequential = [r for r in results if r.in_flight == 1]
    for result in default:
        before = f" (one at a time: {sequential[0].run.seconds:.2f} s)" if sequential else ""
        goals.append(
            Goal(
                name=(
                    f"send {result.readers:,} readers through a {result.delay:g} s provider, "
                    f"{result.in_flight} batches in flight: ≤ {GOAL_SECONDS:g} s"
                ),
                met=result.run.seconds <= GOAL_SECONDS,
                measured=(
                    f"{result.run.seconds:.2f} s wall, the send itself "
                    f"{result.send_seconds:.2f} s{before}"
                ),
            )
        )
    bad = [r for r in results if r.problems]
    goals.append(
        Goal(
            name="latency sends: every reader exactly once (server and ledger)",
            met=bool(results) and not bad,
            measured="; ".join(f"{r.in_flight} in flight: {'; '.join(r.problems)}" for r in bad)
            or f"{len(results)} sends, each reader once",
            correctness=True,
        )
    )
    return goals


def latency_table(results: Sequence[LatencyResult]) -> str:
    """One line per send: batches in flight, wall and send seconds, requests, exactly once."""
    header = [
        "in flight", "readers", "delay s", "wall s", "send s", "CPU s", "requests",
        "open at most", "ledger sent", "exactly once",
    ]  # fmt: skip
    rows = [
        [
            str(r.in_flight), f"{r.readers:,}", f"{r.delay:.2f}", f"{r.run.seconds:.2f}",
            f"{r.send_seconds:.2f}", f"{r.run.cpu:.2f}", str(r.api_calls),
            str(r.max_open_requests), f"{r.ledger_sent:,}", "yes" if r.exactly_once else "NO",
        ]
        for r in results
    ]  # fmt: skip
    return text_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--readers", type=int, default=READERS)
    parser.add_argument("--delay", type=float, default=DELAY)
    parser.add_argument(
        "--in-flight", default=",".join(map(str, IN_FLIGHT)), help="e.g. 1,4,8 (comma-separated)"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.in_flight.split(",") if n.strip()]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="digest-latency-") as scratch:
        workdir = args.workdir or Path(scratch)
        results = run_latency(workdir, readers=args.readers, delay=args.delay, in_flight=counts)
    print(latency_table(results))
    print()
    for goal in latency_goals(results):
        print(f"[{'met' if goal.met else 'MISSED'}] {goal.name}: {goal.measured}")
    print(f"\n({time.perf_counter() - started:.1f} s in all)")
    return 0 if all(g.met for g in latency_goals(results) if g.correctness) else 1


if __name__ == "__main__":
    sys.exit(main())
