"""The outbox transport: one RFC 5322 `.eml` file per recipient in a folder.

It is the embedded default, so a fresh checkout can run the whole weekly job without an API key,
and what it writes is exactly what a mail client would show.
"""

from __future__ import annotations

import binascii
import contextlib
import email.errors
import hashlib
import json
import os
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as _READ_POLICY
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from pathlib import Path

from digest.core.headers import (
    HeaderError,
    address_header,
    ascii_address,
    list_unsubscribe_header,
    text_header,
    verify_header_block,
)
from digest.core.mails import Message, Recipient, fill_markers
from digest.delivery.transport import PermanentError, RetryableError, SendResult

__all__ = ["OutboxTransport", "build_mime", "mime_bytes"]

_SAFE_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")


def _fill(template: str, recipient: Recipient) -> str:
    return fill_markers(template, recipient.substitutions)


# Header values are written as digest encoded them (`digest.core.headers`), never re-parsed and
# re-folded by the email package: that round trip is what decodes an encoded-word into a raw
# CR/LF (CVE-2024-6923) and what RFC 2047-encodes a long List-Unsubscribe into uselessness.
# The headers of the multipart structure, after digest's own.
_MIME_HEADERS = ("MIME-Version", "Content-Type")


def _address(email: str, name: str | None = None) -> str:
    """`address_header`, refusing an address with nothing after its last @: a mail client's
    parser fails on it (Python's raises IndexError), so no such mail is written."""
    if not email.strip().rpartition("@")[2]:
        raise HeaderError(f"address {email!r} has no domain after the @")
    return address_header(email, name)


# The same From, Subject and X- values come with every mail of a batch and every confirmation:
# encoded once (pure functions of their text; a refused value raises again each time).
_sender = lru_cache(maxsize=64)(_address)
_text = lru_cache(maxsize=1024)(text_header)
_domain = lru_cache(maxsize=64)(lambda email: ascii_address(email).rpartition("@")[2] or None)


def _top_headers(message: Message, recipient: Recipient, now: datetime) -> list[tuple[str, str]]:
    domain = _domain(message.from_email)
    headers = [
        ("From", _sender(message.from_email, message.from_name)),
        ("To", _address(recipient.email, recipient.name)),
        ("Subject", _text("Subject", _fill(message.subject, recipient))),
        ("Date", format_datetime(now)),
        ("Message-ID", make_msgid(domain=domain)),
    ]
    if message.reply_to:
        headers.append(("Reply-To", _sender(message.reply_to)))
    for key, value in {**message.headers, **recipient.headers}.items():
        if key.lower() == "list-unsubscribe":
            headers.append((key, list_unsubscribe_header(value)))
        else:
            headers.append((key, _text(key, value)))
    for key, value in {**message.custom_args, **recipient.custom_args}.items():
        name = f"X-Digest-{key.replace('_', '-').title()}"
        headers.append((name, _text(name, value)))
    return headers


def build_mime(message: Message, recipient: Recipient, *, now: datetime) -> EmailMessage:
    """`mime_bytes` read back as a mail client reads it, for callers that look inside a mail.

    Raises `HeaderError` (a ValueError) when a value cannot be written safely, for example
    `UnsupportedAddress` for a non-ASCII local part.
    """
    parsed = BytesParser(policy=_READ_POLICY).parsebytes(mime_bytes(message, recipient, now=now))
    assert isinstance(parsed, EmailMessage)
    return parsed


def mime_bytes(message: Message, recipient: Recipient, *, now: datetime) -> bytes:
    """The RFC 5322 bytes one recipient would get at `now` (its Date): multipart/alternative,
    text first, with its header block verified as a mail client reads it.

    Written directly rather than through the email package's `EmailMessage`: the header values
    are digest's own already (`digest.core.headers`), and building, re-parsing and serialising
    the message object cost ~2.5 ms a mail, more than the whole sign-up besides. The bodies are
    encoded as the email package would choose (7bit or 8bit, else the shorter of
    quoted-printable and base64), by `binascii` in C.
    """
    headers = _top_headers(message, recipient, now)
    plain = _part("plain", _fill(message.text, recipient))
    html = _part("html", _fill(message.html, recipient))
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


# RFC 5322's SHOULD (and the email package's SMTP policy): lines of at most 78 characters.
_MAX_LINE = 78
_BASE64_CHUNK = _MAX_LINE // 4 * 3  # bytes per base64 line of at most 76 characters


