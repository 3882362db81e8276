"""The replica benchmark: 1, 2 and 3 `digest send --week W` processes started together on
PostgreSQL, sharing one issue's send through a fake SendGrid that takes 0.25 s a request.

Each replica joins the issue's crew and claims pages of readers with SKIP LOCKED, keeping up to
DIGEST_BATCHES_IN_FLIGHT batches at the provider; so K replicas could wait out K times as many
answers at once. The floor is what the provider itself makes any implementation wait:
ceil(batches / (replicas × in flight)) answers of 0.25 s one after the other; the process floor
adds what starting a bare Python process costs, since every replica is one. Each run starts
from the same built issue with an empty ledger, and is checked exactly once at the provider
(every address once) and in the ledger.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from benchmarks.common import (
    ChildRun,
    FakeSendGrid,
    Goal,
    base_env,
    postgres_reachable,
    postgres_schema,
    run_child,
    text_table,
)
from benchmarks.send import prepare_issue
from digest.model.weeks import IsoWeek
from digest.store import db

__all__ = ["ReplicaResult", "replicas_goals", "replicas_table", "run_replicas"]

WEEK = IsoWeek(2026, 19)
BUILT_AT = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
DELAY = 0.25  # seconds the fake SendGrid takes to answer each mail/send request
REPLICAS = (1, 2, 3)
IN_FLIGHT = 4  # Settings.batches_in_flight's default
ISSUE_TERMS = 50
SEED = 20260419
# Speed-up goals on the crew's send time, against one replica.
SPEEDUP_GOAL = {2: 1.6, 3: 2.2}
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True, slots=True)
class Replica:
    """One `digest send` child of a run: how it went and what it says it did."""

    run: ChildRun
    sent: int  # its share, "sent N" in its output (-1: not found)
    send_seconds: float  # its send alone as it prints it, to a tenth (-1: not found)


@dataclass(frozen=True, slots=True)
class ReplicaResult:
    """`replicas` senders started together on one issue: the times, the shares, the checks."""

    replicas: int
    readers: int
    batch_size: int
    in_flight: int
    delay: float
    wall: float  # from starting the children until the last one exited
    # The issue's send_started_at → sent_at as the replicas stamped them (microseconds): from
    # the first replica's start of sending to the issue marked sent (-1: not sent).
    crew_send: float
    children: tuple[Replica, ...]
    python_start: float  # a bare `python -c pass` child, median
    requests: int  # mail/send requests the fake SendGrid answered
    max_open_requests: int
    ledger_sent: int
    problems: tuple[str, ...]

    @property
    def batches(self) -> int:
        return math.ceil(self.readers / self.batch_size)

    @property
    def floor(self) -> float:
        """The provider's own answer time: rounds of replicas × in_flight requests at once."""
        return math.ceil(self.batches / (self.replicas * self.in_flight)) * self.delay

    @property
    def process_floor(self) -> float:
        return self.floor + self.python_start

    @property
    def ratio(self) -> float:
        return self.crew_send / self.floor

    @property
    def exactly_once(self) -> bool:
        return not self.problems


