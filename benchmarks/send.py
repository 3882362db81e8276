"""The send benchmark: `digest send` to M subscribers through the real `sendgrid` client, beside
the floor (benchmarks/floor.py) on the same rows and the same fake SendGrid server.

Both run as child processes, measured with wait4; the server runs in a third process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import func, select

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
from benchmarks.data import DEFAULT_SEED, insert_subscribers, write_glossary
from digest.campaign.build import build_issue
from digest.config import Settings
from digest.model.weeks import IsoWeek
from digest.store import db
from digest.store.terms import load_glossary

__all__ = ["SendResult", "prepare_issue", "run_send", "send_goals", "send_table"]

WEEK = IsoWeek(2026, 17)
BUILT_AT = datetime(2026, 4, 20, 8, 0, tzinfo=UTC)
ISSUE_TERMS = 100  # the glossary the sent issue is built from

# Issue 17's goals for the send, each a ratio to the floor measured in the same run.
RATIO_GOAL = {"sqlite": 2.0, "postgresql": 2.5}
RSS_GOAL_MB = 150.0  # at a million readers (listmonk sends 7M in 57 MB)
RATIO_GOAL_FROM = 100_000
RSS_GOAL_AT = 1_000_000
CALLS_PER_READER = 1 / 1000


@dataclass(frozen=True, slots=True)
class SendResult:
    backend: str
    subscribers: int
    insert_seconds: float
    digest: ChildRun
    floor: ChildRun
    api_calls: int
    floor_api_calls: int
    ledger_sent: int
    server_cpu: float  # the fake SendGrid's CPU during the digest run
    floor_server_cpu: float
    problems: tuple[str, ...]

    @property
    def ratio(self) -> float:
        return self.digest.seconds / self.floor.seconds


def prepare_issue(
    workdir: Path,
    database_url: str,
    count: int,
    seed: int,
    *,
    week: IsoWeek = WEEK,
    built_at: datetime = BUILT_AT,
    terms_count: int = ISSUE_TERMS,
) -> tuple[float, Settings]:
    """Migrate `database_url`, insert `count` readers and build `week`'s issue from a glossary
    written once into `workdir` (shared by the send, latency and tracking benchmarks); returns
    the insert's seconds and the settings used."""
    terms = workdir / "terms"
    if not terms.exists():
        write_glossary(terms, terms_count, seed)
    env = base_env(workdir, database_url)
    settings = Settings(
        database_url=database_url,
        terms_dir=terms,
        secret_key=SecretStr(env["DIGEST_SECRET_KEY"]),
        base_url=env["DIGEST_BASE_URL"],
        site_url=env["DIGEST_SITE_URL"],
    )
    engine = db.make_engine(database_url)
    try:
        db.upgrade(engine)
        started = time.perf_counter()
        insert_subscribers(engine, count, seed)
        seconds = time.perf_counter() - started
        build_issue(engine, settings, load_glossary(terms), week, now=built_at, news=[])
    finally:
        engine.dispose()
    return seconds, settings


def _ledger_sent(database_url: str) -> int:
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(db.deliveries.c.status == "sent")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _requests(run: ChildRun) -> int:
    match = re.search(r"(\d+) requests?\)", run.stdout)
    return int(match.group(1)) if match else -1


def _measure(
    workdir: Path, database_url: str, server: FakeSendGrid, backend: str, count: int, seed: int
) -> SendResult:
    insert_seconds, _settings = prepare_issue(workdir, database_url, count, seed)
    env = {**base_env(workdir, database_url), **server.env()}
    problems: list[str] = []

    server.reset()
    server.cpu_seconds()
    floor = run_child(["-m", "benchmarks.floor", "--week", str(WEEK)], env)
    floor_server_cpu = server.cpu_seconds()
    floor_stats = server.stats()
    if floor.returncode != 0:
        problems.append(f"floor exited {floor.returncode}: {floor.stderr.strip()[-300:]}")
    floor_calls = json.loads(floor.stdout or "{}").get("api_calls", -1) if not problems else -1

    server.reset()
    digest = run_child(["-m", "digest.cli", "send", "--week", str(WEEK)], env)
    server_cpu = server.cpu_seconds()
    stats = server.stats()
    if digest.returncode != 0:
        problems.append(f"digest send exited {digest.returncode}: {digest.stderr.strip()[-300:]}")
    for who, seen in (("digest", stats), ("floor", floor_stats)):
        if seen["recipients"] != count or seen["distinct"] != count or seen["duplicates"]:
            problems.append(
                f"{who}: the server saw {seen['recipients']} recipients, "
                f"{seen['distinct']} distinct, {seen['duplicates']} twice (expected {count})"
            )
        if seen["rejected"]:
            problems.append(f"{who}: the server rejected requests: {seen['rejected'][:1]}")
    ledger = _ledger_sent(database_url)
    if ledger != count:
        problems.append(f"the ledger records {ledger} sent, expected {count}")
    return SendResult(
        backend=backend,
        subscribers=count,
        insert_seconds=insert_seconds,
        digest=digest,
        floor=floor,
        api_calls=_requests(digest),
        floor_api_calls=floor_calls,
        ledger_sent=ledger,
        server_cpu=server_cpu,
        floor_server_cpu=floor_server_cpu,
        problems=tuple(problems),
    )


