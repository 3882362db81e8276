"""One reader's mail as RFC 5322 bytes, from a skeleton built once per issue.

Every transport that writes whole messages (the outbox's .eml files, an SMTP relay's DATA)
sends the same bytes, built here. The weekly issue is the same for 100,000 readers but for a
few markers (their links, their name) and a few headers (To, Message-ID, List-Unsubscribe), so
`Skeleton` does the reader-independent work once — the sender's headers encoded, the bodies cut
into lines, every line without a marker already transfer-encoded — and `Skeleton.fill` only
encodes what differs. Quoted-printable is line-local (a soft break never crosses a hard one),
so the lines joined are byte for byte the encoding of the whole.
"""

from __future__ import annotations

import binascii
import email.errors
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import format_datetime, make_msgid
from functools import lru_cache

from digest.core.headers import (
    HeaderError,
    address_header,
    ascii_address,
    list_unsubscribe_header,
    text_header,
    verify_header_block,
)
from digest.core.mails import MARKER_RE, Message, Recipient, fill_markers
from digest.delivery.transport import PermanentError

__all__ = ["Skeleton", "Unwritable", "mime_bytes", "reader_copy"]

# Header values are written as digest encoded them (`digest.core.headers`), never re-parsed and
# re-folded by the email package: that round trip is what decodes an encoded-word into a raw
# CR/LF (CVE-2024-6923) and what RFC 2047-encodes a long List-Unsubscribe into uselessness.
# The headers of the multipart structure, after digest's own.
_MIME_HEADERS = ("MIME-Version", "Content-Type")
# RFC 5322's SHOULD (and the email package's SMTP policy): lines of at most 78 characters.
_MAX_LINE = 78
_BASE64_CHUNK = _MAX_LINE // 4 * 3  # bytes per base64 line of at most 76 characters
# What `bytes.splitlines` splits on, for the text before it is encoded.
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")


def _address(email: str, name: str | None = None) -> str:
    """`address_header`, refusing an address with nothing after its last @: a mail client's
    parser fails on it (Python's raises IndexError), so no such mail is written."""
    if not email.strip().rpartition("@")[2]:
        raise HeaderError(f"address {email!r} has no domain after the @")
    return address_header(email, name)


# The same X- values come with every mail of a batch: encoded once (pure functions of their
# text; a refused value raises again each time).
_text = lru_cache(maxsize=1024)(text_header)


def mime_bytes(message: Message, recipient: Recipient, *, now: datetime) -> bytes:
    """The RFC 5322 bytes `recipient` would get at `now` (its Date): multipart/alternative,
    text first, with its header block verified as a mail client reads it.

    Raises `HeaderError` (a ValueError) when a value cannot be written safely, for example
    `UnsupportedAddress` for a non-ASCII local part; UnicodeEncodeError for a lone surrogate.
    """
    return Skeleton.of(message).fill(message, recipient, now=now)


# What building one mail raises for a value that cannot be written: `HeaderError` from digest's
# header rules (a ValueError, as is UnicodeEncodeError for a lone surrogate in a body); the email
# package's own errors (MessageError, and IndexError from its address parser) only from the
# email package's header helpers `digest.core.headers` still uses.
_UNWRITABLE = (ValueError, email.errors.MessageError, IndexError)


