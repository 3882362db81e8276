"""Subscribers: double opt-in subscribe, confirm, unsubscribe, erase, and CSV import / export.

Library functions take the engine, the settings and `now`; the web service and the CLI are thin
wrappers over them. A subscriber's address is stored normalised and lower-cased, so it is unique
whatever case it was typed in.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, BinaryIO, Literal, TextIO, cast, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Connection, Engine, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from digest.config import Settings
from digest.core.mails import Message, Recipient
from digest.db import subscribers
from digest.delivery import send_one_off
from digest.headers import display_name_problem
from digest.render import render_mail
from digest.tokens import BadToken, Purpose, make_token, read_token

__all__ = [
    "CSV_COLUMNS",
    "STATUSES",
    "AlreadySuppressed",
    "ImportReport",
    "InvalidSubscriber",
    "RowError",
    "Subscriber",
    "SubscriberStatus",
    "Subscription",
    "add_confirmed",
    "clean_name",
    "clean_timezone",
    "confirm",
    "confirm_url",
    "count_by_status",
    "erase",
    "export_csv",
    "get_subscriber",
    "import_csv",
    "list_subscribers",
    "mark_status",
    "normalise_email",
    "preferences_url",
    "send_confirmation",
    "subscribe",
    "subscriber_from_token",
    "unsubscribe",
    "unsubscribe_subscriber",
    "unsubscribe_url",
]

SubscriberStatus = Literal["pending", "active", "unsubscribed", "bounced", "complained"]
STATUSES: tuple[str, ...] = get_args(SubscriberStatus)
# Addresses that asked to stop or cannot take mail: nothing but their owner's fresh, confirmed
# consent (or an operator's erase) brings them back; imports never do.
SUPPRESSED = frozenset({"unsubscribed", "bounced", "complained"})
CSV_COLUMNS = ("email", "name", "status", "timezone")
TIMEZONE_MAX = 64
# Spreadsheets run a cell starting with one of these as a formula (CSV injection); export
# prefixes such a cell with an apostrophe and import takes it off again, so files round-trip.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class InvalidSubscriber(ValueError):
    """An address, name or time zone that cannot be stored; the message says which and why."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.reason = message


class AlreadySuppressed(Exception):
    """The address unsubscribed, bounced or complained; only its owner can subscribe it again."""


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One subscriber as stored; `email` is the normalised, lower-cased address."""

    id: int
    email: str
    name: str | None
    status: SubscriberStatus
    source: str
    timezone: str | None
    paused_until: datetime | None
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    confirm_sent_at: datetime | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Subscriber:
        return cls(**dict(row._mapping))


@dataclass(frozen=True, slots=True)
class Subscription:
    """What `subscribe` did: the subscriber as stored now, and the mail it owes, if any."""

    subscriber: Subscriber
    # The confirmation mail to send, or None when none is due (already active, suppressed,
    # or one went out less than `confirm_resend_interval` ago).
    mail: Message | None
    # `confirm_sent_at` before this claim: `send_confirmation` puts it back when the send
    # fails, so the person can retry at once instead of waiting out the resend interval.
    previous_confirm_sent_at: datetime | None = None


# --------------------------------------------------------------------------- input cleaning


def normalise_email(raw: str) -> str:
    """The address as stored: validated (syntax only, no DNS), normalised, lower-cased.

    An internationalised domain is kept in Unicode (`dave@exämple.com`, typed either way) and
    goes out in punycode (`digest.headers.ascii_address`). A non-ASCII local part is refused
    here: it needs SMTPUTF8 end to end, SendGrid drops such mail silently, and an address
    digest accepted but cannot deliver would look subscribed and never get a mail.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidSubscriber("email", "an email address is required")
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        message = str(exc)
        if "before the @-sign" in message and not text.partition("@")[0].isascii():
            message = (
                "addresses with non-ASCII characters before the @ (SMTPUTF8) cannot be "
                "delivered by digest's mail services; please use an ASCII address"
            )
        raise InvalidSubscriber("email", message) from None
    return checked.normalized.lower()


def clean_name(raw: str | None) -> str | None:
    """An optional display name: trimmed, and refused when it breaks `digest.headers`' rules.

    Names go into mail headers (To:), subjects and greetings, so anything that could break a
    header or hide text is refused rather than silently stripped: controls, line breaks, bidi
    overrides and RFC 2047 encoded-words (which mail software would decode into them).
    """
    if raw is None:
        return None
    name = raw.strip()
    if not name:
        return None
    problem = display_name_problem(name)
    if problem is not None:
        raise InvalidSubscriber("name", problem)
    return name


