"""The mails a page owes after its answer has gone out: a confirmation, a welcome.

Background tasks, so how long a send takes (or whether one happens at all) cannot be read off
the response time, and a provider's hiccup costs the reader no error page: it goes to the log.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from digest.config import Settings
from digest.readers import preferences, signup

__all__ = ["send_confirmation_later", "send_welcome_later"]

log = logging.getLogger(__name__)


async def send_confirmation_later(
    engine: Engine, settings: Settings, subscription: signup.Subscription
) -> None:
    """Send the confirmation mail a sign-up (or a "subscribe again") owes, if any.

    The outbox writes one small file (no fsync), which costs less on the event loop than the
    hop to a worker thread and back did; a provider's HTTP request, and giving back the claim
    (a database write) when sending failed, go to a thread.
    """
    if subscription.mail is None:
        return
    try:
        if settings.transport == "outbox":
            try:
                signup.send_confirmation(engine, settings, subscription, release=False)
            except Exception:
                await run_in_threadpool(signup.release_confirmation, engine, subscription)
                raise
        else:
            await run_in_threadpool(signup.send_confirmation, engine, settings, subscription)
    except Exception as exc:  # after the answer: nothing to tell the person, so tell the log
        # They saw "check your inbox"; the resend slot is freed, so submitting again retries.
        log.error("confirmation mail not sent: %s: %s", type(exc).__name__, exc)


def send_welcome_later(
    engine: Engine, settings: Settings, subscriber_id: int, now: datetime
) -> None:
    """Welcome a reader who just confirmed (a thread: it renders and sends a whole mail)."""
    try:
        preferences.send_welcome(engine, settings, subscriber_id, now)
    except Exception as exc:  # after the answer, like the confirmation mail: tell the log
        log.error("welcome mail not sent: %s: %s", type(exc).__name__, exc)