def run_send(
    workdir: Path,
    server: FakeSendGrid,
    count: int,
    *,
    backend: str = "sqlite",
    postgres_url: str | None = None,
    seed: int,
) -> SendResult:
    """Send to `count` subscribers on `backend` (a fresh SQLite file, or a scratch PostgreSQL
    schema that is dropped afterwards) and measure digest and the floor."""
    run_dir = workdir / f"send-{backend}-{count}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        url = f"sqlite:///{run_dir / 'digest.db'}"
        try:
            return _measure(run_dir, url, server, backend, count, seed)
        finally:
            for suffix in ("", "-wal", "-shm"):
                (run_dir / f"digest.db{suffix}").unlink(missing_ok=True)
    assert postgres_url is not None
    with postgres_schema(postgres_url) as url:
        return _measure(run_dir, url, server, backend, count, seed)


def send_goals(results: list[SendResult]) -> list[Goal]:
    """Issue 17's send goals for each measured size: the ratio to the floor (2.0 on SQLite, 2.5
    on PostgreSQL) from 100,000 readers up, peak RSS at a million readers, API calls, and every
    reader exactly once. Below 100,000 the ratio is in the table only: there the process's
    start-up (≈ 0.6 s of imports and checks against a floor that starts in 0.1 s) is most of
    what is measured, and the issue judges the send at 100k and 1M."""
    goals: list[Goal] = []
    for r in results:
        where = f"{r.backend}, {r.subscribers:,}"
        limit = RATIO_GOAL.get(r.backend, 2.0)
        if r.subscribers >= RATIO_GOAL_FROM:
            goals.append(
                Goal(f"send ≤ {limit}× its floor ({where})", r.ratio <= limit, f"{r.ratio:.2f}×")
            )
        if r.subscribers >= RSS_GOAL_AT:
            goals.append(
                Goal(
                    f"send peak RSS ≤ {RSS_GOAL_MB:.0f} MB ({where})",
                    r.digest.peak_rss_mb <= RSS_GOAL_MB,
                    f"{r.digest.peak_rss_mb:.0f} MB",
                )
            )
        allowed = max(1, int(r.subscribers * CALLS_PER_READER))
        goals.append(
            Goal(
                f"send API calls ≤ {allowed:,} ({where})",
                0 < r.api_calls <= allowed,
                f"{r.api_calls:,}",
            )
        )
        goals.append(
            Goal(
                f"send: every reader exactly once ({where})",
                not r.problems,
                "; ".join(r.problems) or f"{r.ledger_sent:,} sent, none twice",
                correctness=True,
            )
        )
    return goals


def send_table(results: list[SendResult]) -> str:
    """One line a run: digest and floor side by side (wall, CPU, peak RSS), the ratio, calls."""
    header = [
        "backend",
        "readers",
        "digest s",
        "floor s",
        "ratio",
        "digest CPU s",
        "floor CPU s",
        "RSS MB",
        "floor RSS",
        "API calls",
        "µs/reader",
        "server CPU s",
    ]
    rows = [
        [
            r.backend,
            f"{r.subscribers:,}",
            f"{r.digest.seconds:.2f}",
            f"{r.floor.seconds:.2f}",
            f"{r.ratio:.2f}",
            f"{r.digest.cpu:.2f}",
            f"{r.floor.cpu:.2f}",
            f"{r.digest.peak_rss_mb:.0f}",
            f"{r.floor.peak_rss_mb:.0f}",
            f"{r.api_calls:,}",
            f"{r.digest.seconds / r.subscribers * 1e6:.1f}",
            f"{r.server_cpu:.1f}",
        ]
        for r in results
    ]
    return text_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.send --sizes 100000,1000000 [--postgres]`: this benchmark alone."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="100000", help="comma-separated reader counts")
    parser.add_argument("--postgres", action="store_true", help="on PostgreSQL, not SQLite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "DIGEST_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    backend = "postgresql" if args.postgres else "sqlite"
    if args.postgres and (why := postgres_reachable(args.postgres_url)) is not None:
        print(f"PostgreSQL unreachable: {why}", file=sys.stderr)
        return 2
    results: list[SendResult] = []
    with tempfile.TemporaryDirectory(prefix="digest-send-") as scratch:
        workdir = Path(scratch)
        server = FakeSendGrid(workdir)
        try:
            for count in sizes:
                results.append(
                    run_send(
                        workdir,
                        server,
                        count,
                        backend=backend,
                        postgres_url=args.postgres_url,
                        seed=args.seed,
                    )
                )
                print(send_table(results[-1:]), flush=True)
        finally:
            server.stop()
    print()
    print(send_table(results))
    goals = send_goals(results)
    for goal in goals:
        print(f"  [{'met' if goal.met else 'MISSED'}] {goal.name}: {goal.measured}")
    return 2 if any(g.correctness and not g.met for g in goals) else 0


if __name__ == "__main__":
    sys.exit(main())