class Unwritable(Exception):
    """This one reader's mail cannot be written; `reason` says why, for their ledger row."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def reader_copy(message: Message, recipient: Recipient, now: datetime, who: str) -> bytes:
    """`recipient`'s mail as bytes, written by transport `who` (for its reasons).

    Raises `Unwritable` when the fault is this reader's own (their address or name), and
    `PermanentError` when the same mail cannot be written for a stand-in reader either: a
    fault in the message (or in building it) must stop the send, not write off every reader
    of the list as refused one by one.
    """
    try:
        return mime_bytes(message, recipient, now=now)
    except _UNWRITABLE as exc:
        error: BaseException = exc
    stand_in = replace(recipient, email=message.from_email, name=None)
    try:
        mime_bytes(message, stand_in, now=now)
    except _UNWRITABLE as exc:
        raise PermanentError(
            f"{who} cannot write this mail for anyone, so the fault is in the message, "
            f"not any one address: {_describe(exc)}"
        ) from exc
    try:
        mime_bytes(message, replace(recipient, name=None), now=now)
        part = "name"
    except _UNWRITABLE:
        part = "address"
    raise Unwritable(
        f"{who} cannot write a mail to this reader's {part}: {_describe(error)}; "
        f"correct or remove the {part} (sending again would refuse it again)"
    )


def _describe(exc: BaseException) -> str:
    # NonASCIILocalPartDefect's text ends in a stray ")" of the standard library's own.
    text = str(exc).strip()
    if text.endswith(")") and text.count(")") > text.count("("):
        text = text[:-1]
    return f"{text} ({type(exc).__name__})"


class _Body:
    """One text/<subtype> part of a skeleton: its lines, each encoded ahead unless it holds a
    marker, and the transfer encoding the email package's SMTP policy would choose."""

    def __init__(self, subtype: str, text: str) -> None:
        self._head = (
            f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: '
        ).encode("ascii")
        lines = _LINE_BREAK_RE.split(text)
        if lines and lines[-1] == "":  # a final line break ends the last line, as splitlines
            lines.pop()
        self._lines = lines
        # The lines a reader's values go into; all the others are encoded here, once.
        self._marked = [i for i, line in enumerate(lines) if MARKER_RE.search(line)]
        marked = set(self._marked)
        raw = [line.encode("utf-8") for line in lines]
        static = [line for i, line in enumerate(raw) if i not in marked]
        self._short = all(len(line) <= _MAX_LINE for line in static)
        self._ascii = all(line.isascii() for line in static)
        self._raw = [line + b"\r\n" for line in raw]
        # Quoted-printable unless base64 is shorter for the first ten lines (the policy's sniff,
        # made once on the unfilled text: either choice is a valid encoding of every fill).
        sniff = b"\r\n".join(raw[:10]) + b"\r\n"
        self._base64 = len(binascii.b2a_qp(sniff, istext=True)) > len(binascii.b2a_base64(sniff))
        self._qp = [
            b"" if i in marked else binascii.b2a_qp(line, istext=True)
            for i, line in enumerate(self._raw)
        ]

    def fill(self, values: Mapping[str, str]) -> bytes:
        """This part for one reader: markers filled, then only the filled lines encoded."""
        # A lone surrogate in a value: UnicodeEncodeError (a ValueError), as for the whole text.
        filled = {i: fill_markers(self._lines[i], values).encode("utf-8") for i in self._marked}
        if any(b"\r" in line or b"\n" in line for line in filled.values()):
            # A value broke a line: cut the whole text into lines again, as one piece.
            text = "\r\n".join(
                filled[i].decode("utf-8") if i in filled else line
                for i, line in enumerate(self._lines)
            )
            return self._head + _encode_whole(text)
        if self._short and all(len(line) <= _MAX_LINE for line in filled.values()):
            ascii_ = self._ascii and all(line.isascii() for line in filled.values())
            body = b"".join(
                filled[i] + b"\r\n" if i in filled else line for i, line in enumerate(self._raw)
            )
            return self._head + (b"7bit" if ascii_ else b"8bit") + b"\r\n\r\n" + body
        if self._base64:
            data = b"".join(
                filled[i] + b"\r\n" if i in filled else line for i, line in enumerate(self._raw)
            )
            return self._head + b"base64\r\n\r\n" + _base64(data)
        body = b"".join(
            binascii.b2a_qp(filled[i] + b"\r\n", istext=True) if i in filled else line
            for i, line in enumerate(self._qp)
        )
        return self._head + b"quoted-printable\r\n\r\n" + body


def _encode_whole(text: str) -> bytes:
    """`Content-Transfer-Encoding` value, blank line and body for `text` taken as a whole."""
    lines = text.encode("utf-8").splitlines()
    data = b"\r\n".join(lines) + b"\r\n"
    if max(map(len, lines), default=0) <= _MAX_LINE:
        return (b"7bit" if text.isascii() else b"8bit") + b"\r\n\r\n" + data
    sniff = b"\r\n".join(lines[:10]) + b"\r\n"
    if len(binascii.b2a_qp(sniff, istext=True)) > len(binascii.b2a_base64(sniff)):
        return b"base64\r\n\r\n" + _base64(data)
    return b"quoted-printable\r\n\r\n" + binascii.b2a_qp(data, istext=True)


