"""The outbox transport: one RFC 5322 `.eml` file per recipient in a folder.

It is the embedded default, so a fresh checkout can run the whole weekly job without an API key,
and what it writes is exactly what a mail client would show.
"""

from __future__ import annotations

import os
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path

from digest.db import utcnow
from digest.delivery.base import Message, Recipient, SendResult

__all__ = ["OutboxTransport", "build_mime"]


def _fill(template: str, recipient: Recipient) -> str:
    for marker, value in recipient.substitutions.items():
        template = template.replace(marker, value)
    return template


def build_mime(message: Message, recipient: Recipient) -> EmailMessage:
    """The MIME message one recipient would get: multipart/alternative, text first."""
    mime = EmailMessage(policy=SMTP)
    mime["From"] = formataddr((message.from_name or "", message.from_email))
    mime["To"] = formataddr((recipient.name or "", recipient.email))
    mime["Subject"] = _fill(message.subject, recipient)
    mime["Date"] = format_datetime(utcnow())
    mime["Message-ID"] = make_msgid(domain=message.from_email.rpartition("@")[2] or None)
    if message.reply_to:
        mime["Reply-To"] = message.reply_to
    for key, value in {**message.headers, **recipient.headers}.items():
        mime[key] = value
    for key, value in recipient.custom_args.items():
        mime[f"X-Digest-{key.replace('_', '-').title()}"] = value
    mime.set_content(_fill(message.text, recipient), subtype="plain", charset="utf-8")
    mime.add_alternative(_fill(message.html, recipient), subtype="html", charset="utf-8")
    return mime


class OutboxTransport:
    """Writes each recipient's mail to `directory` atomically (temp file, then rename)."""

    name = "outbox"
    max_batch = 1000

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def send(self, message: Message) -> SendResult:
        self.directory.mkdir(parents=True, exist_ok=True)
        batch_id = uuid.uuid4().hex
        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        for index, recipient in enumerate(message.recipients):
            data = bytes(build_mime(message, recipient))
            final = self.directory / f"{stamp}-{batch_id[:12]}-{index:04d}.eml"
            tmp = final.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        return SendResult(message_id=batch_id)