def clean_timezone(raw: str | None) -> str | None:
    """An IANA zone name such as `Europe/Amsterdam`, or None when empty."""
    zone = (raw or "").strip()
    if not zone:
        return None
    if len(zone) > TIMEZONE_MAX:
        raise InvalidSubscriber("timezone", f"at most {TIMEZONE_MAX} characters")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSubscriber("timezone", f"unknown IANA time zone {zone!r}") from None
    return zone


# --------------------------------------------------------------------------- links


def _link(settings: Settings, purpose: Purpose, subscriber_id: int, email: str) -> str:
    return f"{settings.base_url}/{purpose}/{make_token(settings, purpose, subscriber_id, email)}"


def confirm_url(settings: Settings, subscriber_id: int, email: str) -> str:
    """The link in the confirmation mail (expires after `confirm_max_age`)."""
    return _link(settings, "confirm", subscriber_id, email)


def unsubscribe_url(settings: Settings, subscriber_id: int, email: str) -> str:
    """The unsubscribe link and List-Unsubscribe target; it never expires, old mails keep working."""
    return _link(settings, "unsubscribe", subscriber_id, email)


def preferences_url(settings: Settings, subscriber_id: int, email: str) -> str:
    return _link(settings, "preferences", subscriber_id, email)


# --------------------------------------------------------------------------- reading


def get_subscriber(engine: Engine | Connection, email_or_id: str | int) -> Subscriber | None:
    """The subscriber with this id, or this address in any case; None when there is none."""
    if isinstance(email_or_id, int):
        condition = subscribers.c.id == email_or_id
    else:
        try:
            condition = subscribers.c.email == normalise_email(email_or_id)
        except InvalidSubscriber:
            return None
    row = _first(engine, select(subscribers).where(condition))
    return Subscriber.from_row(row) if row else None


def list_subscribers(
    engine: Engine | Connection, status: SubscriberStatus | None = None
) -> list[Subscriber]:
    query = select(subscribers).order_by(subscribers.c.id)
    if status is not None:
        query = query.where(subscribers.c.status == status)
    with _connect(engine) as conn:
        return [Subscriber.from_row(r) for r in conn.execute(query)]


def count_by_status(engine: Engine | Connection) -> dict[str, int]:
    """Subscribers per status, every status present (zero when none)."""
    query = select(subscribers.c.status, func.count()).group_by(subscribers.c.status)
    counts = dict.fromkeys(STATUSES, 0)
    with _connect(engine) as conn:
        for status, n in conn.execute(query):
            counts[status] = n
    return counts


def subscriber_from_token(
    engine: Engine | Connection, settings: Settings, purpose: Purpose, token: str
) -> Subscriber | None:
    """Verify `token` and return its subscriber, without changing anything (for GET pages).

    Raises `BadToken` when the token is forged, tampered with, expired or for another purpose.
    Returns None when the token is genuine but its subscriber is gone (erased, or the id now
    belongs to another address): there is nothing left to act on.
    """
    max_age = settings.confirm_max_age if purpose == "confirm" else None
    data = read_token(settings, purpose, token, max_age=max_age)
    found = get_subscriber(engine, data.subscriber_id)
    if found is None or not data.matches(found.email):
        return None
    return found


# --------------------------------------------------------------------------- the opt-in flow


def subscribe(
    engine: Engine,
    settings: Settings,
    email: str,
    *,
    name: str | None = None,
    timezone: str | None = None,
    source: str = "web",
    now: datetime,
    send: bool = True,
) -> Subscription:
    """Start (or restart) a double opt-in for `email`.

    New and unsubscribed addresses become `pending` and are owed a confirmation mail; a pending
    address is owed another only once per `confirm_resend_interval`. Active, bounced and
    complained addresses are left exactly as they are. The confirmation mail is rendered in
    every case, so the caller's answer takes the same work whether or not the address is known.
    With `send=False` the caller sends `Subscription.mail` itself (the web service does, after
    answering) through `send_confirmation`.
    """
    address = normalise_email(email)
    name = clean_name(name)
    subscriber, previous = _start_opt_in(engine, settings, address, name, timezone, source, now)
    mail = _confirmation_mail(settings, subscriber)
    if previous is _NOT_DUE:
        return Subscription(subscriber, None)
    result = Subscription(subscriber, mail, previous)
    if send:
        send_confirmation(engine, settings, result)
    return result


