"""A real SMTP server (aiosmtpd) for the SMTP transport's tests and benchmark, with faults.

It speaks STARTTLS, TLS from the first byte or plain SMTP, with a certificate from its own
authority (`ca_file`, so clients verify as in production), optional AUTH, and faults scripted at
runtime: refused recipients, failed DATA, a connection dropped after DATA, a 421 after n messages,
slow answers. It keeps what arrived (or only counts it, for 100,000-message runs). In-process
(`SmtpServer`), in a child process (`serve_in_process`), or standalone:

    python -m tests.smtp_server --port 2525   # prints host:port, then the CA file's path
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["Received", "ServerProcess", "SmtpServer", "serve_in_process"]

Tls = Literal["starttls", "implicit", "none"]
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
_FOREVER = 3600.0  # a dropped session's handler waits here until connection_lost cancels it
_PLAIN_ADDRESS = re.compile(r"<([^<>\s\"\\@()\[\],;:]+@[A-Za-z0-9.-]+)>(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the server accepted it; `connection` numbers sessions from 1."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    connection: int


@dataclass(slots=True)
class _Fault:
    code: int
    text: str
    times: int | None  # None: every time until reset_faults()
    address: str | None = None  # lower-cased; None: any message
    keep: bool = False  # drops only: the message is stored before the connection is cut
    skip: int = 0  # drops only: messages let through before the drop arms

    def take(self) -> bool:
        """Whether the fault fires now, using up one of its `times`."""
        if self.skip:
            self.skip -= 1
            return False
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


@dataclass
class _State:
    """What the server remembers and the faults it plays; guarded by `lock` (a Condition)."""

    store: bool
    lock: threading.Condition = field(default_factory=threading.Condition)
    received: list[Received] = field(default_factory=list)
    # received, connections, rsets, refused_rcpts, failed_data, dropped, cut
    tally: Counter[str] = field(default_factory=Counter)
    deliveries: Counter[str] = field(default_factory=Counter)
    per_connection: Counter[int] = field(default_factory=Counter)
    rcpt_faults: dict[str, _Fault] = field(default_factory=dict)
    data_faults: list[_Fault] = field(default_factory=list)
    drop: _Fault | None = None
    cut_after: tuple[int, _Fault] | None = None
    delay: float = 0.0

    def reset_faults(self) -> None:
        with self.lock:
            self.rcpt_faults.clear()
            self.data_faults.clear()
            self.drop = self.cut_after = None
            self.delay = 0.0

    def clear(self) -> None:
        with self.lock:
            for kept in (self.received, self.tally, self.deliveries, self.per_connection):
                kept.clear()

    def add(self, what: str) -> int:
        with self.lock:
            self.tally[what] += 1
            return self.tally[what]

    def rcpt_reply(self, address: str) -> str | None:
        with self.lock:
            fault = self.rcpt_faults.get(address.lower())
            if fault is None or not fault.take():
                return None
            self.tally["refused_rcpts"] += 1
            return f"{fault.code} {fault.text}"

    def finish_data(self, connection: int, envelope: Envelope) -> tuple[str | None, float]:
        """The answer to a message's final dot (None: drop the connection) and the delay first.

        A message is stored before the delay: a client that times out waiting finds it delivered,
        which is what a slow real server does too.
        """
        rcpts = tuple(envelope.rcpt_tos)
        lowered = [r.lower() for r in rcpts]
        with self.lock:
            drop = self.drop
            if drop and (drop.address is None or drop.address in lowered) and drop.take():
                self.tally["dropped"] += 1
                if drop.keep:
                    self._keep(connection, envelope, rcpts, lowered)
                return None, self.delay
            for fault in self.data_faults:
                if (fault.address is None or fault.address in lowered) and fault.take():
                    self.tally["failed_data"] += 1
                    return f"{fault.code} {fault.text}", self.delay
            self._keep(connection, envelope, rcpts, lowered)
            return "250 2.0.0 OK: queued", self.delay

    def _keep(
        self, connection: int, envelope: Envelope, rcpts: tuple[str, ...], lowered: list[str]
    ) -> None:
        self.tally["received"] += 1
        self.deliveries.update(lowered)
        self.per_connection[connection] += 1
        if self.store:
            data = envelope.original_content or b""
            self.received.append(Received(envelope.mail_from or "", rcpts, data, connection))
        self.lock.notify_all()

    def should_cut(self, messages: int) -> bool:
        cut_after = self.cut_after  # one attribute read: no lock unless a cut is scripted
        if cut_after is None or messages < cut_after[0]:
            return False
        with self.lock:
            if not cut_after[1].take():
                return False
            self.tally["cut"] += 1
            return True

    def stats(self) -> dict[str, Any]:
        with self.lock:
            counts = self.deliveries.values()
            return {
                **{k: self.tally[k] for k in ("received", "connections", "rsets")},
                "recipients": sum(counts),
                "distinct": len(counts),
                "duplicates": sum(1 for n in counts if n > 1),
                "per_connection": dict(self.per_connection),
                **{k: self.tally[k] for k in ("refused_rcpts", "failed_data", "dropped", "cut")},
            }


class _Handler:
    """aiosmtpd's hooks: cheap on the success path (no parsing, one lock a message)."""

    def __init__(self, state: _State) -> None:
        self.state = state

    async def handle_RCPT(
        self, server: _Smtp, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.state.rcpt_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_RSET(self, server: _Smtp, session: Session, envelope: Envelope) -> str:
        self.state.add("rsets")
        return "250 2.0.0 OK"

    async def handle_DATA(self, server: _Smtp, session: Session, envelope: Envelope) -> str:
        reply, delay = self.state.finish_data(server.connection, envelope)
        if delay:
            await asyncio.sleep(delay)
        if reply is None:  # the ambiguous case: the message arrived, its answer never does
            assert server.transport is not None
            server.transport.close()
            await asyncio.sleep(_FOREVER)  # connection_lost cancels this session's task
        if reply is not None and reply.startswith("250"):
            server.messages += 1
        return reply or ""


class _Session(Session):
    # aiosmtpd 1.4 sets this deprecated property itself at every AUTH, logging a warning each
    # time; a plain attribute keeps that out of the tests' output.
    login_data: Any = None


class _Smtp(SMTP):
    """One session: knows its connection number and messages, and can be cut with a 421."""

    def __init__(self, handler: _Handler, connection: int, tls_auth: bool, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.connection = connection
        self.messages = 0
        # aiosmtpd only counts STARTTLS as TLS: over implicit TLS (or in plain test sessions)
        # AUTH is allowed as is. Set here, not as an argument, to skip its insecurity warning.
        self._auth_require_tls = tls_auth
        state = handler.state
        for command, method in list(self._smtp_methods.items()):
            self._smtp_methods[command] = self._gated(method, state)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses every address with the email package's header parser (and defines a
        # class each call): a third of its time a message. A plain <local@domain> needs none of
        # it; anything else still gets the full parse and its 553 when malformed.
        match = _PLAIN_ADDRESS.match(arg)
        if match is None:
            return super()._getaddr(arg)
        return match[1], match[2].strip()

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def _gated(self, method: Any, state: _State) -> Any:
        async def gated(arg: str | None) -> None:
            if state.should_cut(self.messages):
                await self.push("421 4.3.2 Service shutting down, closing transmission channel")
                assert self.transport is not None
                self.transport.close()
                return
            await method(arg)

        return gated


class _Controller(Controller):
    """aiosmtpd's threaded controller on a socket bound first, so port 0 picks a free port."""

    def __init__(self, state: _State, port: int, smtp_options: dict[str, Any], **kwargs: Any):
        super().__init__(_Handler(state), hostname=HOST, port=port, ready_timeout=30, **kwargs)
        self._state = state
        self._smtp_options = smtp_options
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, port))
        self.port = self._sock.getsockname()[1]

    def _create_server(self) -> Any:
        return self.loop.create_server(
            self._factory_invoker, sock=self._sock, ssl=self.ssl_context, backlog=128
        )

    def factory(self) -> _Smtp:
        return _Smtp(self.handler, self._state.add("connections"), **self._smtp_options)


