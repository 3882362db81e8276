"""Delivery: transports (outbox, SendGrid) behind one interface.

`make_transport(settings)` picks the one `DIGEST_TRANSPORT` names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from digest.delivery.base import (
    PLACEHOLDERS,
    Message,
    PermanentError,
    Recipient,
    RetryableError,
    SendResult,
    Transport,
    TransportError,
)
from digest.delivery.outbox import OutboxTransport

if TYPE_CHECKING:
    from digest.config import Settings

__all__ = [
    "PLACEHOLDERS",
    "Message",
    "OutboxTransport",
    "PermanentError",
    "Recipient",
    "RetryableError",
    "SendResult",
    "Transport",
    "TransportError",
    "make_transport",
]


def make_transport(settings: Settings) -> Transport:
    if settings.transport == "sendgrid":
        from digest.delivery.sendgrid import SendGridTransport

        return SendGridTransport.from_settings(settings)
    return OutboxTransport(settings.outbox_dir)
