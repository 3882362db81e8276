"""The SMTP transport: any relay (Amazon SES, Postmark, Mailgun, a Postfix of one's own), one
message per reader over a small pool of kept-open connections.

Built on the standard library's `smtplib`: the batch runner already keeps batches in flight on
worker threads (`in_flight`), so a blocking client with one connection per batch in flight is
all it needs — an asyncio client (aiosmtplib) would need an event loop per thread or a second
concurrency model beside the runner's, for no more throughput than the relay's own limit.

SMTP answers each message alone, so this transport answers per reader too: a 5xx is that
reader `refused` with the relay's words, a 4xx is tried again with backoff and, if it stays, that
reader `failed` (for `--retry-failed`), and everybody else in the batch goes on. The journal
(`digest.store.smtp_journal`) records each reader before its DATA ends and after the answer,
which makes `send` safe to call again for a batch — readers already accepted are never sent
twice — and leaves exactly one case ambiguous: a sender killed, or a connection lost, after the
message went and before the 250 came (DIGEST_AMBIGUOUS_BATCHES decides; docs/delivery.md "SMTP").
"""

from __future__ import annotations

import queue
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from digest.config import Settings
from digest.core.headers import ascii_address
from digest.core.mails import Message, Recipient
from digest.delivery.dkim import DkimSigner
from digest.delivery.mime import Unwritable, reader_copy
from digest.delivery.smtp_session import (
    UNANSWERED,
    Answer,
    Pacer,
    SessionLost,
    drop,
    open_session,
    quit_session,
    transact,
)
from digest.delivery.transport import PermanentError, RetryableError, SendResult
from digest.logs import get_logger, log_event
from digest.model.relay import Relay
from digest.store.smtp_journal import Entry, SmtpJournal

__all__ = ["SmtpTransport", "relay_check"]

log = get_logger("digest.delivery.smtp")

# Losing the session on the same reader this many times in a row: their message is what the
# relay will not take (it drops the connection on it), so it is deferred and the batch goes on.
_LOSSES_PER_READER = 3


# A reader the journal left "sending": an earlier attempt (a killed sender's, or this run's
# before a lost session) had sent the message and never heard the relay's answer.
_CUT_OFF = "an earlier attempt sent the message and was cut off before the relay's answer"