def _certificate_authority(folder: Path) -> tuple[trustme.CA, Path]:
    ca = trustme.CA(organization_name="digest tests")
    path = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


class SmtpServer:
    """The SMTP server on 127.0.0.1 (a free port unless given), in a background thread.

    `store=False` keeps counts only (per recipient and per connection), for long benchmarks.
    """

    def __init__(
        self,
        *,
        tls: Tls = "starttls",
        require_tls: bool = False,
        auth: tuple[str, str] | None = None,
        store: bool = True,
        port: int = 0,
    ) -> None:
        if require_tls and tls != "starttls":
            raise ValueError("require_tls is for STARTTLS (implicit TLS always has it)")
        self.tls, self.auth, self.store = tls, auth, store
        self.state = _State(store=store)
        self._folder = tempfile.TemporaryDirectory(prefix="digest-smtp-")
        ca, self.ca_file = _certificate_authority(Path(self._folder.name))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(HOST, "localhost").configure_cert(context)
        options: dict[str, Any] = {
            "hostname": "localhost",  # not socket.getfqdn(): a DNS lookup for every session
            "tls_auth": tls == "starttls",
            "require_starttls": require_tls,
            "tls_context": context if tls == "starttls" else None,
        }
        if auth is not None:
            options.update(auth_required=True, authenticator=self._authenticate)
        self._controller = _Controller(
            self.state, port, options, ssl_context=context if tls == "implicit" else None
        )

    # ------------------------------------------------------------------ running

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def url(self) -> str:
        """The server as DIGEST_SMTP_URL names it (smtps:// for implicit TLS)."""
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        login = ""
        if self.auth is not None:
            login = f"{quote(self.auth[0], safe='')}:{quote(self.auth[1], safe='')}@"
        return f"{scheme}://{login}{HOST}:{self.port}"

    def where(self) -> dict[str, Any]:
        """host, port, ca_file and url in one picklable answer (for a proxy in another process)."""
        return {"host": HOST, "port": self.port, "ca_file": str(self.ca_file), "url": self.url}

    def client_context(self) -> ssl.SSLContext:
        """A client's TLS context that trusts this server's certificate (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(self) -> SmtpServer:
        self._controller.start()
        self.state.clear()  # the controller's own start-up probe is no client's connection
        return self

    def stop(self) -> None:
        self._controller.stop()
        self._folder.cleanup()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = (part.encode() for part in self.auth)
        good = hmac.compare_digest(data.login, user) & hmac.compare_digest(data.password, password)
        return AuthResult(success=good, handled=False)

    # ------------------------------------------------------------------ what arrived

    @property
    def received(self) -> list[Received]:
        if not self.store:
            raise RuntimeError("this SmtpServer counts only (store=False): use deliveries()")
        with self.state.lock:
            return list(self.state.received)

    @property
    def count(self) -> int:
        """Messages accepted (250 at the final dot, or dropped with keep=True)."""
        return self._tally("received")

    @property
    def connections(self) -> int:
        return self._tally("connections")

    @property
    def rsets(self) -> int:
        return self._tally("rsets")

    def _tally(self, what: str) -> int:
        with self.state.lock:
            return self.state.tally[what]

    def messages_to(self, address: str) -> list[Received]:
        wanted = address.lower()
        return [m for m in self.received if wanted in (r.lower() for r in m.rcpt_tos)]

    def deliveries(self) -> dict[str, int]:
        """How many accepted messages each (lower-cased) recipient got."""
        with self.state.lock:
            return dict(self.state.deliveries)

    def messages_per_connection(self) -> dict[int, int]:
        with self.state.lock:
            return dict(self.state.per_connection)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait (on the server's condition, not a sleep) until `count` messages were accepted."""
        with self.state.lock:
            return self.state.lock.wait_for(lambda: self.state.tally["received"] >= count, timeout)

    def clear(self) -> None:
        """Forget what arrived and every counter (faults stay)."""
        self.state.clear()

    def reset(self) -> None:
        """clear() and reset_faults(): a shared server, as a fresh one."""
        self.state.clear()
        self.state.reset_faults()

    # ------------------------------------------------------------------ faults

    def fail_rcpt(
        self,
        address: str,
        code: int = 550,
        text: str = "5.1.1 No such user here",
        times: int | None = None,
    ) -> None:
        """RCPT TO:<address> answers `code` (every time, or the first `times` times)."""
        with self.state.lock:
            self.state.rcpt_faults[address.lower()] = _Fault(code, text, times)

    def fail_data(
        self,
        address: str | None = None,
        code: int = 451,
        text: str = "4.3.0 Temporary failure, try again",
        times: int | None = None,
    ) -> None:
        """The final dot of a message to `address` (None: any) answers `code`; not stored."""
        lowered = address.lower() if address is not None else None
        with self.state.lock:
            self.state.data_faults.append(_Fault(code, text, times, lowered))

    def drop_after_data(
        self, times: int = 1, *, keep: bool = True, skip: int = 0, address: str | None = None
    ) -> None:
        """After a message's final dot, close the connection without an answer.

        `keep=True`: the message was delivered and only the answer lost (it is stored and
        counted); `keep=False`: it is lost too. `skip` messages are answered normally first.
        """
        lowered = address.lower() if address is not None else None
        with self.state.lock:
            self.state.drop = _Fault(0, "", times, lowered, keep=keep, skip=skip)

    def reply_421_after(self, n_messages: int, times: int | None = None) -> None:
        """On every connection (or the next `times`) that has had `n_messages` accepted, the
        next command is answered 421 and the connection closed."""
        with self.state.lock:
            self.state.cut_after = (n_messages, _Fault(421, "", times))

    def delay(self, seconds: float) -> None:
        """Wait this long before answering each message's final dot."""
        with self.state.lock:
            self.state.delay = seconds

    def reset_faults(self) -> None:
        self.state.reset_faults()


# ---------------------------------------------------------------------- in another process

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
    """`python -m tests.smtp_server` in a child process (counting only unless `store`).

    A subprocess, not multiprocessing's spawn: that would re-run the caller's main script.
    The child ends when its stdin closes, so it never outlives the process that started it.
    """
    args = [sys.executable, "-m", "tests.smtp_server", "--port", "0", "--tls", tls, "--manage"]
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
