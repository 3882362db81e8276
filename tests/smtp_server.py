"""A real SMTP server (aiosmtpd) for the SMTP transport's tests and benchmark, with faults.

It speaks STARTTLS, TLS from the first byte or plain SMTP, with a certificate from its own
authority (`ca_file`, so clients verify as in production), optional AUTH, and faults scripted at
runtime: refused recipients, failed DATA, a connection dropped after DATA, a 421 after n messages,
slow answers. It keeps what arrived (or only counts it, for 100,000-message runs). In-process
(`SmtpServer`), in a child process (`tests.smtp_process.serve_in_process`), or standalone:

    python -m tests.smtp_process --port 2525   # prints host:port, then the CA file's path
"""

from __future__ import annotations

import asyncio
import hmac
import math
import re
import socket
import ssl
import tempfile
import threading
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["HOST", "REPO", "Received", "SmtpServer", "Tls"]

Tls = Literal["starttls", "implicit", "none"]
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
_FOREVER = 3600.0  # a dropped session's handler waits here until connection_lost cancels it
_NO_USER = "5.1.1 No such user here"
_TRY_LATER = "4.3.0 Temporary failure, try again"
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
    times: float  # math.inf: every time until reset_faults()
    address: str | None = None  # lower-cased; None: any message
    keep: bool = False  # drops only: the message is stored before the connection is cut
    skip: int = 0  # drops only: messages let through before the drop arms

    def take(self) -> bool:
        """Whether the fault fires now, using up one of its `times`."""
        self.skip -= 1
        if self.skip >= 0 or self.times < 1:
            return False
        self.times -= 1
        return True


def _times(times: int | None) -> float:
    return math.inf if times is None else times


class _Handler:
    """aiosmtpd's hooks, on the server's loop thread: cheap on the success path (no parsing,
    one lock a message). Not SmtpServer itself: aiosmtpd reads every attribute of its handler
    for each session, properties included."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, smtp: _Smtp, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.server._rcpt_reply(address)
        if reply is None:
            envelope.rcpt_tos.append(address)
        return reply or "250 2.1.5 OK"

    async def handle_RSET(self, smtp: _Smtp, session: Session, envelope: Envelope) -> str:
        self.server._add("rsets")
        return "250 2.0.0 OK"

    async def handle_DATA(self, smtp: _Smtp, session: Session, envelope: Envelope) -> str:
        reply, delay = self.server._finish_data(smtp.connection, envelope)
        if delay:
            await asyncio.sleep(delay)
        if reply is None:  # the ambiguous case: the message arrived, its answer never does
            assert smtp.transport is not None
            smtp.transport.close()
            await asyncio.sleep(_FOREVER)  # connection_lost cancels this session's task
        smtp.messages += (reply or "").startswith("250")
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
        for command, method in list(self._smtp_methods.items()):
            self._smtp_methods[command] = self._gated(method, handler.server)

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

    def _gated(self, method: Any, server: SmtpServer) -> Any:
        async def gated(arg: str | None) -> None:
            if server._should_cut(self.messages):
                await self.push("421 4.3.2 Service shutting down, closing transmission channel")
                assert self.transport is not None
                self.transport.close()
                return
            await method(arg)

        return gated


class _Controller(Controller):
    """aiosmtpd's threaded controller on a socket bound first, so port 0 picks a free port."""

    def __init__(self, server: SmtpServer, port: int, options: dict[str, Any], **kwargs: Any):
        super().__init__(_Handler(server), hostname=HOST, port=port, ready_timeout=30, **kwargs)
        self._server, self._options = server, options
        self.sessions: weakref.WeakSet[_Smtp] = weakref.WeakSet()  # on the loop thread only
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, port))
        self.port = self._sock.getsockname()[1]

    def _create_server(self) -> Any:
        return self.loop.create_server(
            self._factory_invoker, sock=self._sock, ssl=self.ssl_context, backlog=128
        )

    def factory(self) -> _Smtp:
        smtp = _Smtp(self.handler, self._server._add("connections"), **self._options)
        self.sessions.add(smtp)
        return smtp

    async def close_sessions(self) -> None:
        """Cut every open session, so stopping leaves no socket for the garbage collector."""
        for smtp in list(self.sessions):
            if isinstance(smtp.transport, asyncio.Transport):
                smtp.transport.abort()
        await asyncio.sleep(0)  # abort() closes each socket in a callback of its own


