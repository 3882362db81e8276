"""The web benchmark: POST /subscribe against uvicorn serving `digest.web:create_app` in its own
process, from an asyncio load generator on 127.0.0.1 with a fixed number of keep-alive connections.

Every request uses a new address, so each one stores a pending subscriber and its confirmation
mail is written to the outbox (after the answer, as the app does it) — that cost is counted.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy import func, select

from benchmarks.common import (
    REPO,
    Goal,
    base_env,
    peak_rss_kib,
    postgres_reachable,
    postgres_schema,
    run_child,
    text_table,
)
from digest.store import db

__all__ = ["WebResult", "run_web", "web_goals", "web_table"]

HOST = "127.0.0.1"  # never anything else: this sends thousands of requests as fast as it can


@dataclass(frozen=True, slots=True)
class WebResult:
    backend: str  # sqlite | postgresql
    workers: int
    connections: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: tuple[float, ...]  # sorted
    answered: int  # every answer of the run, warm-up included
    failed: int  # of those, not 200
    stored: int  # pending subscribers in the database afterwards
    outbox_files: int  # confirmation mails written
    server_peak_rss_mb: float
    server_cpu: float  # the whole server process, start-up and warm-up included
    window_cpu: float  # the server's CPU during the measured window only

    @property
    def cpu_per_request_ms(self) -> float:
        return self.window_cpu / max(self.requests, 1) * 1000

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        index = min(len(self.latencies_ms) - 1, round(p / 100 * (len(self.latencies_ms) - 1)))
        return self.latencies_ms[index]


def _tree(pid: int) -> dict[int, list[str]]:
    """`pid` and its children (uvicorn's workers) → their /proc stat fields; {} off Linux."""
    found: dict[int, list[str]] = {}
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            found[int(entry.name)] = fields
    return found


def _tree_cpu(pid: int) -> float:
    """CPU seconds used so far by `pid` and its children; 0 off Linux."""
    tick = os.sysconf("SC_CLK_TCK")
    return sum((int(f[11]) + int(f[12])) / tick for f in _tree(pid).values())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def _wait_until_up(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            await writer.drain()
            status = await reader.readline()
            writer.close()
            if b" 200 " in status:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"uvicorn did not answer on {HOST}:{port} within {timeout:.0f} s")


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response; return its status code."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


@dataclass(frozen=True, slots=True)
class _Load:
    measured: int  # answers inside the measured window
    errors: int  # of those, not 200
    seconds: float
    latencies_ms: list[float]
    answered: int  # every answer, warm-up and the window's edges included
    failed: int  # of those, not 200


async def _load(
    port: int,
    connections: int,
    warmup: float,
    duration: float,
    max_requests: int,
    mark: Callable[[], None] = lambda: None,
) -> _Load:
    """Send POST /subscribe on `connections` connections; measure after `warmup` seconds.

    `mark` is called when the measured window opens and when it closes (the server's CPU)."""
    counter = iter(range(10**9))
    latencies: list[float] = []
    errors = 0
    answered = 0
    failed = 0
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + duration
    measured = 0

    async def client() -> None:
        nonlocal errors, measured, answered, failed
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.perf_counter() < stop_at and measured < max_requests:
                n = next(counter)
                body = urlencode(
                    {"email": f"web{n:08d}@load.example.org", "name": f"Reader {n}"}
                ).encode()
                request = (
                    b"POST /subscribe HTTP/1.1\r\nHost: bench\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                sent = time.perf_counter()
                writer.write(request)
                await writer.drain()
                status = await _read_response(reader)
                done = time.perf_counter()
                answered += 1
                failed += status != 200
                if sent >= measure_from and done <= stop_at:
                    measured += 1
                    latencies.append((done - sent) * 1000)
                    if status != 200:
                        errors += 1
        finally:
            writer.close()

    async def marker() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        mark()
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        mark()

    await asyncio.gather(marker(), *(client() for _ in range(connections)))
    window = min(time.perf_counter(), stop_at) - measure_from
    return _Load(measured, errors, window, latencies, answered, failed)


def run_web(
    workdir: Path,
    *,
    backend: str = "sqlite",
    postgres_url: str | None = None,
    connections: int = 8,
    warmup: float = 2.0,
    duration: float = 15.0,
    max_requests: int = 100_000,
    workers: int = 1,
) -> WebResult:
    """Start uvicorn on a fresh database (a SQLite file, or a scratch PostgreSQL schema that is
    dropped afterwards) and measure POST /subscribe."""
    run_dir = workdir / f"web-{backend}-{workers}-{connections}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        url = f"sqlite:///{run_dir / 'digest.db'}"
        try:
            return _measure(
                run_dir, url, backend, connections, warmup, duration, max_requests, workers
            )
        finally:
            for suffix in ("", "-wal", "-shm"):
                (run_dir / f"digest.db{suffix}").unlink(missing_ok=True)
    assert postgres_url is not None, "backend postgresql needs postgres_url"
    with postgres_schema(postgres_url) as url:
        return _measure(run_dir, url, backend, connections, warmup, duration, max_requests, workers)


def _measure(
    run_dir: Path,
    database_url: str,
    backend: str,
    connections: int,
    warmup: float,
    duration: float,
    max_requests: int,
    workers: int,
) -> WebResult:
    env = base_env(run_dir, database_url)
    env.update(
        DIGEST_TRANSPORT="outbox",
        # Raised, not switched off: the limiter still runs on every request.
        DIGEST_SUBSCRIBE_RATE_LIMIT="10000000",
    )
    # Migrated first, as a deployment would: several workers starting at once on an empty
    # schema would each try to create it.
    upgraded = run_child(["-m", "digest.cli", "db", "upgrade"], env)
    if upgraded.returncode != 0:
        raise RuntimeError(f"digest db upgrade failed: {upgraded.stderr.strip()[-500:]}")
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "digest.web:create_app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    log = open(run_dir / "uvicorn.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=log)
    peak_kib = 0
    try:
        asyncio.run(_wait_until_up(port))
        if workers > 1:
            _wait_for_workers(server.pid, workers)
        marks: list[float] = []
        load = asyncio.run(
            _load(
                port,
                connections,
                warmup,
                duration,
                max_requests,
                lambda: marks.append(_tree_cpu(server.pid)),
            )
        )
        time.sleep(1.0)  # let the last background confirmation mails be written
        # The largest process: uvicorn itself, or with --workers its biggest worker.
        peak_kib = max((peak_rss_kib(p) for p in _tree(server.pid)), default=0)
    finally:
        server.terminate()
        _pid, _status, usage = os.wait4(server.pid, 0)
        server.returncode = 0
        log.close()
    engine = db.make_engine(database_url)
    with engine.connect() as conn:
        stored = int(conn.execute(select(func.count()).select_from(db.subscribers)).scalar_one())
    engine.dispose()
    outbox = run_dir / "outbox"
    files = sum(1 for p in outbox.glob("*.eml")) if outbox.exists() else 0
    return WebResult(
        backend=backend,
        workers=workers,
        connections=connections,
        requests=load.measured,
        errors=load.errors,
        seconds=load.seconds,
        latencies_ms=tuple(sorted(load.latencies_ms)),
        answered=load.answered,
        failed=load.failed,
        stored=stored,
        outbox_files=files,
        server_peak_rss_mb=(peak_kib or usage.ru_maxrss) / 1024,
        server_cpu=usage.ru_utime + usage.ru_stime,
        window_cpu=marks[1] - marks[0] if len(marks) == 2 else float("nan"),
    )


def _wait_for_workers(pid: int, workers: int, timeout: float = 30.0) -> None:
    """Until uvicorn's `workers` children are up (the first answer may come from only one)."""
    deadline = time.monotonic() + timeout
    while len(_tree(pid)) < workers + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # each worker migrates (a no-op) and opens its pool as it starts


# --------------------------------------------------------------------------- goals and table

SQLITE_RATE = 500.0  # sign-ups a second, one uvicorn process, SQLite and the outbox
SQLITE_P99_MS = 50.0
POSTGRES_RATE = 1000.0  # two processes, PostgreSQL


def web_goals(results: list[WebResult]) -> list[Goal]:
    """Issue 17's sign-up goals, from the best run of each kind, and correctness over all."""
    goals: list[Goal] = []
    one = [r for r in results if r.backend == "sqlite" and r.workers == 1]
    if one:
        best = max(one, key=lambda r: r.rate if r.percentile(99) < SQLITE_P99_MS else r.rate / 10)
        goals.append(
            Goal(
                f"sign-ups, 1 process, SQLite: >= {SQLITE_RATE:.0f}/s, p99 < {SQLITE_P99_MS:.0f} ms",
                best.rate >= SQLITE_RATE and best.percentile(99) < SQLITE_P99_MS,
                f"{best.rate:.0f}/s, p99 {best.percentile(99):.1f} ms, "
                f"{best.cpu_per_request_ms:.2f} ms CPU/req ({best.connections} conns)",
            )
        )
    two = [r for r in results if r.backend == "postgresql" and r.workers == 2]
    if two:
        best = max(two, key=lambda r: r.rate)
        goals.append(
            Goal(
                f"sign-ups, 2 processes, PostgreSQL: >= {POSTGRES_RATE:.0f}/s",
                best.rate >= POSTGRES_RATE,
                f"{best.rate:.0f}/s, p99 {best.percentile(99):.1f} ms, "
                f"{best.cpu_per_request_ms:.2f} ms CPU/req ({best.connections} conns)",
            )
        )
    if results:
        failed = sum(r.failed for r in results)
        missing = [
            f"{r.backend}/{r.workers}: {r.answered} answered, {r.stored} rows, "
            f"{r.outbox_files} mails"
            for r in results
            if not (r.stored == r.outbox_files == r.answered)
        ]
        goals.append(
            Goal(
                "sign-ups: no failed request; each one's row and confirmation mail",
                failed == 0 and not missing,
                f"{sum(r.answered for r in results):,} answered, {failed} failed"
                + (f"; {'; '.join(missing)}" if missing else ""),
                correctness=True,
            )
        )
    return goals


def web_table(results: list[WebResult]) -> str:
    """One row a run: rate, latency percentiles, errors, mails, the server's CPU a request."""
    headers = [
        "database", "workers", "conns", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms",
        "max ms", "failed", "rows", "mails", "server CPU ms/req", "RSS MB",
    ]  # fmt: skip
    rows = [
        [
            r.backend,
            str(r.workers),
            str(r.connections),
            f"{r.requests:,}",
            f"{r.rate:.0f}",
            f"{r.percentile(50):.1f}",
            f"{r.percentile(90):.1f}",
            f"{r.percentile(99):.1f}",
            f"{r.percentile(100):.0f}",
            str(r.failed),
            f"{r.stored:,}",
            f"{r.outbox_files:,}",
            f"{r.cpu_per_request_ms:.2f}",
            f"{r.server_peak_rss_mb:.0f}",
        ]
        for r in results
    ]
    return text_table(headers, rows)


def main() -> None:
    """`python -m benchmarks.web`: the SQLite and PostgreSQL runs, their table and goals."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "DIGEST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results: list[WebResult] = []
    with tempfile.TemporaryDirectory(prefix="digest-web-") as tmp:
        workdir = Path(tmp)
        results.append(
            run_web(workdir, connections=args.connections, duration=args.seconds, workers=1)
        )
        if not args.no_postgres:
            why = postgres_reachable(args.postgres_url)
            if why is None:
                results.append(
                    run_web(
                        workdir,
                        backend="postgresql",
                        postgres_url=args.postgres_url,
                        connections=2 * args.connections,
                        duration=args.seconds,
                        workers=2,
                    )
                )
            else:
                print(f"PostgreSQL skipped: {why}")
    print(web_table(results))
    for goal in web_goals(results):
        print(f"{'met   ' if goal.met else 'MISSED'}  {goal.name}: {goal.measured}")


if __name__ == "__main__":
    main()
