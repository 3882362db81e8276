"""What every benchmark shares: settings for a scratch folder, child processes measured with
wait4 (wall time, CPU, peak RSS of that child alone), PostgreSQL scratch schemas, the fake SendGrid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, text

from digest.store.db import normalise_url

__all__ = [
    "REPO",
    "ChildRun",
    "FakeSendGrid",
    "Goal",
    "base_env",
    "peak_rss_kib",
    "postgres_schema",
    "run_child",
    "text_table",
]

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Goal:
    """One line of the goals table: what was promised, whether it held, and the figure.

    `correctness` goals (every reader exactly once, no failed request) fail the run whatever
    `--strict` says; speed goals only with `--strict`.
    """

    name: str
    met: bool
    measured: str
    correctness: bool = False


API_KEY = "SG.benchmark-key.not-a-secret"


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (numbers right-aligned), so a run pastes into benchmarks/README.md."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join([line, rule, *body])


def base_env(workdir: Path, database_url: str) -> dict[str, str]:
    """The environment of a child `digest` process that works only inside `workdir`.

    DIGEST_CONFIG points at a file that does not exist, so a digest.toml in the current folder
    cannot change what is measured.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        DIGEST_DATABASE_URL=database_url,
        DIGEST_CONFIG=str(workdir / "absent.toml"),
        DIGEST_SECRET_KEY="benchmark-secret-key-0123456789abcdef",
        DIGEST_BASE_URL="https://digest.example.org",
        DIGEST_SITE_URL="https://glossary.example.org",
        DIGEST_TERMS_DIR=str(workdir / "terms"),
        DIGEST_OUTBOX_DIR=str(workdir / "outbox"),
        DIGEST_LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


@dataclass(frozen=True, slots=True)
class ChildRun:
    """One child process, measured from outside: what a user would see and pay."""

    seconds: float
    cpu: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_child(args: list[str], env: dict[str, str], timeout: float = 900.0) -> ChildRun:
    """Run `python args…` and measure it with wait4, which reports this child's own rusage
    (RUSAGE_CHILDREN would mix in every other child, the fake SendGrid among them)."""
    started = time.perf_counter()
    with (
        open(os.devnull, "rb") as stdin,
        _temp_file() as out,
        _temp_file() as err,
    ):
        proc = subprocess.Popen(
            [sys.executable, *args], env=env, cwd=REPO, stdin=stdin, stdout=out, stderr=err
        )
        deadline = started + timeout
        peak_kib = 0
        while True:
            peak_kib = max(peak_kib, peak_rss_kib(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
        out.seek(0)
        err.seek(0)
        return ChildRun(
            seconds=seconds,
            cpu=usage.ru_utime + usage.ru_stime,
            # ru_maxrss only where /proc is missing: Linux carries the parent's RSS at fork over
            # into the child's ru_maxrss, so it would report this (large) process, not the child.
            peak_rss_mb=(peak_kib or usage.ru_maxrss) / 1024,
            returncode=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )


def peak_rss_kib(pid: int) -> int:
    """The child's own peak resident set (VmHWM, reset at exec), in KiB; 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@contextmanager
def _temp_file() -> Iterator[Any]:
    import tempfile

    with tempfile.TemporaryFile() as fh:
        yield fh


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL server at `url`, dropped afterwards; yields its URL."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        base = normalise_url(url)
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def postgres_reachable(url: str) -> str | None:
    """None when a connection works, else why not (one line)."""
    try:
        engine = create_engine(normalise_url(url))
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


class FakeSendGrid:
    """tests/sendgrid_server.py as its own process on 127.0.0.1, so its CPU is not ours."""

    def __init__(self, workdir: Path) -> None:
        self._log = open(workdir / "sendgrid-server.log", "wb")  # noqa: SIM115 - closed in stop
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.sendgrid_server",
                "--port",
                "0",
                "--api-key",
                API_KEY,
                "--keep-payloads",
                "0",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError("the fake SendGrid did not start; see sendgrid-server.log")
        self._cpu_mark = 0.0

    def env(self) -> dict[str, str]:
        return {
            "DIGEST_TRANSPORT": "sendgrid",
            "DIGEST_SENDGRID_HOST": self.url,
            "SENDGRID_API_KEY": API_KEY,
        }

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_test/stats", timeout=30) as response:
            stats: dict[str, Any] = json.loads(response.read())
            return stats

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/_test/reset", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def cpu_seconds(self) -> float:
        """CPU the server has used since the last call (from /proc; Linux only, else 0)."""
        try:
            fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0
        spent, self._cpu_mark = total - self._cpu_mark, total
        return spent

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()