def send_confirmation(engine: Engine, settings: Settings, subscription: Subscription) -> None:
    """Send the confirmation mail `subscribe` prepared; on failure free the resend slot again."""
    if subscription.mail is None:
        return
    try:
        send_one_off(settings, subscription.mail)
    except Exception:  # a provider error, or the outbox folder not writable: same remedy
        # Give back the claim so the person can try again at once instead of waiting an hour.
        sub = subscription.subscriber
        with engine.begin() as conn:
            conn.execute(
                update(subscribers)
                .where(
                    subscribers.c.id == sub.id,
                    subscribers.c.confirm_sent_at == sub.confirm_sent_at,
                )
                .values(confirm_sent_at=subscription.previous_confirm_sent_at)
            )
        raise


def confirm(engine: Engine, settings: Settings, token: str, *, now: datetime) -> Subscriber:
    """Activate the pending subscriber a confirm token names (idempotent once active).

    Raises `BadToken` for a forged, tampered, expired or wrong-purpose token, for a token whose
    subscriber is gone or changed address, and when the subscription was cancelled since (an
    old confirm link must not undo an unsubscribe).
    """
    found = subscriber_from_token(engine, settings, "confirm", token)
    if found is None:
        raise BadToken("this link is not valid")
    with engine.begin() as conn:
        conn.execute(
            update(subscribers)
            .where(subscribers.c.id == found.id, subscribers.c.status == "pending")
            .values(status="active", confirmed_at=now, updated_at=now)
        )
        current = get_subscriber(conn, found.id)
    if current is None or current.status != "active":
        raise BadToken(
            "this subscription was cancelled after the link was sent; subscribe again to get "
            "a new link"
        )
    return current


def unsubscribe(
    engine: Engine, settings: Settings, token: str, *, now: datetime
) -> Subscriber | None:
    """Unsubscribe whoever an unsubscribe token names; idempotent, and None if they are gone.

    Unsubscribe tokens never expire (an old mail's link must still work). Bounced and complained
    addresses keep their stronger status.
    """
    found = subscriber_from_token(engine, settings, "unsubscribe", token)
    if found is None:
        return None
    return unsubscribe_subscriber(engine, found.id, now=now)


def unsubscribe_subscriber(
    engine: Engine, subscriber_id: int, *, now: datetime
) -> Subscriber | None:
    """Unsubscribe a pending or active subscriber the caller has already identified (an
    unsubscribe or preferences link); idempotent, and bounced or complained stay as they are."""
    with engine.begin() as conn:
        conn.execute(
            update(subscribers)
            .where(
                subscribers.c.id == subscriber_id, subscribers.c.status.in_(["pending", "active"])
            )
            .values(status="unsubscribed", unsubscribed_at=now, updated_at=now)
        )
        return get_subscriber(conn, subscriber_id)


def mark_status(
    engine: Engine | Connection,
    subscriber_id: int,
    status: Literal["unsubscribed", "bounced", "complained"],
    now: datetime,
) -> Subscriber | None:
    """Record what the mail provider reported (the event webhook calls this).

    A complaint is final: later bounces or unsubscribes do not overwrite it. Returns the
    subscriber as stored now, or None when the id is unknown (erased).
    """
    if status not in SUPPRESSED:
        raise ValueError(f"mark_status sets unsubscribed, bounced or complained (got {status!r})")
    values: dict[str, Any] = {"status": status, "updated_at": now}
    stmt = update(subscribers).where(
        subscribers.c.id == subscriber_id,
        subscribers.c.status != "complained",
        subscribers.c.status != status,
    )
    with _connect(engine) as conn:
        conn.execute(stmt.values(**values))
        if status == "unsubscribed":
            conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id, subscribers.c.unsubscribed_at.is_(None))
                .values(unsubscribed_at=now)
            )
        return get_subscriber(conn, subscriber_id)


