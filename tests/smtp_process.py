"""tests/smtp_server.py's SMTP server in a process of its own, or standalone from a shell.

The kill tests and the SMTP benchmark kill or measure a sender in another process; the server
must live in neither, so `serve_in_process` starts one as a child, reached through a
multiprocessing manager (methods only: a proxy cannot read properties). Standalone:

    python -m tests.smtp_process --port 2525   # prints host:port, then the CA file's path
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.managers import BaseManager
from pathlib import Path

from tests.smtp_server import HOST, REPO, SmtpServer, Tls

__all__ = ["ServerProcess", "serve_in_process"]

_FAULTS = ("fail_rcpt", "fail_data", "drop_after_data", "reply_421_after", "delay")
_AUTHKEY = "DIGEST_SMTP_TEST_AUTHKEY"
_served: list[SmtpServer] = []  # in the child: the one server its manager hands out


class _Manager(BaseManager):
    """Proxies to the child's SmtpServer: its methods, called from the parent over a socket."""


# Methods only: a proxy cannot reach properties (and listing them would evaluate them).
_Manager.register("server", lambda: _served[0], exposed=[
    "where", "stats", "deliveries", "messages_per_connection", "messages_to", "wait_for",
    "clear", "reset", "reset_faults", *_FAULTS,
])  # fmt: skip


@dataclass(frozen=True)
class ServerProcess:
    """An SmtpServer in a child process, so killing a sender never kills the server.

    `server` is a proxy: its methods work (stats(), deliveries(), fail_rcpt(), ...), its
    properties do not, hence `count` here.
    """

    server: SmtpServer
    host: str
    port: int
    ca_file: Path
    url: str

    @property
    def count(self) -> int:
        return int(self.server.stats()["received"])


@contextmanager
def serve_in_process(
    *, tls: Tls = "starttls", require_tls: bool = False, auth: tuple[str, str] | None = None,
    store: bool = False,
) -> Iterator[ServerProcess]:  # fmt: skip
    """`python -m tests.smtp_process` in a child process (counting only unless `store`).

    A subprocess, not multiprocessing's spawn: that would re-run the caller's main script.
    The child ends when its stdin closes, so it never outlives the process that started it.
    """
    args = [sys.executable, "-m", "tests.smtp_process", "--port", "0", "--tls", tls, "--manage"]
    args += ["--require-tls"] * require_tls + ["--no-store"] * (not store)
    args += ["--auth", f"{auth[0]}:{auth[1]}"] if auth else []
    authkey = secrets.token_bytes(16)
    env = {**os.environ, _AUTHKEY: authkey.hex()}
    stdio = subprocess.PIPE
    with subprocess.Popen(args, cwd=REPO, env=env, stdin=stdio, stdout=stdio, text=True) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            lines = [proc.stdout.readline().strip() for _ in range(3)]
            if not all(lines):
                raise RuntimeError(f"the SMTP server process did not start ({proc.poll()})")
            manager = _Manager(address=(HOST, int(lines[2])), authkey=authkey)
            manager.connect()
            server = manager.server()  # type: ignore[attr-defined]
            where = server.where()
            ca_file = Path(where["ca_file"])
            yield ServerProcess(server, HOST, where["port"], ca_file, where["url"])
        finally:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local SMTP server with faults, for tests.")
    parser.add_argument("--port", type=int, default=2525, help="0: pick a free port")
    parser.add_argument("--tls", choices=["starttls", "implicit", "none"], default="starttls")
    parser.add_argument("--require-tls", action="store_true")
    parser.add_argument("--auth", metavar="USER:PASSWORD")
    parser.add_argument("--no-store", action="store_true", help="count messages, keep no bodies")
    parser.add_argument("--manage", action="store_true", help="for serve_in_process()")
    args = parser.parse_args(argv)
    user, _, password = (args.auth or "").partition(":")
    server = SmtpServer(
        tls=args.tls,
        require_tls=args.require_tls,
        auth=(user, password) if args.auth else None,
        store=not args.no_store,
        port=args.port,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with server:
        print(f"{server.host}:{server.port}\n{server.ca_file}", flush=True)
        if args.manage:
            _served.append(server)
            manager = _Manager(address=(HOST, 0), authkey=bytes.fromhex(os.environ[_AUTHKEY]))
            serving = manager.get_server()
            threading.Thread(target=serving.serve_forever, daemon=True).start()
            print(serving.address[1], flush=True)  # type: ignore[index]
            sys.stdin.read()  # until the parent closes it, or dies
            return
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            threading.Event().wait()
        print(json.dumps(server.stats()), file=sys.stderr)


if __name__ == "__main__":
    main()