def _base64(data: bytes) -> bytes:
    encoded = b"".join(
        binascii.b2a_base64(data[i : i + _BASE64_CHUNK]) for i in range(0, len(data), _BASE64_CHUNK)
    )
    return encoded.replace(b"\n", b"\r\n")


@dataclass(frozen=True, slots=True, eq=False)
class Skeleton:
    """What every reader's copy of one message shares, encoded once (`Skeleton.of` caches it).

    Reader-independent values that cannot be written raise when the skeleton is built, so a
    fault in the message (its sender, its subject) fails for every reader alike; the callers'
    stand-in check tells that apart from one reader's bad address.
    """

    sender: str
    reply_to: str | None
    domain: str | None
    subject: str | None  # None: the subject holds a marker, filled per reader
    headers: dict[str, str]  # the message's own, encoded (List-Unsubscribe kept whole)
    plain: _Body
    html: _Body

    @staticmethod
    def of(message: Message) -> Skeleton:
        return _skeleton(
            message.subject,
            message.html,
            message.text,
            message.from_email,
            message.from_name,
            message.reply_to,
            tuple(message.headers.items()),
        )

    def fill(self, message: Message, recipient: Recipient, *, now: datetime) -> bytes:
        """`recipient`'s copy of `message` (whose skeleton this is) at `now`."""
        values = recipient.substitutions
        subject = self.subject
        if subject is None:
            subject = text_header("Subject", fill_markers(message.subject, values))
        headers = [
            ("From", self.sender),
            ("To", _address(recipient.email, recipient.name)),
            ("Subject", subject),
            ("Date", format_datetime(now)),
            ("Message-ID", make_msgid(domain=self.domain)),
        ]
        if self.reply_to is not None:
            headers.append(("Reply-To", self.reply_to))
        merged = self.headers
        if recipient.headers:
            merged = {**merged, **{k: _header(k, v) for k, v in recipient.headers.items()}}
        headers.extend(merged.items())
        for key, value in {**message.custom_args, **recipient.custom_args}.items():
            name = f"X-Digest-{key.replace('_', '-').title()}"
            headers.append((name, _text(name, value)))
        plain = self.plain.fill(values)
        html = self.html.fill(values)
        boundary = _boundary(plain, html)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers)
        raw = b"".join(
            (
                head.encode("utf-8"),  # non-ASCII cannot be here; if it were, the check names it
                b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="',
                boundary,
                b'"\r\n\r\n--',
                boundary,
                b"\r\n",
                plain,
                b"\r\n--",
                boundary,
                b"\r\n",
                html,
                b"\r\n--",
                boundary,
                b"--\r\n",
            )
        )
        verify_header_block(raw, [*(name for name, _value in headers), *_MIME_HEADERS])
        return raw


def _header(key: str, value: str) -> str:
    if key.lower() == "list-unsubscribe":
        return list_unsubscribe_header(value)
    return _text(key, value)


@lru_cache(maxsize=16)
def _skeleton(
    subject: str,
    html: str,
    text: str,
    from_email: str,
    from_name: str | None,
    reply_to: str | None,
    headers: tuple[tuple[str, str], ...],
) -> Skeleton:
    # A handful of contents are live at once (an issue's renditions, a test mail, a confirmation).
    return Skeleton(
        sender=_address(from_email, from_name),
        reply_to=_address(reply_to) if reply_to else None,
        domain=ascii_address(from_email).rpartition("@")[2] or None,
        subject=None if MARKER_RE.search(subject) else text_header("Subject", subject),
        headers={key: _header(key, value) for key, value in headers},
        plain=_Body("plain", text),
        html=_Body("html", html),
    )


def _boundary(*parts: bytes) -> bytes:
    """A multipart boundary that none of `parts` holds (only a 7bit body could)."""
    while True:
        boundary = b"===============%019d==" % random.getrandbits(63)
        if not any(b"--" + boundary in part for part in parts):
            return boundary