def _configure(server: FakeSendGrid, delay: float) -> None:
    body = json.dumps({"delay": delay, "keep_payloads": 0}).encode()
    request = urllib.request.Request(f"{server.url}/_test/config", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass


def _deliveries(server: FakeSendGrid) -> dict[str, int]:
    with urllib.request.urlopen(f"{server.url}/_test/deliveries", timeout=60) as response:
        data: dict[str, int] = json.loads(response.read())
        return data


def _replica(run: ChildRun) -> Replica:
    """Its share and its send's own seconds from its summary line ("sent 6,000, skipped 0,
    failed 0 in 1.3 s (6 batches, …")."""
    share = re.search(r"sent ([\d,]+), skipped", run.stdout)
    seconds = re.search(r" in (\d+(?:\.\d+)?) s \(\d+ batch", run.stdout)
    return Replica(
        run,
        int(share[1].replace(",", "")) if share else -1,
        float(seconds[1]) if seconds else -1.0,
    )


def _start_together(
    count: int, args: list[str], env: dict[str, str]
) -> tuple[float, list[ChildRun]]:
    """`count` children released at one barrier, each measured by run_child (wait4 on its
    own pid, so they do not disturb each other); the wall time until the last has exited."""
    runs: list[ChildRun | None] = [None] * count
    barrier = threading.Barrier(count + 1)

    def one(i: int) -> None:
        barrier.wait()
        runs[i] = run_child(args, env, timeout=600)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return wall, [r for r in runs if r is not None]


def _reset(url: str, week: IsoWeek) -> None:
    """Back to the issue as built: no ledger rows, no crew, no lease, not started; vacuumed,
    so every run finds the same tables, not the previous run's dead rows."""
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM deliveries"))
            conn.execute(text("DELETE FROM send_crew"))
            conn.execute(
                text(
                    "UPDATE issues SET status = 'built', status_reason = NULL, "
                    "send_started_at = NULL, sent_at = NULL, claimed_by = NULL, "
                    "claimed_until = NULL, claimed_owner = NULL WHERE week = :week"
                ),
                {"week": str(week)},
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE deliveries, send_crew, issues"))
    finally:
        engine.dispose()


def _ledger(url: str, week: IsoWeek) -> tuple[int, int, set[str], float]:
    """(sent rows, active readers, the addresses the ledger records as sent, the issue's
    send_started_at → sent_at in seconds or -1)."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            sent = conn.execute(text("SELECT count(*) FROM deliveries WHERE status = 'sent'"))
            active = conn.execute(text("SELECT count(*) FROM subscribers WHERE status = 'active'"))
            emails = conn.execute(
                text(
                    "SELECT lower(s.email) FROM deliveries d JOIN subscribers s "
                    "ON s.id = d.subscriber_id WHERE d.status = 'sent'"
                )
            )
            counts = int(sent.scalar_one()), int(active.scalar_one()), set(emails.scalars())
            span = conn.execute(
                text(
                    "SELECT extract(epoch FROM sent_at - send_started_at) FROM issues "
                    "WHERE week = :week AND status = 'sent'"
                ),
                {"week": str(week)},
            ).scalar()
            return *counts, float(span) if span is not None else -1.0
    finally:
        engine.dispose()


def _python_start(env: dict[str, str], times: int = 5) -> float:
    """A bare interpreter's start-up and exit (no digest import): what each replica costs at
    least before it can send anything."""
    return statistics.median(run_child(["-c", "pass"], env).seconds for _ in range(times))


def _measure(
    workdir: Path,
    url: str,
    server: FakeSendGrid,
    replicas: int,
    readers: int,
    batch_size: int,
    delay: float,
    python_start: float,
) -> ReplicaResult:
    _reset(url, WEEK)
    env = {
        **base_env(workdir, url),
        **server.env(),
        "DIGEST_BATCH_SIZE": str(batch_size),
    }
    server.reset()
    _configure(server, delay)
    wall, runs = _start_together(replicas, ["-m", "digest.cli", "send", "--week", str(WEEK)], env)
    children = tuple(_replica(run) for run in runs)
    stats = server.stats()
    received = _deliveries(server)
    ledger_sent, expected, sent_to, crew_send = _ledger(url, WEEK)
    problems: list[str] = []
    for i, child in enumerate(children, 1):
        if child.run.returncode != 0:
            problems.append(
                f"replica {i} exited {child.run.returncode}: {child.run.stderr.strip()[-300:]}"
            )
    shares = [c.sent for c in children]
    if sum(shares) != expected:
        problems.append(f"the replicas' shares {shares} add up to {sum(shares)}, not {expected}")
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
    return ReplicaResult(
        replicas=replicas,
        readers=readers,
        batch_size=batch_size,
        in_flight=IN_FLIGHT,
        delay=delay,
        wall=wall,
        crew_send=crew_send,
        children=children,
        python_start=python_start,
        requests=int(stats["requests"]),
        max_open_requests=int(stats["max_open_requests"]),
        ledger_sent=ledger_sent,
        problems=tuple(problems),
    )


def run_replicas(
    workdir: Path,
    postgres_url: str,
    *,
    readers: int,
    batch_size: int = 1000,
    delay: float = DELAY,
    replicas: Sequence[int] = REPLICAS,
) -> list[ReplicaResult]:
    """One scratch schema with `readers` and a built issue; then, for each replica count, the
    ledger reset to empty and that many `digest send` children started together."""
    run_dir = workdir / f"replicas-{readers}-{batch_size}"
    run_dir.mkdir(parents=True, exist_ok=True)
    server = FakeSendGrid(run_dir)
    try:
        with postgres_schema(postgres_url) as url:
            prepare_issue(
                run_dir, url, readers, SEED, week=WEEK, built_at=BUILT_AT, terms_count=ISSUE_TERMS
            )
            start = _python_start(base_env(run_dir, url))
            return [
                _measure(run_dir, url, server, n, readers, batch_size, delay, start)
                for n in replicas
            ]
    finally:
        server.stop()


def _point(result: ReplicaResult) -> tuple[int, int]:
    """What runs compare against each other: the same readers in the same batches."""
    return result.readers, result.batch_size


def _speedup(results: Sequence[ReplicaResult], result: ReplicaResult) -> float | None:
    one = [r for r in results if _point(r) == _point(result) and r.replicas == 1]
    if not one or one[0].crew_send <= 0 or result.crew_send <= 0:
        return None
    return one[0].crew_send / result.crew_send


def replicas_goals(results: Sequence[ReplicaResult]) -> list[Goal]:
    """Exactly once and exit 0 in every run; 2 and 3 replicas faster than one, on the crew's
    send time (process start-up, the same for any replica count, is left out of it)."""
    goals: list[Goal] = []
    for result in results:
        wanted = SPEEDUP_GOAL.get(result.replicas)
        if wanted is None:
            continue
        speedup = _speedup(results, result)
        one = next(r for r in results if _point(r) == _point(result) and r.replicas == 1)
        goals.append(
            Goal(
                name=(
                    f"{result.replicas} replicas send {result.readers:,} readers ≥ {wanted:g}× "
                    f"faster than 1 (crew send time, {result.batches} batches, "
                    f"{result.delay:g} s provider)"
                ),
                met=speedup is not None and speedup >= wanted,
                measured=(
                    f"{speedup:.2f}× ({one.crew_send:.2f} s → {result.crew_send:.2f} s; "
                    f"floor {one.floor:.2f} s → {result.floor:.2f} s, "
                    f"{one.floor / result.floor:.2f}×)"
                    if speedup is not None
                    else "the issue was not sent"
                ),
            )
        )
    bad = [r for r in results if r.problems]
    goals.append(
        Goal(
            name="replica sends: all exit 0, every reader exactly once (server and ledger)",
            met=bool(results) and not bad,
            measured="; ".join(f"{r.replicas} replicas: {'; '.join(r.problems)}" for r in bad)
            or f"{len(results)} runs, {sum(r.replicas for r in results)} replicas, each reader once",
            correctness=True,
        )
    )
    return goals


def replicas_table(results: Sequence[ReplicaResult]) -> str:
    """One line per run: the crew's send time and wall time beside their floors, the shares."""
    header = [
        "replicas", "readers", "batches", "send s", "floor s", "ratio", "speed-up", "wall s",
        "process floor s", "CPU s", "shares", "each send s", "exit", "requests", "open at most",
        "exactly once",
    ]  # fmt: skip
    rows = []
    for r in results:
        speedup = _speedup(results, r)
        rows.append(
            [
                str(r.replicas), f"{r.readers:,}", str(r.batches), f"{r.crew_send:.2f}",
                f"{r.floor:.2f}", f"{r.ratio:.2f}",
                f"{speedup:.2f}×" if speedup is not None else "?", f"{r.wall:.2f}",
                f"{r.process_floor:.2f}", f"{sum(c.run.cpu for c in r.children):.2f}",
                "/".join(f"{c.sent:,}" for c in r.children),
                "/".join(f"{c.send_seconds:.1f}" for c in r.children),
                "/".join(str(c.run.returncode) for c in r.children), str(r.requests),
                str(r.max_open_requests), "yes" if r.exactly_once else "NO",
            ]
        )  # fmt: skip
    return text_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--readers", default="20000", help="e.g. 20000,100000 (comma-separated)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=DELAY)
    parser.add_argument("--replicas", default=",".join(map(str, REPLICAS)), help="e.g. 1,2,3")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    why = postgres_reachable(args.postgres_url)
    if why is not None:
        print(f"replicas: skipped, PostgreSQL unreachable at {args.postgres_url} ({why})")
        return 0
    started = time.perf_counter()
    results: list[ReplicaResult] = []
    with tempfile.TemporaryDirectory(prefix="digest-replicas-") as scratch:
        workdir = args.workdir or Path(scratch)
        for readers in (int(n) for n in args.readers.split(",") if n.strip()):
            results += run_replicas(
                workdir,
                args.postgres_url,
                readers=readers,
                batch_size=args.batch_size,
                delay=args.delay,
                replicas=[int(n) for n in args.replicas.split(",") if n.strip()],
            )
    print(replicas_table(results))
    print()
    goals = replicas_goals(results)
    for goal in goals:
        print(f"[{'met' if goal.met else 'MISSED'}] {goal.name}: {goal.measured}")
    print(f"\n({time.perf_counter() - started:.1f} s in all)")
    return 0 if all(g.met for g in goals if g.correctness) else 1


if __name__ == "__main__":
    sys.exit(main())
