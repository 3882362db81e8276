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

from benchmarks.common import REPO, base_env, peak_rss_kib
from digest.store import db

__all__ = ["WebResult", "run_web"]

HOST = "127.0.0.1"  # never anything else: this sends thousands of requests as fast as it can


@dataclass(frozen=True, slots=True)
class WebResult:
    workers: int
    connections: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: tuple[float, ...]  # sorted
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
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
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


async def _load(
    port: int,
    connections: int,
    warmup: float,
    duration: float,
    max_requests: int,
    mark: Callable[[], None] = lambda: None,
) -> tuple[int, int, float, list[float]]:
    """Send POST /subscribe on `connections` connections; measure after `warmup` seconds.

    `mark` is called when the measured window opens and when it closes (the server's CPU)."""
    counter = iter(range(10**9))
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + duration
    measured = 0

    async def client() -> None:
        nonlocal errors, measured
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
    return measured, errors, window, latencies


def run_web(
    workdir: Path,
    *,
    connections: int = 16,
    warmup: float = 2.0,
    duration: float = 15.0,
    max_requests: int = 100_000,
    workers: int = 1,
) -> WebResult:
    """Start uvicorn on a fresh SQLite database and measure POST /subscribe."""
    run_dir = workdir / f"web-{workers}-{connections}"
    run_dir.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{run_dir / 'digest.db'}"
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    env = base_env(run_dir, database_url)
    env.update(
        DIGEST_TRANSPORT="outbox",
        # Raised, not switched off: the limiter still runs on every request.
        DIGEST_SUBSCRIBE_RATE_LIMIT="10000000",
    )
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
        marks: list[float] = []
        requests, errors, seconds, latencies = asyncio.run(
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
    with engine.connect() as conn:
        stored = int(conn.execute(select(func.count()).select_from(db.subscribers)).scalar_one())
    engine.dispose()
    outbox = run_dir / "outbox"
    files = sum(1 for p in outbox.glob("*.eml")) if outbox.exists() else 0
    return WebResult(
        workers=workers,
        connections=connections,
        requests=requests,
        errors=errors,
        seconds=seconds,
        latencies_ms=tuple(sorted(latencies)),
        stored=stored,
        outbox_files=files,
        server_peak_rss_mb=(peak_kib or usage.ru_maxrss) / 1024,
        server_cpu=usage.ru_utime + usage.ru_stime,
        window_cpu=marks[1] - marks[0] if len(marks) == 2 else float("nan"),
    )
