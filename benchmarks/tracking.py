"""What click tracking costs the send: `digest send` to M subscribers with DIGEST_TRACK_CLICKS
off and on, the same issue and rows, the same fake SendGrid, and the ratio of the two.

With tracking on every reader's request carries one signed /r/<token> per tracked link as a
substitution (the fake server checks every marker has a value and the 10,000-byte limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import ChildRun, FakeSendGrid, Goal, base_env, run_child, text_table
from benchmarks.send import WEEK, _ledger_sent, prepare_issue
from digest.store import db
from digest.store.issues import get_issue

__all__ = ["TrackingResult", "run_tracking", "tracking_goals", "tracking_table"]


@dataclass(frozen=True, slots=True)
class TrackingResult:
    subscribers: int
    links: int  # tracked links in the issue: tokens per reader with tracking on
    off: ChildRun
    on: ChildRun
    off_payload_bytes: int  # the largest request body the server saw
    on_payload_bytes: int
    problems: tuple[str, ...]

    @property
    def ratio(self) -> float:
        return self.on.seconds / self.off.seconds

    @property
    def cpu_ratio(self) -> float:
        return self.on.cpu / self.off.cpu if self.off.cpu else float("nan")


def _links(database_url: str) -> int:
    engine = db.make_engine(database_url)
    try:
        issue = get_issue(engine, WEEK)
        return len(issue.links or ()) if issue else 0
    finally:
        engine.dispose()


def _one(
    run_dir: Path, server: FakeSendGrid, count: int, seed: int, track: bool, problems: list[str]
) -> tuple[ChildRun, int, int]:
    run_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{run_dir / 'digest.db'}"
    try:
        prepare_issue(run_dir, url, count, seed)
        links = _links(url)
        env = {
            **base_env(run_dir, url),
            **server.env(),
            "DIGEST_TRACK_CLICKS": "true" if track else "false",
        }
        server.reset()
        run = run_child(["-m", "digest.cli", "send", "--week", str(WEEK)], env)
        stats = server.stats()
        which = "on" if track else "off"
        if run.returncode != 0:
            problems.append(f"tracking {which}: send exited {run.returncode}: {run.stderr[-300:]}")
        if stats["recipients"] != count or stats["distinct"] != count or stats["rejected"]:
            problems.append(
                f"tracking {which}: the server saw {stats['recipients']} recipients "
                f"({stats['distinct']} distinct, rejected: {stats['rejected'][:1]})"
            )
        if _ledger_sent(url) != count:
            problems.append(f"tracking {which}: the ledger does not record {count} sent")
        return run, links, int(stats["max_payload_bytes"])
    finally:
        for suffix in ("", "-wal", "-shm"):
            (run_dir / f"digest.db{suffix}").unlink(missing_ok=True)


def run_tracking(workdir: Path, server: FakeSendGrid, count: int, *, seed: int) -> TrackingResult:
    """Send to `count` subscribers on SQLite twice, tracking off then on (fresh files each)."""
    problems: list[str] = []
    off, links, off_bytes = _one(
        workdir / f"tracking-off-{count}", server, count, seed, False, problems
    )
    on, _links_on, on_bytes = _one(
        workdir / f"tracking-on-{count}", server, count, seed, True, problems
    )
    return TrackingResult(count, links, off, on, off_bytes, on_bytes, tuple(problems))


def tracking_table(results: list[TrackingResult]) -> str:
    header = [
        "readers", "links", "off s", "on s", "ratio", "off CPU s", "on CPU s", "CPU ratio",
        "largest request off / on",
    ]  # fmt: skip
    rows = [
        [
            f"{r.subscribers:,}", str(r.links), f"{r.off.seconds:.1f}", f"{r.on.seconds:.1f}",
            f"{r.ratio:.2f}", f"{r.off.cpu:.1f}", f"{r.on.cpu:.1f}", f"{r.cpu_ratio:.2f}",
            f"{r.off_payload_bytes / 1e6:.1f} / {r.on_payload_bytes / 1e6:.1f} MB",
        ]
        for r in results
    ]  # fmt: skip
    problems = [f"problem: {p}" for r in results for p in r.problems]
    return "\n".join([text_table(header, rows), *problems])


def tracking_goals(results: list[TrackingResult]) -> list[Goal]:
    """Tracking has no speed goal of its own (its cost is reported); only that both sends were
    right: every reader once, tracked or not."""
    return [
        Goal(
            f"tracked and untracked sends correct ({r.subscribers:,})",
            not r.problems,
            "; ".join(r.problems) or "every reader sent once, both ways",
            correctness=True,
        )
        for r in results
    ]
