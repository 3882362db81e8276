"""The send benchmark: `digest send` to M subscribers through the real `sendgrid` client, beside
the floor (benchmarks/floor.py) on the same rows and the same fake SendGrid server.

Both run as child processes, measured with wait4; the server runs in a third process.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from benchmarks.common import ChildRun, FakeSendGrid, base_env, postgres_schema, run_child
from benchmarks.data import insert_subscribers, write_glossary
from digest.campaign.build import build_issue
from digest.config import Settings
from digest.model.weeks import IsoWeek
from digest.store import db
from digest.store.terms import load_glossary

__all__ = ["SendResult", "run_send"]

WEEK = IsoWeek(2026, 17)
BUILT_AT = datetime(2026, 4, 20, 8, 0, tzinfo=UTC)
ISSUE_TERMS = 100  # the glossary the sent issue is built from


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


def _prepare(workdir: Path, database_url: str, count: int, seed: int) -> tuple[float, Settings]:
    terms = workdir / "terms"
    if not terms.exists():
        write_glossary(terms, ISSUE_TERMS, seed)
    env = base_env(workdir, database_url)
    settings = Settings(
        database_url=database_url,
        terms_dir=terms,
        secret_key=env["DIGEST_SECRET_KEY"],
        base_url=env["DIGEST_BASE_URL"],
        site_url=env["DIGEST_SITE_URL"],
    )
    engine = db.make_engine(database_url)
    try:
        db.upgrade(engine)
        started = time.perf_counter()
        insert_subscribers(engine, count, seed)
        seconds = time.perf_counter() - started
        build_issue(engine, settings, load_glossary(terms), WEEK, now=BUILT_AT, news=[])
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
    insert_seconds, _settings = _prepare(workdir, database_url, count, seed)
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
