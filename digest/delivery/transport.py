"""The transport interface: what the sender hands a mail service, whatever the service is.

A transport takes one `digest.core.mails.Message` per call and says what became of it
(`SendResult`), or raises a `TransportError` saying whether trying again can help.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from digest.core.mails import Message

__all__ = ["PermanentError", "RetryableError", "SendResult", "Transport", "TransportError"]


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
    # A transport that answers per reader (SMTP) may also say, per reader: deferred until its
    # retries ran out (`failed`, which `--retry-failed` sends again), or cut off between the
    # message and the relay's answer with DIGEST_AMBIGUOUS_BATCHES=skip (`uncertain`, given
    # up and reported, never resent). Every other recipient of the batch was sent.
    failed: Mapping[str, str] = field(default_factory=dict)
    uncertain: Mapping[str, str] = field(default_factory=dict)
    # Per reader, what the provider said on taking their message (SMTP: the relay's 250 line,
    # which holds its queue id): the ledger's message id for that reader instead of the batch's.
    message_ids: Mapping[str, str] = field(default_factory=dict)


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
    """A mail service. Implementations: `OutboxTransport`, `SendGridTransport`, `SmtpTransport`.

    A run with several batches in flight calls `send` and `lookup_batch` from several threads
    at once (one batch each; never two calls for the same batch at once). A transport that
    cannot take that many declares an int attribute `max_in_flight` (optional, so not a member
    here: see `digest.delivery.in_flight.batches_at_once`); 1 keeps it to one call at a time.
    """

    name: str
    max_batch: int
    # Whether `lookup_batch` is right the moment a batch is cut off (the outbox's manifest is on
    # disk or not). SendGrid's activity feed lags behind its sends, so right after taking over a
    # dead sender's lease its "not found" is no proof yet (see batches.BatchRun.inherited_until).
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
