"""Delivery: transports (outbox, SendGrid, SMTP) behind one interface (`digest.delivery.transport`).

`make_transport(settings, engine)` picks the one `DIGEST_TRANSPORT` names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from digest.delivery.outbox import OutboxTransport
from digest.delivery.transport import PermanentError, SendResult, Transport
from digest.store.db import utcnow

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from digest.config import Settings
    from digest.core.mails import Message

__all__ = ["close_transport", "make_transport", "send_one_off"]


def make_transport(settings: Settings, engine: Engine | None = None) -> Transport:
    """The transport DIGEST_TRANSPORT names. `engine`: the database an SMTP transport keeps its
    per-reader journal in; without it the transport sends one-off mails only (no batch key)."""
    if settings.transport == "sendgrid":
        from digest.delivery.sendgrid import SendGridTransport

        return SendGridTransport.from_settings(settings)
    if settings.transport == "smtp":
        from digest.delivery.smtp import SmtpTransport

        return SmtpTransport.from_settings(settings, engine, clock=utcnow)
    return OutboxTransport(settings.outbox_dir, clock=utcnow)


def send_one_off(settings: Settings, message: Message) -> SendResult:
    """Send a one-off mail (a confirmation, a welcome) through the configured transport.

    A refused recipient is an error here, not a ledger row: there is no ledger for these
    mails, and a confirmation that silently never left would look sent to its reader.
    """
    transport = make_transport(settings)
    try:
        result = transport.send(message)
    finally:
        close_transport(transport)
    problems = {**result.refused, **result.failed, **result.uncertain}
    if problems:
        raise PermanentError("; ".join(f"not sent: {why}" for why in problems.values()))
    return result


def close_transport(transport: Transport) -> None:
    """End what a transport keeps open (an SMTP relay's sessions: QUIT); others keep nothing."""
    close = getattr(transport, "close", None)
    if callable(close):
        close()
