"""The outbox transport: one RFC 5322 `.eml` file per recipient in a folder.

It is the embedded default, so a fresh checkout can run the whole weekly job without an API key,
and what it writes is exactly what a mail client would show.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as _READ_POLICY
from pathlib import Path

from digest.core.mails import Message, Recipient
from digest.delivery.mime import Unwritable, mime_bytes, reader_copy
from digest.delivery.transport import PermanentError, RetryableError, SendResult

__all__ = ["OutboxTransport", "build_mime", "mime_bytes"]

_SAFE_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")


def build_mime(message: Message, recipient: Recipient, *, now: datetime) -> EmailMessage:
    """`mime_bytes` read back as a mail client reads it, for callers that look inside a mail.

    Raises `HeaderError` (a ValueError) when a value cannot be written safely, for example
    `UnsupportedAddress` for a non-ASCII local part.
    """
    parsed = BytesParser(policy=_READ_POLICY).parsebytes(mime_bytes(message, recipient, now=now))
    assert isinstance(parsed, EmailMessage)
    return parsed


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
                data = reader_copy(message, recipient, self.clock(), "the outbox")
            except Unwritable as exc:
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
            with contextlib.suppress(Unwritable):
                total += len(reader_copy(message, recipient, now, "the outbox"))
        return total


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