def _part(subtype: str, text: str) -> bytes:
    """One text/<subtype> body part (its headers and encoded body), ending in CRLF."""
    cte, body = _encode_body(text)
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}'
    return head.encode("ascii") + b"\r\n\r\n" + body


def _encode_body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body) chosen as `email.contentmanager` does under the SMTP
    policy: 7bit (ASCII) or 8bit (UTF-8) for short lines, else quoted-printable unless base64
    is shorter for the first ten lines."""
    lines = text.encode("utf-8").splitlines()  # a lone surrogate: UnicodeEncodeError
    data = b"\r\n".join(lines) + b"\r\n"
    if max(map(len, lines), default=0) <= _MAX_LINE:
        # Short lines go as they are; UTF-8 ones as 8bit, as the SMTP policy (cte_type 8bit) does.
        return ("7bit" if text.isascii() else "8bit"), data
    sniff = b"\r\n".join(lines[:10]) + b"\r\n"
    if len(binascii.b2a_qp(sniff, istext=True)) > len(binascii.b2a_base64(sniff)):
        encoded = b"".join(
            binascii.b2a_base64(data[i : i + _BASE64_CHUNK])
            for i in range(0, len(data), _BASE64_CHUNK)
        )
        return "base64", encoded.replace(b"\n", b"\r\n")
    return "quoted-printable", binascii.b2a_qp(data, istext=True)


def _boundary(*parts: bytes) -> bytes:
    """A multipart boundary that none of `parts` holds (only a 7bit body could)."""
    while True:
        boundary = b"===============%019d==" % random.getrandbits(63)
        if not any(b"--" + boundary in part for part in parts):
            return boundary


class OutboxTransport:
    """Writes each recipient's mail to `directory`, atomically (temp file, then rename).

    A batch with a `batch_key` is written under names derived from that key and each address,
    so writing it again replaces the same files instead of adding copies; a manifest in
    `.batches/` is written last, and its presence is what `lookup_batch` reports.
    `clock` dates each mail as it is written (and names a one-off mail's files).
    """

    name = "outbox"
    exact_lookup = True
    max_batch = 1000

    def __init__(self, directory: Path | str, *, clock: Callable[[], datetime]) -> None:
        self.directory = Path(directory)
        self.clock = clock

    @property
    def _manifests(self) -> Path:
        return self.directory / ".batches"

    def send(self, message: Message) -> SendResult:
        """Write the batch; a reader whose mail cannot be written is refused, not raised.

        A folder that cannot be written (read-only, full, removed, a file in its place) is a
        `RetryableError` naming the folder: the issue pauses like a provider outage instead of
        crashing with the batch claimed. It counts as "maybe delivered", since some of the
        batch's files may already be written: its rows stay claimed, so the run that resumes it
        writes the same file names again (the batch key names them) instead of a new batch
        adding copies; only the manifest, written last, says the batch went out.
        """
        try:
            return self._write(message)
        except OSError as exc:
            raise RetryableError(
                self._folder_error("write to", exc), maybe_delivered=message.batch_key is not None
            ) from exc

    def _write(self, message: Message) -> SendResult:
        self.directory.mkdir(parents=True, exist_ok=True)
        if message.batch_key is None:
            prefix = f"{self.clock().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        else:
            prefix = _checked_key(message.batch_key)
        refused: dict[str, str] = {}
        for index, recipient in enumerate(message.recipients):
            try:
                data = _render(message, recipient, self.clock())
            except _Refused as exc:
                refused[recipient.email] = exc.reason
                continue
            if message.batch_key is None:
                final = self.directory / f"{prefix}-{index:04d}.eml"
            else:
                final = self.directory / f"{prefix}-{_address_tag(recipient.email)}.eml"
            _write_atomically(final, data, durable=False)
        if message.batch_key is not None:
            # One flush for the whole batch instead of an fsync per file: the manifest that
            # says "this batch went out" must not reach the disk before the mails it speaks for.
            _sync_all()
            self._manifests.mkdir(exist_ok=True)
            manifest = {
                "batch_key": prefix,
                "recipients": len(message.recipients),
                # By address tag, like the file names: what a resume after a crash between
                # here and the ledger records for these readers (`refused_in_batch`).
                "refused": {_address_tag(email): why for email, why in refused.items()},
            }
            _write_atomically(
                self._manifests / f"{prefix}.json", json.dumps(manifest).encode(), durable=True
            )
        return SendResult(message_id=prefix, refused=refused)

    def lookup_batch(self, batch_key: str) -> bool | None:
        """The outbox always knows: a batch went out exactly when its manifest exists.

        A folder that cannot be read is a `RetryableError` (it can tell again once the folder
        is back), not "cannot tell", which would have the ambiguity policy write readers off.
        """
        path = self._manifests / f"{_checked_key(batch_key)}.json"
        try:
            return path.exists()
        except OSError as exc:
            raise RetryableError(self._folder_error("read", exc)) from exc

    def refused_in_batch(self, message: Message) -> dict[str, str]:
        """Which of `message`'s recipients the outbox refused when it wrote the batch, with why.

        Read from the batch's manifest: a run that died after the outbox wrote a batch but
        before the ledger heard records these readers exactly as the dead run would have.
        Nothing when the batch was never written (it is sent again, and refused again).
        """
        if message.batch_key is None:
            return {}
        path = self._manifests / f"{_checked_key(message.batch_key)}.json"
        try:
            manifest = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RetryableError(self._folder_error("read", exc)) from exc
        except ValueError as exc:
            raise PermanentError(
                f"the outbox manifest {path} is not valid JSON ({exc}); it is written whole or "
                "not at all, so something else wrote it: delete it to have the batch written "
                "again"
            ) from exc
        by_tag = manifest.get("refused") or {}
        return {
            r.email: str(by_tag[tag])
            for r in message.recipients
            if (tag := _address_tag(r.email)) in by_tag
        }

    def _folder_error(self, doing: str, exc: OSError) -> str:
        return (
            f"cannot {doing} the outbox folder {self.directory} ({type(exc).__name__}: {exc}); "
            "check that it is a folder digest may write to and that its disk has free space"
        )

    def recipients_per_batch(self, message: Message) -> int:
        return self.max_batch

    def payload_size(self, message: Message) -> int:
        """What `send` would write: readers it would refuse add nothing."""
        total, now = 0, self.clock()
        for recipient in message.recipients:
            with contextlib.suppress(_Refused):
                total += len(_render(message, recipient, now))
        return total


# What building one mail raises for a value that cannot be written: `HeaderError` from digest's
# header rules (a ValueError, as is UnicodeEncodeError for a lone surrogate in a body); the email
# package's own errors (MessageError, and IndexError from its address parser) only from the
# email package's header helpers `digest.core.headers` still uses.
_UNWRITABLE = (ValueError, email.errors.MessageError, IndexError)


class _Refused(Exception):
    """This one reader's mail cannot be written; `reason` says why, for their ledger row."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _render(message: Message, recipient: Recipient, now: datetime) -> bytes:
    """`recipient`'s mail as the bytes of its .eml file.

    Raises `_Refused` when the fault is this reader's own (their address or name), and
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
            "the outbox cannot write this mail for anyone, so the fault is in the message, "
            f"not any one address: {_describe(exc)}"
        ) from exc
    try:
        mime_bytes(message, replace(recipient, name=None), now=now)
        part = "name"
    except _UNWRITABLE:
        part = "address"
    raise _Refused(
        f"the outbox cannot write a mail to this reader's {part}: {_describe(error)}; "
        f"correct or remove the {part} (sending again would refuse it again)"
    )


def _describe(exc: BaseException) -> str:
    # NonASCIILocalPartDefect's text ends in a stray ")" of the standard library's own.
    text = str(exc).strip()
    if text.endswith(")") and text.count(")") > text.count("("):
        text = text[:-1]
    return f"{text} ({type(exc).__name__})"


def _checked_key(batch_key: str) -> str:
    if not _SAFE_KEY_RE.match(batch_key):
        raise ValueError(f"batch key {batch_key!r} is not safe as a file name")
    return batch_key


def _address_tag(email: str) -> str:
    """A stable, file-name-safe stand-in for an address (the address itself is personal data)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]


def _write_atomically(path: Path, data: bytes, *, durable: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        # A disk that filled up mid-file leaves no half-written temp file behind.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _sync_all() -> None:
    sync = getattr(os, "sync", None)
    if sync is not None:
        sync()
