"""The SMTP benchmark: `digest send` through DIGEST_TRANSPORT=smtp to a local SMTP server, beside
the floor (benchmarks/smtp_floor.py: smtplib over one kept-open connection) on the same rows.

The server (tests/smtp_server.py, aiosmtpd, STARTTLS, counting only) runs in a process of its
own; digest and the floor each run as a child measured with wait4. The server is one Python
thread: past ~2,000 messages a second it, not the sender, sets the pace, so the table shows the
senders' CPU beside their wall time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import ChildRun, Goal, base_env, postgres_schema, run_child, text_table
from benchmarks.send import WEEK, _ledger_sent, prepare_issue
from tests.smtp_process import ServerProcess, serve_in_process

__all__ = ["SmtpResult", "run_smtp", "smtp_goals", "smtp_table"]

RATIO_GOAL = 2.0  # wall time against the floor, from 100,000 readers up
RATIO_GOAL_FROM = 100_000


@dataclass(frozen=True, slots=True)
class SmtpResult:
    backend: str
    readers: int
    digest: ChildRun
    floor: ChildRun
    ledger_sent: int
    sessions: int  # connections digest opened to the server
    problems: tuple[str, ...]

    @property
    def ratio(self) -> float:
        return self.digest.seconds / self.floor.seconds


def _received(server: ServerProcess, count: int, who: str) -> list[str]:
    stats = server.server.stats()
    if stats["recipients"] != count or stats["distinct"] != count or stats["duplicates"]:
        return [
            f"{who}: the server saw {stats['recipients']} messages, {stats['distinct']} readers, "
            f"{stats['duplicates']} twice (expected {count})"
        ]
    return []


def _measure(workdir: Path, url: str, backend: str, count: int, seed: int) -> SmtpResult:
    prepare_issue(workdir, url, count, seed)
    problems: list[str] = []
    with serve_in_process(store=False) as server:
        env = base_env(workdir, url) | {
            "DIGEST_TRANSPORT": "smtp",
            "DIGEST_SMTP_URL": server.url,
            "DIGEST_SMTP_CA_FILE": str(server.ca_file),
        }
        floor = run_child(["-m", "benchmarks.smtp_floor", "--week", str(WEEK)], env)
        if floor.returncode != 0:
            problems.append(f"floor exited {floor.returncode}: {floor.stderr.strip()[-300:]}")
        problems += _received(server, count, "floor")
        server.server.clear()
        time.sleep(0.2)  # the floor's QUIT reaches the server's counters
        digest = run_child(["-m", "digest.cli", "send", "--week", str(WEEK)], env)
        if digest.returncode != 0:
            problems.append(f"digest send exited {digest.returncode}: {digest.stderr[-300:]}")
        problems += _received(server, count, "digest")
        sessions = int(server.server.stats()["connections"])
    ledger = _ledger_sent(url)
    if ledger != count:
        problems.append(f"the ledger records {ledger} sent, expected {count}")
    json.loads(floor.stdout or "{}")  # the floor's own report must be readable
    return SmtpResult(backend, count, digest, floor, ledger, sessions, tuple(problems))


def run_smtp(
    workdir: Path, count: int, *, backend: str = "sqlite", postgres_url: str | None = None,
    seed: int,
) -> SmtpResult:  # fmt: skip
    """Send to `count` readers over SMTP on `backend`, digest and the floor."""
    run_dir = workdir / f"smtp-{backend}-{count}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        url = f"sqlite:///{run_dir / 'digest.db'}"
        try:
            return _measure(run_dir, url, backend, count, seed)
        finally:
            for suffix in ("", "-wal", "-shm"):
                (run_dir / f"digest.db{suffix}").unlink(missing_ok=True)
    assert postgres_url is not None
    with postgres_schema(postgres_url) as url:
        return _measure(run_dir, url, backend, count, seed)


def smtp_goals(results: list[SmtpResult]) -> list[Goal]:
    goals: list[Goal] = []
    for r in results:
        where = f"{r.backend}, {r.readers:,}"
        if r.readers >= RATIO_GOAL_FROM:
            goals.append(
                Goal(f"smtp send ≤ {RATIO_GOAL}× its floor ({where})", r.ratio <= RATIO_GOAL,
                     f"{r.ratio:.2f}×")
            )  # fmt: skip
        goals.append(
            Goal(
                f"smtp send: every reader exactly once ({where})",
                not r.problems,
                "; ".join(r.problems) or f"{r.ledger_sent:,} sent, none twice",
                correctness=True,
            )
        )
    return goals


def smtp_table(results: list[SmtpResult]) -> str:
    header = ["backend", "readers", "digest s", "floor s", "ratio", "digest CPU s",
              "floor CPU s", "RSS MB", "floor RSS", "sessions", "msgs/s"]  # fmt: skip
    rows = [
        [
            r.backend,
            f"{r.readers:,}",
            f"{r.digest.seconds:.2f}",
            f"{r.floor.seconds:.2f}",
            f"{r.ratio:.2f}",
            f"{r.digest.cpu:.2f}",
            f"{r.floor.cpu:.2f}",
            f"{r.digest.peak_rss_mb:.0f}",
            f"{r.floor.peak_rss_mb:.0f}",
            str(r.sessions),
            f"{r.readers / r.digest.seconds:,.0f}",
        ]
        for r in results
    ]
    return text_table(header, rows)
