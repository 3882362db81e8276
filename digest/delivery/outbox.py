"""The outbox transport: one RFC 5322 `.eml` file per recipient in a folder.

It is the embedded default, so a fresh checkout can run the whole weekly job without an API key,
and what it writes is exactly what a mail client would show.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path

from digest.db import utcnow
from digest.delivery.base import Message, Recipient, SendResult
from digest.headers import (
    address_header,
    ascii_address,
    list_unsubscribe_header,
    text_header,
    verify_header_block,
)

__all__ = ["OutboxTransport", "build_mime", "mime_bytes"]

_SAFE_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")


def _fill(template: str, recipient: Recipient) -> str:
    for marker, value in recipient.substitutions.items():
        template = template.replace(marker, value)
    return template


# Header values are written as digest encoded them (`digest.headers`), never re-parsed and
# re-folded by the email package: that round trip is what decodes an encoded-word into a raw
# CR/LF (CVE-2024-6923) and what RFC 2047-encodes a long List-Unsubscribe into uselessness.
_POLICY = SMTP.clone(refold_source="none")
# Headers the email package itself adds to the top level when the parts are attached.
_MIME_HEADERS = ("MIME-Version", "Content-Type")


def _top_headers(
    message: Message, recipient: Recipient, now: datetime | None
) -> list[tuple[str, str]]:
    domain = ascii_address(message.from_email).rpartition("@")[2] or None
    headers = [
        ("From", address_header(message.from_email, message.from_name)),
        ("To", address_header(recipient.email, recipient.name)),
        ("Subject", text_header("Subject", _fill(message.subject, recipient))),
        ("Date", format_datetime(now or utcnow())),
        ("Message-ID", make_msgid(domain=domain)),
    ]
    if message.reply_to:
        headers.append(("Reply-To", address_header(message.reply_to)))
    for key, value in {**message.headers, **recipient.headers}.items():
        if key.lower() == "list-unsubscribe":
            headers.append((key, list_unsubscribe_header(value)))
        else:
            headers.append((key, text_header(key, value)))
    for key, value in {**message.custom_args, **recipient.custom_args}.items():
        name = f"X-Digest-{key.replace('_', '-').title()}"
        headers.append((name, text_header(name, value)))
    return headers


def build_mime(
    message: Message, recipient: Recipient, *, now: datetime | None = None
) -> EmailMessage:
    """The MIME message one recipient would get: multipart/alternative, text first.

    Raises `HeaderError` (a ValueError) when a value cannot be written safely, for example
    `UnsupportedAddress` for a non-ASCII local part; `mime_bytes` also checks the result.
    """
    mime = EmailMessage(policy=_POLICY)
    for name, value in _top_headers(message, recipient, now):
        mime.set_raw(name, value)
    mime.set_content(_fill(message.text, recipient), subtype="plain", charset="utf-8")
    mime.add_alternative(_fill(message.html, recipient), subtype="html", charset="utf-8")
    return mime


def mime_bytes(message: Message, recipient: Recipient, *, now: datetime | None = None) -> bytes:
    """`build_mime` serialised, with its header block verified as a mail client reads it."""
    mime = build_mime(message, recipient, now=now)
    raw = bytes(mime)
    names = [name for name, _value in mime.items() if name not in _MIME_HEADERS]
    verify_header_block(raw, [*names, *_MIME_HEADERS])
    return raw


class OutboxTransport:
    """Writes each recipient's mail to `directory`, atomically (temp file, then rename).

    A batch with a `batch_key` is written under names derived from that key and each address,
    so writing it again replaces the same files instead of adding copies; a manifest in
    `.batches/` is written last, and its presence is what `lookup_batch` reports.
    """

    name = "outbox"
    max_batch = 1000

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    @property
    def _manifests(self) -> Path:
        return self.directory / ".batches"

    def send(self, message: Message) -> SendResult:
        self.directory.mkdir(parents=True, exist_ok=True)
        if message.batch_key is None:
            prefix = f"{utcnow().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        else:
            prefix = _checked_key(message.batch_key)
        for index, recipient in enumerate(message.recipients):
            if message.batch_key is None:
                final = self.directory / f"{prefix}-{index:04d}.eml"
            else:
                final = self.directory / f"{prefix}-{_address_tag(recipient.email)}.eml"
            _write_atomically(final, mime_bytes(message, recipient), durable=False)
        if message.batch_key is not None:
            # One flush for the whole batch instead of an fsync per file: the manifest that
            # says "this batch went out" must not reach the disk before the mails it speaks for.
            _sync_all()
            self._manifests.mkdir(exist_ok=True)
            manifest = {"batch_key": prefix, "recipients": len(message.recipients)}
            _write_atomically(
                self._manifests / f"{prefix}.json", json.dumps(manifest).encode(), durable=True
            )
        return SendResult(message_id=prefix)

    def lookup_batch(self, batch_key: str) -> bool | None:
        """The outbox always knows: a batch went out exactly when its manifest exists."""
        return (self._manifests / f"{_checked_key(batch_key)}.json").exists()

    def recipients_per_batch(self, message: Message) -> int:
        return self.max_batch

    def payload_size(self, message: Message) -> int:
        return sum(len(mime_bytes(message, r)) for r in message.recipients)


def _checked_key(batch_key: str) -> str:
    if not _SAFE_KEY_RE.match(batch_key):
        raise ValueError(f"batch key {batch_key!r} is not safe as a file name")
    return batch_key


def _address_tag(email: str) -> str:
    """A stable, file-name-safe stand-in for an address (the address itself is personal data)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]


def _write_atomically(path: Path, data: bytes, *, durable: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _sync_all() -> None:
    sync = getattr(os, "sync", None)
    if sync is not None:
        sync()
