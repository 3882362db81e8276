"""Delivery: transports (outbox, SendGrid) behind one interface (`digest.delivery.transport`).

`make_transport(settings)` picks the one `DIGEST_TRANSPORT` names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from digest.delivery.outbox import OutboxTransport
from digest.delivery.transport import PermanentError, SendResult, Transport
from digest.store.db import utcnow

if TYPE_CHECKING:
    from digest.config import Settings
    from digest.core.mails import Message

__all__ = ["make_transport", "send_one_off"]


def make_transport(settings: Settings) -> Transport:
    if settings.transport == "sendgrid":
        from digest.delivery.sendgrid import SendGridTransport

        return SendGridTransport.from_settings(settings)
    return OutboxTransport(settings.outbox_dir, clock=utcnow)


def send_one_off(settings: Settings, message: Message) -> SendResult:
    """Send a one-off mail (a confirmation, a welcome) through the configured transport.

    A refused recipient is an error here, not a ledger row: there is no ledger for these
    mails, and a confirmation that silently never left would look sent to its reader.
    """
    result = make_transport(settings).send(message)
    if result.refused:
        raise PermanentError("; ".join(f"not sent: {why}" for why in result.refused.values()))
    return result