def add_confirmed(
    engine: Engine,
    email: str,
    *,
    name: str | None = None,
    timezone: str | None = None,
    source: str = "cli",
    now: datetime,
) -> tuple[Subscriber, bool]:
    """Add `email` as active without a confirmation mail (the operator vouches for consent).

    Returns (subscriber, changed). A pending address is activated; an active one is left alone.
    Raises `AlreadySuppressed` for an unsubscribed, bounced or complained address: only its
    owner can bring it back (or an operator who erased it first, on the owner's request).
    """
    address = normalise_email(email)
    name = clean_name(name)
    timezone = clean_timezone(timezone)
    with engine.begin() as conn:
        existing = get_subscriber(conn, address)
        if existing is None:
            conn.execute(
                insert(subscribers).values(
                    email=address,
                    name=name,
                    status="active",
                    source=source,
                    timezone=timezone,
                    created_at=now,
                    confirmed_at=now,
                    updated_at=now,
                )
            )
            changed = True
        elif existing.status in SUPPRESSED:
            raise AlreadySuppressed(
                f"{address} is {existing.status}; only its owner can subscribe it again"
            )
        elif existing.status == "pending":
            conn.execute(
                update(subscribers)
                .where(subscribers.c.id == existing.id)
                .values(status="active", confirmed_at=now, updated_at=now)
            )
            changed = True
        else:
            changed = False
        current = get_subscriber(conn, address)
    assert current is not None
    return current, changed


def erase(engine: Engine, email_or_id: str | int) -> bool:
    """Delete a subscriber and their personal data (GDPR erase); False when there was none.

    The delivery ledger and events keep their rows with `subscriber_id` set to NULL (the
    foreign keys say ON DELETE SET NULL), so counts survive without anyone's address.
    """
    found = get_subscriber(engine, email_or_id)
    if found is None:
        return False
    with engine.begin() as conn:
        conn.execute(delete(subscribers).where(subscribers.c.id == found.id))
    return True


# --------------------------------------------------------------------------- CSV


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    message: str
    # The last line of a row that runs on over several lines inside a quoted cell, else None.
    # No column allows a line break, so such a row is always bad, and two stray quotes that
    # pair up hide every line between them in it: showing where it ends makes that visible.
    end_line: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportReport:
    """What an import did, row by row; `errors` name each bad row's line."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    # unsubscribed / bounced / complained addresses the file would have brought back
    kept_suppressed: int = 0
    errors: list[RowError] = field(default_factory=list)
    # The file as a whole could not be read (no usable header, a torn quote, a byte that is not
    # UTF-8), so nothing was imported; `errors` ends with the reason.
    refused: bool = False


def export_csv(
    engine: Engine | Connection, out: TextIO, status: SubscriberStatus | None = None
) -> int:
    """Write subscribers as CSV (email,name,status,timezone) to `out`; returns the row count.

    The file is what `import_csv` reads, so export → import round-trips.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows = list_subscribers(engine, status)
    for sub in rows:
        writer.writerow(_csv_safe(v or "") for v in (sub.email, sub.name, sub.status, sub.timezone))
    return len(rows)


def import_csv(
    engine: Engine,
    lines: Iterable[str] | BinaryIO,
    *,
    confirmed: bool = False,
    now: datetime,
) -> ImportReport:
    """Import subscribers from CSV with a header row (email[,name][,status][,timezone]).

    `lines` is a binary file (decoded as UTF-8 here, so a bad byte is reported by its line and
    its offset in the file; a BOM is fine) or text lines as a file opened with `newline=""`
    yields them.

    Each bad row is reported with its line number and left out; the good ones are imported in
    one transaction. A file that cannot be read to its end is refused whole and nothing is
    imported (`ImportReport.refused`): a quote left open swallows every line after it into one
    cell, and a byte that is not UTF-8 stops the decoding, so importing the rows before the
    damage would pass a torn file off as a small success. The whole file is read and checked
    before the transaction starts, so a refused file leaves the database as it was.

    Rows without a status become `active` with `confirmed=True` (the operator vouches they
    opted in) and `pending` otherwise; `active` in the file needs `confirmed`. Existing
    addresses are updated, except that an unsubscribed, bounced or complained address is never
    brought back, and an active one is never set back to pending. No mail is sent. Importing
    the same file twice changes nothing the second time, so a refused file is fixed and
    imported again.
    """
    report = ImportReport()
    try:
        rows = list(_read_rows(_CsvLines(lines), confirmed, report))
    except _BadFile as exc:
        report.errors.append(RowError(exc.line, str(exc)))
        report.errors.sort(key=lambda e: e.line)
        report.refused = True
        return report
    with engine.begin() as conn:
        for _line, row in rows:
            _import_row(conn, row, now, report)
    report.errors.sort(key=lambda e: e.line)
    return report