class SmtpTransport:
    """Sends each reader's message through `relay`, on up to `connections` kept-open sessions."""

    name = "smtp"
    exact_lookup = True  # the journal is written before a message leaves: it always knows
    max_batch = 1000

    def __init__(
        self,
        relay: Relay,
        *,
        journal: SmtpJournal | None,
        clock: Callable[[], datetime],
        connections: int = 4,
        rate: float = 0.0,
        timeout: float = 30.0,
        ca_file: Path | None = None,
        signer: DkimSigner | None = None,
        ambiguous: Literal["skip", "resend"] = "skip",
        retries: int = 5,
        retry_base_delay: float = 1.0,
        retry_max_delay: float = 60.0,
        envelope_from: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.relay = relay
        self.journal = journal
        self.clock = clock
        self.max_in_flight = connections  # one session per batch in flight
        self.timeout = timeout
        self.signer = signer
        self.ambiguous = ambiguous
        self.retries = retries
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        # MAIL FROM: where bounces go (checked as any address digest writes); None: the From.
        self.envelope_from = ascii_address(envelope_from) if envelope_from else None
        self._sleep = sleep
        self._pacer = Pacer(rate)
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._idle: queue.LifoQueue[smtplib.SMTP] = queue.LifoQueue()
        self._hostname: str | None = None
        self.sessions_opened = 0  # for the tests and the benchmark: sessions are reused

    @classmethod
    def from_settings(
        cls, settings: Settings, engine: Engine | None, *, clock: Callable[[], datetime]
    ) -> SmtpTransport:
        relay = settings.relay
        if relay is None:
            raise ValueError("DIGEST_TRANSPORT=smtp needs DIGEST_SMTP_URL")
        journal = SmtpJournal(engine) if engine is not None else None
        if journal is not None:
            journal.forget_old(clock())
        return cls(
            relay,
            journal=journal,
            clock=clock,
            connections=settings.smtp_connections,
            rate=settings.smtp_rate,
            timeout=settings.smtp_timeout,
            ca_file=settings.smtp_ca_file,
            signer=DkimSigner.from_settings(settings),
            ambiguous=settings.ambiguous_batches,
            retries=settings.max_retries,
            retry_base_delay=settings.retry_base_delay,
            retry_max_delay=settings.retry_max_delay,
            envelope_from=settings.smtp_envelope_from,
        )

    def __repr__(self) -> str:
        return f"SmtpTransport({self.relay!r})"

    # ------------------------------------------------------------------ the interface

    def recipients_per_batch(self, message: Message) -> int:
        return self.max_batch  # one message per reader: a batch has no size limit of its own

    def payload_size(self, message: Message) -> int:
        total, now = 0, self.clock()
        for recipient in message.recipients:
            try:
                total += len(self._copy(message, recipient, now))
            except Unwritable:
                continue
        return total

    def lookup_batch(self, batch_key: str) -> bool | None:
        """False: send the batch again. `send` reads the journal first and sends only the
        readers it holds no answer for, so "again" never means twice to anyone; the readers it
        does hold answers for are settled by `journal_of` when a run resumes a batch."""
        return False

    def refused_in_batch(self, message: Message) -> dict[str, str]:
        """The readers of `message` the relay refused (journal), or whose mail cannot be written."""
        refused = {
            email: entry.reply or "refused by the relay"
            for email, entry in self._entries(message).items()
            if entry.state == "refused"
        }
        now = self.clock()
        for recipient in message.recipients:
            if recipient.email not in refused:
                try:
                    self._copy(message, recipient, now)
                except Unwritable as exc:
                    refused[recipient.email] = exc.reason
        return refused

    def journal_of(self, message: Message) -> tuple[dict[str, str], dict[str, str]]:
        """For a batch a run resumes: the readers the relay accepted (with its 250 line), and
        the ones left without an answer (cut off between DATA and the 250) with why."""
        accepted: dict[str, str] = {}
        unanswered: dict[str, str] = {}
        for email, entry in self._entries(message).items():
            if entry.state == "accepted":
                accepted[email] = entry.reply or "250"
            elif entry.state == "sending":
                unanswered[email] = _CUT_OFF
        return accepted, unanswered

    def send(self, message: Message) -> SendResult:
        """Each reader's message, readers the journal already settled left out (see module)."""
        if not 1 <= len(message.recipients) <= self.max_batch:
            raise ValueError(f"an SMTP batch takes 1 to {self.max_batch} recipients")
        key = message.batch_key
        if key is not None and self.journal is None:
            raise ValueError(
                "an SMTP batch send needs the journal: make_transport(settings, engine)"
            )
        seen = self._entries(message)
        refused: dict[str, str] = {}
        uncertain: dict[str, str] = {}
        accepted: dict[str, str] = {}
        todo: list[Recipient] = []
        for recipient in message.recipients:
            entry = seen.get(recipient.email)
            if entry is not None and entry.state == "accepted":
                accepted[recipient.email] = entry.reply or "250"
            elif entry is None or entry.state == "deferred":
                todo.append(recipient)
            elif entry.state == "refused":
                refused[recipient.email] = entry.reply or "refused by the relay"
            elif entry.state == "sending":
                if self.ambiguous == "skip":
                    uncertain[recipient.email] = _CUT_OFF
                else:
                    todo.append(recipient)
        failed: dict[str, str] = {}
        wrote = bool(seen)
        for attempt in range(self.retries + 1):
            answers, sent_any = self._deliver(message, todo, written=wrote)
            wrote = wrote or sent_any
            deferred = []
            for recipient in todo:
                answer = answers[recipient.email]
                if answer.state == "accepted":
                    accepted[recipient.email] = answer.reply
                elif answer.state == "refused":
                    refused[recipient.email] = answer.reply
                elif answer.state == "unanswered":
                    if self.ambiguous == "skip":
                        uncertain[recipient.email] = UNANSWERED
                    else:
                        deferred.append(recipient)
                elif answer.state == "deferred":
                    deferred.append(recipient)
            todo = deferred
            if not todo:
                break
            if attempt < self.retries:
                self._sleep(self._backoff(attempt))
        for recipient in todo:
            failed[recipient.email] = (
                f"the relay deferred it {self.retries + 1} times, last: "
                f"{answers[recipient.email].reply}"
            )
        if failed or refused or uncertain:
            log_event(
                log, "smtp_batch", batch_key=key, refused=len(refused),
                failed=len(failed), uncertain=len(uncertain), written=wrote,
            )  # fmt: skip
        return SendResult(
            message_id=key, refused=refused, failed=failed, uncertain=uncertain,
            message_ids=accepted,
        )  # fmt: skip

    def close(self) -> None:
        """QUIT every idle session (a run's end; the relay would time them out otherwise)."""
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            quit_session(conn)

    # ------------------------------------------------------------------ one batch

    def _deliver(
        self, message: Message, readers: list[Recipient], *, written: bool
    ) -> tuple[dict[str, Answer], bool]:
        """Send each reader's copy in order on one session (a new one when it is lost); every
        reader's answer, and whether any message reached DATA's end (the journal holds a line).
        `written`: the journal held lines for this batch before (see `_session`).

        A copy is built just before it is sent, so a batch holds one message in memory, not a
        thousand (28 MB a batch in flight for the weekly mail)."""
        answers: dict[str, Answer] = {}
        unjournaled: dict[str, Entry] = {}
        key = message.batch_key
        sender = self.envelope_from or ascii_address(message.from_email)
        conn: smtplib.SMTP | None = None
        losses, reached_end, index = 0, False, 0
        now, built = self.clock(), -1
        raw = b""
        try:
            while index < len(readers):
                recipient = readers[index]
                if built != index:
                    try:
                        raw, built = self._copy(message, recipient, now), index
                    except Unwritable as exc:
                        answers[recipient.email] = Answer("refused", exc.reason)
                        unjournaled[recipient.email] = Entry("refused", exc.reason)
                        index += 1
                        continue
                if conn is None:
                    conn = self._session(written or reached_end)
                self._pacer.wait(self._sleep)

                def before_end(email: str = recipient.email) -> None:
                    nonlocal reached_end
                    self._write(key, {**unjournaled, email: Entry("sending", None)})
                    unjournaled.clear()
                    reached_end = True

                try:
                    answer = transact(conn, sender, ascii_address(recipient.email), raw, before_end)
                except SessionLost as lost:
                    drop(conn)
                    conn = None
                    losses += 1
                    log_event(log, "smtp_session_lost", why=str(lost), after_data=lost.after_data)
                    if lost.after_data:
                        answer = Answer("unanswered", str(lost))
                    elif losses < _LOSSES_PER_READER:
                        continue  # the same reader again, on a new session
                    else:
                        answer = Answer("deferred", f"the session was lost {losses} times: {lost}")
                losses = 0
                answers[recipient.email] = answer
                if answer.state != "unanswered":
                    unjournaled[recipient.email] = Entry(answer.state, answer.reply)
                index += 1
        finally:
            self._write(key, unjournaled)
            if conn is not None:
                self._idle.put(conn)
        return answers, reached_end

    def _session(self, maybe_delivered: bool) -> smtplib.SMTP:
        """An open session: an idle one that answers RSET, else a new one (with retries).

        A relay that cannot be reached is a RetryableError for the batch; `maybe_delivered`
        when some of its readers' messages already went (they are in the journal, so the
        batch must stay claimed and be settled from it, never released and claimed anew).
        """
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            try:
                if conn.rset()[0] == 250:
                    return conn
            except (smtplib.SMTPException, OSError):
                pass
            drop(conn)
        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_random_exponential(
                multiplier=self.retry_base_delay, max=self.retry_max_delay
            ),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._open)
        except RetryableError as exc:
            raise RetryableError(str(exc), maybe_delivered=maybe_delivered) from None

    def _open(self) -> smtplib.SMTP:
        conn = open_session(self.relay, self._tls, self._local_hostname(), self.timeout)
        self.sessions_opened += 1
        return conn

    # ------------------------------------------------------------------ helpers

    def _copy(self, message: Message, recipient: Recipient, now: datetime) -> bytes:
        raw = reader_copy(message, recipient, now, "the SMTP transport")
        return self.signer.sign(raw) if self.signer is not None else raw

    def _entries(self, message: Message) -> dict[str, Entry]:
        if self.journal is None or message.batch_key is None:
            return {}
        return self.journal.read(message.batch_key, (r.email for r in message.recipients))

    def _write(self, key: str | None, entries: dict[str, Entry]) -> None:
        if self.journal is not None and key is not None and entries:
            self.journal.write(key, entries, self.clock())

    def _backoff(self, attempt: int) -> float:
        return float(min(self.retry_max_delay, self.retry_base_delay * 2**attempt))

    def _local_hostname(self) -> str:
        # smtplib asks the resolver for our name on every new session unless told it once.
        if self._hostname is None:
            self._hostname = socket.getfqdn() or "localhost"
        return self._hostname


def relay_check(settings: Settings) -> tuple[bool, list[str]]:
    """For `digest check` with DIGEST_TRANSPORT=smtp: open a session with the relay as a send
    would (TLS verified, logged in) and QUIT, sending nothing; (ok, lines to print)."""
    if settings.transport != "smtp" or settings.relay is None:
        return True, []
    transport = SmtpTransport.from_settings(settings, None, clock=lambda: datetime.now(UTC))
    relay = transport.relay
    try:
        conn = transport._open()
    except (PermanentError, RetryableError) as exc:
        return False, [f"SMTP: {exc}"]
    quit_session(conn)
    how = "STARTTLS" if relay.security == "starttls" else "TLS"
    login = f", logged in as {relay.username}" if relay.username else ", no login"
    return True, [f"SMTP: the relay {relay.where} answered ({how}, certificate verified{login})"]
