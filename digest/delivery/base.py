"""The transport interface: what the sender hands a mail service, whatever the service is.

One `Message` is one rendered issue (or one confirmation mail) for a batch of recipients; each
recipient carries its own substitutions and headers, so one render serves every subscriber.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from digest.headers import check_header_value

__all__ = [
    "MARKER_RE",
    "PLACEHOLDERS",
    "Message",
    "PermanentError",
    "Recipient",
    "RetryableError",
    "SendResult",
    "Transport",
    "TransportError",
    "check_header_value",
    "fill_markers",
]

# Per-subscriber values are left in the rendered issue as these markers and filled per recipient
# at send time (SendGrid substitutions, or string replacement in the outbox). `name_html` is the
# HTML-escaped name for the HTML part; `name` is the raw name for subject and text.
PLACEHOLDERS: dict[str, str] = {
    "unsubscribe_url": "%%unsubscribe_url%%",
    "preferences_url": "%%preferences_url%%",
    "name": "%%name%%",
    "name_html": "%%name_html%%",
}


# Any marker, known or not: the checks look for unknown ones with the same pattern.
MARKER_RE = re.compile(r"%%[A-Za-z0-9_.-]*%%")


def fill_markers(body: str, values: Mapping[str, str]) -> str:
    """`body` with each marker replaced by its value, in one pass, as SendGrid substitutes.

    One function for the outbox and the quality checks alike, so the check tests the
    substitution the mail really gets; a value is never scanned for markers again (a name
    written as `%%unsubscribe_url%%` stays that text).
    """
    return MARKER_RE.sub(lambda m: values.get(m[0], m[0]), body)


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    name: str | None = None
    # placeholder marker → value, e.g. {"%%unsubscribe_url%%": "https://…/unsubscribe/TOKEN"}
    substitutions: Mapping[str, str] = field(default_factory=dict)
    # per-recipient headers, e.g. List-Unsubscribe with this recipient's own token
    headers: Mapping[str, str] = field(default_factory=dict)
    # echoed back by the provider's events (issue week, subscriber id)
    custom_args: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_header_value("to", self.email)
        if self.name is not None:
            check_header_value("name", self.name)
        for key, value in self.headers.items():
            check_header_value(key, value)


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    html: str
    text: str
    recipients: Sequence[Recipient]
    from_email: str
    from_name: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    categories: Sequence[str] = ()
    # echoed back by every recipient's events (issue week, batch key)
    custom_args: Mapping[str, str] = field(default_factory=dict)
    # Names this batch at the provider so a resumed send can ask whether it went out
    # (`Transport.lookup_batch`); None for one-off mails such as confirmations.
    batch_key: str | None = None

    def __post_init__(self) -> None:
        check_header_value("subject", self.subject)
        check_header_value("from", self.from_email)
        if self.from_name:
            check_header_value("from name", self.from_name)
        if self.reply_to:
            check_header_value("reply-to", self.reply_to)
        for key, value in self.headers.items():
            check_header_value(key, value)


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the service said: its message id for the batch, when it gives one, and which
    recipients the transport would not take, with why.

    A refused recipient was not sent to, and sending again would refuse them again (an address
    the transport cannot write or the provider would drop): the sender records them as
    `refused` for that reader alone instead of failing the whole batch, so one bad stored
    address never blocks everybody else's issue. Keys are `Recipient.email` as given.
    """

    message_id: str | None = None
    refused: Mapping[str, str] = field(default_factory=dict)


class TransportError(Exception):
    """A send did not go through."""


class RetryableError(TransportError):
    """Worth trying again later (429, 5xx, timeouts, dropped connections)."""

    def __init__(
        self, message: str, retry_after: float | None = None, *, maybe_delivered: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # True when the request may have reached the provider before it failed (a timeout or a
        # connection dropped mid-response): the sender asks `lookup_batch` before sending again.
        self.maybe_delivered = maybe_delivered


class PermanentError(TransportError):
    """Will fail the same way again (bad API key, rejected payload): stop and tell the operator."""


class Transport(Protocol):
    """A mail service. Implementations: `OutboxTransport`, `SendGridTransport`."""

    name: str
    max_batch: int
    # Whether `lookup_batch` is right the moment a batch is cut off (the outbox's manifest is on
    # disk or not). SendGrid's activity feed lags behind its sends, so right after taking over a
    # dead sender's lease its "not found" is no proof yet (see sender._Run.inherited_until).
    exact_lookup: bool

    def send(self, message: Message) -> SendResult: ...

    def lookup_batch(self, batch_key: str) -> bool | None:
        """Did the batch sent under `batch_key` go out? True, False, or None: cannot tell."""
        ...

    def recipients_per_batch(self, message: Message) -> int:
        """How many recipients of `message` fit one send (size limits), at most `max_batch`."""
        ...

    def payload_size(self, message: Message) -> int:
        """Bytes one send of `message` puts on the wire (or on disk); for `--dry-run`."""
        ...