class _BadFile(Exception):
    """The file cannot be read as a whole; the message says where, why and what to do."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True, slots=True)
class _Row:
    email: str
    name: str | None
    status: SubscriberStatus
    timezone: str | None


_NOTHING_IMPORTED = "nothing was imported"


class _CsvLines:
    """The lines the csv reader reads, one at a time, with what is needed to report a torn file.

    Lines end where a file opened with `newline=""` ends them: at `\\n`, `\\r\\n` and a lone
    `\\r`, so line numbers are the same whether the caller passes bytes or text. Bytes are
    decoded line by line, which keeps the absolute offset of a bad byte at hand (a text file's
    decoder reports offsets within its own read chunk) and reads the file lazily, as a text
    file would.
    """

    def __init__(self, source: Iterable[str] | BinaryIO) -> None:
        self.ended = False  # the source ran out (the csv reader asked for a line past the end)
        self._raw: Iterator[Any]
        self._lines: Iterator[str]
        if isinstance(source, io.RawIOBase | io.BufferedIOBase):
            self._raw = _split_lines(cast(BinaryIO, source))
            self._lines = self._decode(self._raw)
        else:
            self._raw = self._lines = iter(cast(Iterable[str], source))

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        try:
            return next(self._lines)
        except StopIteration:
            self.ended = True
            raise

    def count_rest(self) -> int:
        """How many lines are left, counted without decoding or parsing them."""
        return sum(1 for _ in self._raw)

    @staticmethod
    def _decode(raw: Iterator[tuple[int, bytes]]) -> Iterator[str]:
        for number, (offset, data) in enumerate(raw, start=1):
            if number == 1 and data.startswith(codecs.BOM_UTF8):
                data, offset = data[len(codecs.BOM_UTF8) :], offset + len(codecs.BOM_UTF8)
                if not data:
                    return  # nothing but a BOM: an empty file
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(data[: exc.start].decode("utf-8")) + 1
                raise _BadFile(
                    number,
                    f"not UTF-8 text: byte 0x{data[exc.start]:02X} at offset "
                    f"{offset + exc.start} in the file (line {number}, column {column}) cannot "
                    "be decoded (the file is probably Latin-1 or Windows-1252); save the file as "
                    "UTF-8 (a spreadsheet's “CSV UTF-8”) and import again; "
                    f"{_NOTHING_IMPORTED}",
                ) from None
            yield text


# Where a file opened with newline="" ends a line that binary reading (which splits at b"\n"
# only) leaves joined: after each lone CR. UTF-8 never uses these bytes inside a character.
_AFTER_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")


def _split_lines(source: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(offset in the file, bytes) of each line, line ending included."""
    offset = 0
    for chunk in source:
        for line in _AFTER_LONE_CR.split(chunk) if b"\r" in chunk else (chunk,):
            if line:
                yield offset, line
                offset += len(line)


def _next_cells(reader: Any, lines: _CsvLines, line: int) -> list[str] | None:
    """The next record's cells, None at the end of the file, or `_BadFile` for a torn quote.

    The reader is strict about quotes, so a quote that opens a cell must close it right before a
    comma or the end of a line. A quote left open therefore ends up in one of three errors, each
    raised on a later line than the record's first or at the end of the input: a quote followed
    by other text (a stray quote pairs up with the next quote in the file, which almost always
    has text after it), the field size limit, or the end of the data. Errors confined to one
    line are that row's problem (`csv.Error`); the reader starts afresh on the next line.
    """
    try:
        cells: list[str] = next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        if not lines.ended and reader.line_num == line:
            raise
        total = reader.line_num + lines.count_rest()
        if lines.ended:
            how = "is never closed"
        elif str(exc).startswith("field larger than field limit"):
            how = (
                f"is not closed: the cell runs on to line {reader.line_num}, where it outgrows "
                f"the limit of {csv.field_size_limit()} characters"
            )
        else:
            how = (
                f"is not closed properly: the cell runs on to line {reader.line_num}, where a "
                "quote is followed by other text"
            )
        if total == line:
            unread = " (the file ends inside it)"
        elif total == line + 1:
            unread = f", so line {total} could not be read"
        else:
            unread = f", so lines {line + 1}–{total} ({total - line} lines) could not be read"
        raise _BadFile(
            line,
            f"the quote that opens a cell on this line {how}{unread}; fix the quote on line "
            f"{line} and import again; {_NOTHING_IMPORTED}",
        ) from None
    return cells


