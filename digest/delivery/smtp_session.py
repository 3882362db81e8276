"""One SMTP session with a relay: opening it securely, and one reader's transaction on it.

The transport (`digest.delivery.smtp`) keeps a pool of these and decides what an answer means
for the ledger; this module only speaks the protocol and says precisely where a session ended —
before the message's last line left (the relay cannot have it) or after (it may).
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from digest.delivery.transport import PermanentError, RetryableError
from digest.model.relay import Relay

__all__ = [
    "UNANSWERED",
    "Answer",
    "Pacer",
    "SessionLost",
    "drop",
    "open_session",
    "quit_session",
    "transact",
    "words",
]

_DOT_RE = re.compile(rb"^\.", re.MULTILINE)
UNANSWERED = "the connection to the relay was lost after the message was sent, before its answer"


@dataclass(frozen=True, slots=True)
class Answer:
    """What became of one reader's transaction."""

    state: Literal["accepted", "refused", "deferred", "unanswered"]
    reply: str


class SessionLost(Exception):
    """The session ended (421, a dropped connection, a timeout) before this reader's answer;
    `after_data`: the whole message had been sent, so the relay may have taken it."""

    def __init__(self, why: str, *, after_data: bool) -> None:
        super().__init__(why)
        self.after_data = after_data


class Pacer:
    """At most `rate` messages a second over all connections, spaced evenly.

    Relays meter per second (SES: 1 in the sandbox, N in production) and answer a burst over it
    with 454s; spacing every message 1/rate apart never bursts, so no answer is wasted. One
    lock-held timestamp, shared by the worker threads.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._gap = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self, sleep: Callable[[float], None] = time.sleep) -> None:
        if not self._gap:
            return
        with self._lock:
            now = self._clock()
            at = max(now, self._next)
            self._next = at + self._gap
        if at > now:
            sleep(at - now)


def words(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return f"{code} {' '.join(text.split())}"[:500]


def open_session(relay: Relay, tls: ssl.SSLContext, hostname: str, timeout: float) -> smtplib.SMTP:
    """A logged-in session with `relay`, its certificate verified against `tls`'s CAs.

    PermanentError for what retrying cannot mend (no STARTTLS, a certificate that does not
    verify, a refused login), RetryableError for a relay that cannot be reached or says 4xx.
    """
    try:
        conn: smtplib.SMTP
        if relay.security == "tls":
            conn = smtplib.SMTP_SSL(relay.host, relay.port, hostname, timeout=timeout, context=tls)
        else:
            conn = smtplib.SMTP(relay.host, relay.port, hostname, timeout=timeout)
        try:
            # A message leaves in one write and then waits for the answer: Nagle's algorithm
            # would hold its last segment back until the relay acknowledges the others, and
            # the relay delays that ACK (40 ms on Linux) waiting for the rest — a stall per
            # message, 23 messages a second on localhost instead of hundreds.
            if conn.sock is not None:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.ehlo()
            if relay.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise PermanentError(
                        f"the relay {relay.where} offers no STARTTLS: digest will not send "
                        "passwords and readers' addresses in clear (use smtps:// if it "
                        "speaks TLS from the start)"
                    )
                conn.starttls(context=tls)
                conn.ehlo()
            if relay.username:
                conn.login(relay.username, relay.password or "")
        except BaseException:
            drop(conn)
            raise
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(
            f"the relay {relay.where}'s TLS certificate does not verify ({exc.verify_message}); "
            "set DIGEST_SMTP_CA_FILE for a private CA, never turn verification off"
        ) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise PermanentError(
            f"the relay {relay.where} refused the login ({words(exc.smtp_code, exc.smtp_error)}); "
            "check the user and password in DIGEST_SMTP_URL"
        ) from None
    except smtplib.SMTPResponseException as exc:
        if 400 <= exc.smtp_code < 500:
            raise RetryableError(
                f"the relay {relay.where} is not taking mail now "
                f"({words(exc.smtp_code, exc.smtp_error)})"
            ) from None
        raise PermanentError(
            f"the relay {relay.where} refused the session ({words(exc.smtp_code, exc.smtp_error)})"
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise RetryableError(
            f"cannot reach the SMTP relay {relay.where} ({type(exc).__name__}: {exc})"
        ) from None
    return conn


def transact(
    conn: smtplib.SMTP, sender: str, to: str, raw: bytes, before_end: Callable[[], None]
) -> Answer:
    """One reader's MAIL, RCPT, DATA on `conn`; `before_end` runs just before the message's
    last line leaves (the journal's "sending"). Raises `SessionLost` when the session ends."""
    try:
        code, reply = conn.mail(sender)
        if code != 250:
            return _refusal(conn, code, reply, stage="MAIL FROM")
        code, reply = conn.rcpt(to)
        if code not in (250, 251):
            return _refusal(conn, code, reply, stage="RCPT TO")
        code, reply = conn.docmd("DATA")
        if code != 354:
            return _refusal(conn, code, reply, stage="DATA")
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise SessionLost(f"{type(exc).__name__}: {exc}", after_data=False) from None
    before_end()
    try:
        conn.send(_DOT_RE.sub(b"..", raw) + b".\r\n")
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        # Not all of it left: without its final line the relay cannot have taken it.
        raise SessionLost(f"{type(exc).__name__}: {exc}", after_data=False) from None
    try:
        code, reply = conn.getreply()
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise SessionLost(f"{UNANSWERED} ({exc})", after_data=True) from None
    if code == 250:
        return Answer("accepted", words(code, reply))
    if code == 421:
        raise SessionLost(words(code, reply), after_data=False)  # not taken: try again
    return Answer("deferred" if 400 <= code < 500 else "refused", words(code, reply))


def _refusal(conn: smtplib.SMTP, code: int, reply: bytes, *, stage: str) -> Answer:
    """A refused step: 421 ends the session, a 4xx defers this reader, a 5xx refuses them —
    except at MAIL FROM, where a 5xx refuses our sender for everyone (PermanentError)."""
    if code == 421:
        raise SessionLost(words(code, reply), after_data=False)
    if stage == "MAIL FROM" and code >= 500:
        raise PermanentError(f"the relay refused the sender address: {words(code, reply)}")
    try:
        conn.rset()
    except (smtplib.SMTPException, OSError) as exc:
        raise SessionLost(f"{type(exc).__name__}: {exc}", after_data=False) from None
    state: Literal["deferred", "refused"] = "deferred" if 400 <= code < 500 else "refused"
    return Answer(state, f"{stage}: {words(code, reply)}")


def drop(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        conn.close()


def quit_session(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (smtplib.SMTPException, OSError):
        drop(conn)