class SmtpServer:
    """The SMTP server on 127.0.0.1 (a free port unless given), in a background thread.

    `store=False` keeps counts only (per recipient and per connection), for long benchmarks.
    Everything it remembers is guarded by `_lock` (a Condition, for wait_for): the session
    hooks run on aiosmtpd's loop thread, the test reads and scripts faults from its own.
    """

    _drop: _Fault | None
    _cut_after: tuple[int, _Fault] | None

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
        self._lock = threading.Condition()
        self._received: list[Received] = []
        # received, connections, rsets, refused_rcpts, failed_data, dropped, cut
        self._tally: Counter[str] = Counter()
        self._deliveries: Counter[str] = Counter()
        self._per_connection: Counter[int] = Counter()
        self.reset_faults()
        self._folder = tempfile.TemporaryDirectory(prefix="digest-smtp-")
        self.ca_file = Path(self._folder.name) / "ca.pem"
        ca = trustme.CA(organization_name="digest tests")
        ca.cert_pem.write_to_path(str(self.ca_file))
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
        implicit = context if tls == "implicit" else None
        self._controller = _Controller(self, port, options, ssl_context=implicit)
        self.host, self.port = HOST, int(self._controller.port)

    # ------------------------------------------------------------------ running

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
        self.clear()  # the controller's own start-up probe is no client's connection
        return self

    def stop(self) -> None:
        loop = self._controller.loop
        asyncio.run_coroutine_threadsafe(self._controller.close_sessions(), loop).result(10)
        self._controller.stop()
        self._folder.cleanup()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what arrived

    @property
    def received(self) -> list[Received]:
        if not self.store:
            raise RuntimeError("this SmtpServer counts only (store=False): use deliveries()")
        with self._lock:
            return list(self._received)

    @property
    def count(self) -> int:
        """Messages accepted (250 at the final dot, or dropped with keep=True)."""
        with self._lock:
            return self._tally["received"]

    @property
    def connections(self) -> int:
        with self._lock:
            return self._tally["connections"]

    @property
    def rsets(self) -> int:
        with self._lock:
            return self._tally["rsets"]

    def messages_to(self, address: str) -> list[Received]:
        wanted = address.lower()
        return [m for m in self.received if wanted in (r.lower() for r in m.rcpt_tos)]

    def deliveries(self) -> dict[str, int]:
        """How many accepted messages each (lower-cased) recipient got."""
        with self._lock:
            return dict(self._deliveries)

    def messages_per_connection(self) -> dict[int, int]:
        with self._lock:
            return dict(self._per_connection)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = self._deliveries.values()
            return {
                **{k: self._tally[k] for k in ("received", "connections", "rsets")},
                "recipients": sum(counts),
                "distinct": len(counts),
                "duplicates": sum(1 for n in counts if n > 1),
                "per_connection": dict(self._per_connection),
                **{k: self._tally[k] for k in ("refused_rcpts", "failed_data", "dropped", "cut")},
            }

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait (on the server's condition, not a sleep) until `count` messages were accepted."""
        with self._lock:
            return self._lock.wait_for(lambda: self._tally["received"] >= count, timeout)

    def clear(self) -> None:
        """Forget what arrived and every counter (faults stay)."""
        with self._lock:
            for kept in (self._received, self._tally, self._deliveries, self._per_connection):
                kept.clear()

    def reset(self) -> None:
        """clear() and reset_faults(): a shared server, as a fresh one."""
        self.clear()
        self.reset_faults()

    # ------------------------------------------------------------------ faults

    def fail_rcpt(
        self, address: str, code: int = 550, text: str = _NO_USER, times: int | None = None
    ) -> None:
        """RCPT TO:<address> answers `code` (every time, or the first `times` times)."""
        with self._lock:
            self._rcpt_faults[address.lower()] = _Fault(code, text, _times(times))

    def fail_data(
        self,
        address: str | None = None,
        code: int = 451,
        text: str = _TRY_LATER,
        times: int | None = None,
    ) -> None:
        """The final dot of a message to `address` (None: any) answers `code`; not stored."""
        with self._lock:
            self._data_faults.append(_Fault(code, text, _times(times), address and address.lower()))

    def drop_after_data(
        self, times: int = 1, *, keep: bool = True, skip: int = 0, address: str | None = None
    ) -> None:
        """After a message's final dot, close the connection without an answer.

        `keep=True`: the message was delivered and only the answer lost (it is stored and
        counted); `keep=False`: it is lost too. `skip` messages are answered normally first.
        """
        with self._lock:
            self._drop = _Fault(0, "", times, address and address.lower(), keep=keep, skip=skip)

    def reply_421_after(self, n_messages: int, times: int | None = None) -> None:
        """On every connection (or the next `times`) that has had `n_messages` accepted, the
        next command is answered 421 and the connection closed."""
        with self._lock:
            self._cut_after = (n_messages, _Fault(421, "", _times(times)))

    def delay(self, seconds: float) -> None:
        """Wait this long before answering each message's final dot."""
        with self._lock:
            self._delay = seconds

    def reset_faults(self) -> None:
        with self._lock:
            self._rcpt_faults: dict[str, _Fault] = {}
            self._data_faults: list[_Fault] = []
            self._drop, self._cut_after, self._delay = None, None, 0.0

    # ------------------------------------------------------------------ the sessions' side

    def _add(self, what: str) -> int:
        with self._lock:
            self._tally[what] += 1
            return self._tally[what]

    def _authenticate(
        self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = (part.encode() for part in self.auth)
        good = hmac.compare_digest(data.login, user) & hmac.compare_digest(data.password, password)
        return AuthResult(success=good, handled=False)

    def _rcpt_reply(self, address: str) -> str | None:
        with self._lock:
            fault = self._rcpt_faults.get(address.lower())
            if fault is None or not fault.take():
                return None
            self._tally["refused_rcpts"] += 1
            return f"{fault.code} {fault.text}"

    def _finish_data(self, connection: int, envelope: Envelope) -> tuple[str | None, float]:
        """The answer to a message's final dot (None: drop the connection) and the delay first.

        A message is stored before the delay: a client that times out waiting finds it delivered,
        which is what a slow real server does too.
        """
        lowered = [r.lower() for r in envelope.rcpt_tos]
        with self._lock:
            drop = self._drop
            if drop and (drop.address is None or drop.address in lowered) and drop.take():
                self._tally["dropped"] += 1
                if drop.keep:
                    self._keep(connection, envelope, lowered)
                return None, self._delay
            for fault in self._data_faults:
                if (fault.address is None or fault.address in lowered) and fault.take():
                    self._tally["failed_data"] += 1
                    return f"{fault.code} {fault.text}", self._delay
            self._keep(connection, envelope, lowered)
            return "250 2.0.0 OK: queued", self._delay

    def _keep(self, connection: int, envelope: Envelope, lowered: list[str]) -> None:
        self._tally["received"] += 1
        self._deliveries.update(lowered)
        self._per_connection[connection] += 1
        if self.store:
            rcpts, data = tuple(envelope.rcpt_tos), envelope.original_content or b""
            self._received.append(Received(envelope.mail_from or "", rcpts, data, connection))
        self._lock.notify_all()

    def _should_cut(self, messages: int) -> bool:
        cut_after = self._cut_after  # one attribute read: no lock unless a cut is scripted
        if cut_after is None or messages < cut_after[0]:
            return False
        with self._lock:
            if not cut_after[1].take():
                return False
            self._tally["cut"] += 1
            return True