def _csv_problem(exc: csv.Error) -> str:
    if str(exc) == "',' expected after '\"'":
        return (
            "not valid CSV: a quoted cell must end at its closing quote, but text follows it; "
            'quote the whole cell and double any quote inside it, as in "Ann ""A"" Smith"'
        )
    return f"not valid CSV: {exc}"


def _read_rows(
    lines: _CsvLines, confirmed: bool, report: ImportReport
) -> Iterator[tuple[int, _Row]]:
    reader = csv.reader(lines, strict=True)
    try:
        first = _next_cells(reader, lines, 1)
    except csv.Error as exc:
        raise _BadFile(1, _csv_problem(exc)) from None
    if first is None:
        raise _BadFile(1, "the file is empty; expected a header row such as 'email,name'")
    header = [h.strip().lower().lstrip("\ufeff") for h in first]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if "email" not in header or unknown or len(set(header)) != len(header):
        raise _BadFile(
            1,
            f"the header must name the columns {', '.join(CSV_COLUMNS)} (email required, each "
            f"at most once); got {','.join(header)!r}",
        )
    seen: dict[str, int] = {}
    while True:
        # A quoted cell may span lines; a row is reported on the line where it starts, which is
        # where an editor finds it (`line_num` after reading is the line where it ends).
        line = reader.line_num + 1
        try:
            cells = _next_cells(reader, lines, line)
        except csv.Error as exc:
            report.errors.append(RowError(line, _csv_problem(exc)))
            continue
        if cells is None:
            return
        end_line = reader.line_num if reader.line_num > line else None
        if not any(c.strip() for c in cells):
            continue  # blank lines are not rows
        if len(cells) != len(header):
            report.errors.append(
                RowError(line, f"expected {len(header)} columns, found {len(cells)}", end_line)
            )
            continue
        values = {h: _csv_unsafe(c) for h, c in zip(header, cells, strict=True)}
        try:
            row = _parse_row(values, confirmed)
        except InvalidSubscriber as exc:
            report.errors.append(RowError(line, str(exc), end_line))
            continue
        if row.email in seen:
            report.errors.append(
                RowError(
                    line, f"email: {row.email} already appears on line {seen[row.email]}", end_line
                )
            )
            continue
        seen[row.email] = line
        yield line, row


def _parse_row(values: dict[str, str], confirmed: bool) -> _Row:
    email = normalise_email(values["email"])
    status = values.get("status", "").strip().lower() or ("active" if confirmed else "pending")
    if status not in STATUSES:
        raise InvalidSubscriber("status", f"must be one of {', '.join(STATUSES)} (got {status!r})")
    if status == "active" and not confirmed:
        raise InvalidSubscriber(
            "status", "active needs --confirmed (vouch that these people opted in)"
        )
    return _Row(
        email=email,
        name=clean_name(values.get("name")),
        status=status,  # type: ignore[arg-type]
        timezone=clean_timezone(values.get("timezone")),
    )


def _import_row(conn: Connection, row: _Row, now: datetime, report: ImportReport) -> None:
    existing = get_subscriber(conn, row.email)
    if existing is None:
        conn.execute(
            insert(subscribers).values(
                email=row.email,
                name=row.name,
                status=row.status,
                source="import",
                timezone=row.timezone,
                created_at=now,
                confirmed_at=now if row.status == "active" else None,
                unsubscribed_at=now if row.status == "unsubscribed" else None,
                updated_at=now,
            )
        )
        report.added += 1
        return
    if existing.status in SUPPRESSED:
        if row.status != existing.status:
            report.kept_suppressed += 1
        else:
            report.unchanged += 1
        return
    changes: dict[str, Any] = {}
    if row.name is not None and row.name != existing.name:
        changes["name"] = row.name
    if row.timezone is not None and row.timezone != existing.timezone:
        changes["timezone"] = row.timezone
    # Status moves forward only: pending → active, anything → suppressed; never active → pending.
    if row.status != existing.status and not (
        existing.status == "active" and row.status == "pending"
    ):
        changes["status"] = row.status
        if row.status == "active":
            changes["confirmed_at"] = now
        if row.status == "unsubscribed":
            changes["unsubscribed_at"] = now
    if not changes:
        report.unchanged += 1
        return
    conn.execute(
        update(subscribers).where(subscribers.c.id == existing.id).values(updated_at=now, **changes)
    )
    report.updated += 1


def _csv_safe(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _csv_unsafe(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA_START) else value


# --------------------------------------------------------------------------- private

_NOT_DUE: Any = object()


def _start_opt_in(
    engine: Engine,
    settings: Settings,
    address: str,
    name: str | None,
    raw_timezone: str | None,
    source: str,
    now: datetime,
) -> tuple[Subscriber, Any]:
    """Store the opt-in and claim the right to send a confirmation now.

    Returns the subscriber and the `confirm_sent_at` it had before the claim, or `_NOT_DUE`
    when no mail is owed. The claim is a conditional UPDATE, so two requests racing for the
    same address send one mail, not two.
    """
    try:
        timezone = clean_timezone(raw_timezone)
    except InvalidSubscriber:
        timezone = None  # a hint from the browser, not something the person typed
    for _attempt in range(2):
        try:
            with engine.begin() as conn:
                existing = get_subscriber(conn, address)
                new_row = insert(subscribers).values(
                    email=address,
                    name=name,
                    status="pending",
                    source=source,
                    timezone=timezone,
                    created_at=now,
                    updated_at=now,
                )
                if existing is None and engine.dialect.insert_returning:
                    # A new address is born with its claim: no other request can hold one on a
                    # row that did not exist (a racing insert of the same address fails and
                    # retries below). Read and insert, instead of read, insert, read, claim, read.
                    row = conn.execute(
                        new_row.values(confirm_sent_at=now).returning(*subscribers.c)
                    ).one()
                    return Subscriber.from_row(row), None
                if existing is None:
                    conn.execute(new_row)
                elif existing.status == "unsubscribed":
                    # Back through confirmation; the row now describes the new opt-in.
                    conn.execute(
                        update(subscribers)
                        .where(subscribers.c.id == existing.id)
                        .values(
                            status="pending",
                            name=name,
                            timezone=timezone,
                            source=source,
                            confirmed_at=None,
                            unsubscribed_at=None,
                            updated_at=now,
                        )
                    )
                current = get_subscriber(conn, address)
                assert current is not None
                if current.status != "pending":
                    return current, _NOT_DUE
                due = now - timedelta(seconds=settings.confirm_resend_interval)
                claimed = conn.execute(
                    update(subscribers)
                    .where(
                        subscribers.c.id == current.id,
                        or_(
                            subscribers.c.confirm_sent_at.is_(None),
                            subscribers.c.confirm_sent_at <= due,
                        ),
                    )
                    .values(confirm_sent_at=now)
                )
                if claimed.rowcount != 1:
                    return current, _NOT_DUE
                claimed_row = get_subscriber(conn, current.id)
                assert claimed_row is not None
                return claimed_row, current.confirm_sent_at
        except IntegrityError:
            continue  # another request inserted the same address first: read theirs
    raise RuntimeError(f"could not store the subscription for {address}")


def _confirmation_mail(settings: Settings, subscriber: Subscriber) -> Message:
    context: dict[str, object] = {
        "language": settings.language,
        "newsletter_name": settings.newsletter_name,
        "postal_address": settings.postal_address,
        "base_url": settings.base_url,
        "site_url": settings.site_url,
        "name": subscriber.name,
        "confirm_url": confirm_url(settings, subscriber.id, subscriber.email),
        "confirm_days": max(1, settings.confirm_max_age // 86400),
    }
    _mjml, html, text = render_mail(settings.templates_dir, "confirm", context)
    return Message(
        subject=f"Confirm your subscription to {settings.newsletter_name}",
        html=html,
        text=text,
        recipients=[Recipient(email=subscriber.email, name=subscriber.name)],
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
        categories=["confirm"],
    )


@contextmanager
def _connect(engine: Engine | Connection) -> Iterator[Connection]:
    """The caller's connection as it is, or a transaction of its own on an engine."""
    if isinstance(engine, Connection):
        yield engine
        return
    with engine.begin() as conn:
        yield conn


def _first(engine: Engine | Connection, query: Any) -> Any:
    with _connect(engine) as conn:
        return conn.execute(query).first()
