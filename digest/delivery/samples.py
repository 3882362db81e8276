"""Sends and messages that touch no ledger row: the dry-run plan, the sample of the next batch
the issue check inspects, and a test copy to one address (its links point at pages that exist).

Each builds its messages with the send's own code (`personalise`), so what they show is what the
readers get.
"""

from __future__ import annotations

import contextlib
import html
import re
from dataclasses import dataclass, replace
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Engine, func, select

from digest.config import Settings
from digest.core.headers import HeaderError
from digest.core.mails import Message
from digest.core.urls import Urls
from digest.delivery.audience import count_unclaimed, not_paused, unclaimed_page
from digest.delivery.ledger import batch_key, count_rows
from digest.delivery.personalise import (
    SendError,
    issue_message,
    issue_recipient,
    sendable_issue,
)
from digest.delivery.transport import SendResult, Transport
from digest.model.weeks import IsoWeek
from digest.store.db import subscribers

__all__ = ["SendPlan", "plan_send", "preview_links", "sample_message", "send_test"]


@dataclass(frozen=True, slots=True)
class SendPlan:
    """What `digest send --dry-run` reports: who would get the issue, and the first request."""

    recipients: int
    already_done: int
    batch_size: int
    batches: int
    first_batch_bytes: int


def plan_send(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    week: IsoWeek,
    *,
    now: datetime,
) -> SendPlan:
    """Count who would get `week`'s issue and size the first request; sends and claims nothing."""
    issue = sendable_issue(engine, week)
    cutoff = issue.send_started_at or now
    per_batch = min(
        settings.batch_size,
        transport.recipients_per_batch(issue_message(settings, issue, (), None)),
    )
    count = count_unclaimed(engine, issue, cutoff, now)
    done = count_rows(engine, issue)
    with engine.connect() as conn:
        page = conn.execute(unclaimed_page(issue, cutoff, 0, per_batch).where(not_paused(now)))
        rows = page.all()
    first_bytes = 0
    if rows:
        recipients = [
            issue_recipient(settings, issue, sid, email, name, tracking_opt_out=opt_out)
            for sid, email, name, _paused, opt_out in rows
        ]
        # A stand-in key of the real key's length, so the size is the real one.
        key = batch_key(issue, 1, started_at=cutoff)
        first_bytes = transport.payload_size(issue_message(settings, issue, recipients, key))
    return SendPlan(
        recipients=count,
        already_done=done,
        batch_size=per_batch,
        batches=-(-count // per_batch),
        first_batch_bytes=first_bytes,
    )


def sample_message(
    engine: Engine,
    settings: Settings,
    week: IsoWeek,
    *,
    limit: int = 20,
    now: datetime,
) -> Message:
    """The next batch's `Message` as `send_issue` would build it, for its first `limit`
    recipients; claims and sends nothing. When nobody is left to send to, one stand-in
    recipient (subscriber id 0, `sample@example.org`) takes their place, so there is always a
    real message to check (`digest check`)."""
    issue = sendable_issue(engine, week)
    cutoff = issue.send_started_at or now
    with engine.connect() as conn:
        page = conn.execute(unclaimed_page(issue, cutoff, 0, limit).where(not_paused(now))).all()
    recipients = []
    for sid, email, name, _paused, opt_out in page:
        # A stored address no header can hold is refused by the send for that reader alone;
        # it is no fault of the issue, so it is left out of the sample rather than failing it.
        with contextlib.suppress(HeaderError):
            recipients.append(
                issue_recipient(settings, issue, sid, email, name, tracking_opt_out=opt_out)
            )
    if not recipients:
        stand_in = (0, "sample@example.org", "Sample Reader")
        recipients = [issue_recipient(settings, issue, *stand_in, tracking_opt_out=False)]
    return issue_message(settings, issue, recipients, batch_key(issue, 1, started_at=cutoff))


def send_test(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    week: IsoWeek,
    address: str,
) -> SendResult:
    """Send `week`'s issue to one address with "[TEST] " before the subject; the ledger is untouched.

    A subscriber's own address gets their real links; any other address gets links signed for
    it (they lead to "not subscribed" pages, but look and measure like the real ones). Until the
    issue is sent it has no public page, so its "view in browser" link (and any other link to
    its archive page) leads to its preview in the desk (`preview_links`).
    """
    try:
        email = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise SendError(f"{address!r} is not a valid address: {exc}") from None
    issue = sendable_issue(engine, week)
    with engine.connect() as conn:
        row = conn.execute(
            select(subscribers.c.id, subscribers.c.name).where(
                func.lower(subscribers.c.email) == email.lower()
            )
        ).first()
    sid, name = (int(row[0]), row[1]) if row else (0, None)
    # Untracked: an editor's test click must not count as a reader's (the links go straight
    # to their targets; `digest check` looks at the tracked ones).
    recipient = issue_recipient(settings, issue, sid, email, name, tracking_opt_out=True)
    message = issue_message(settings, issue, [recipient], None, subject_prefix="[TEST] ")
    if issue.status != "sent":
        message = preview_links(message, Urls.from_settings(settings), week)
    result = transport.send(message)
    if result.refused:
        raise SendError(f"{transport.name} refused {email}: {'; '.join(result.refused.values())}")
    return result


def preview_links(message: Message, urls: Urls, week: IsoWeek) -> Message:
    """`message` with every link to `week`'s archive page (404 until the issue is sent) pointed
    at the issue's page in the desk instead: its preview, behind the editors' login.

    The desk and not a public preview, because an issue not yet approved must not be readable
    by whoever a test copy is forwarded to; the editors who get test copies have a login, and
    the desk brings them back to the page after it. A query or fragment (a quiz answer's
    `?answer=2#quiz`) is kept. In the bodies and in the recipient's link values alike, since
    with click tracking the links ride in the substitutions.
    """
    archive, preview = urls.archive_page(week), urls.desk_issue(week)
    # The URL as written, and as HTML writes it; not a longer path such as `/2026-W10x`.
    forms = {archive: preview, html.escape(archive): html.escape(preview)}
    either = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    found = re.compile(rf"(?:{either})(?![\w/-])")

    def swap(text: str) -> str:
        return found.sub(lambda m: forms[m.group(0)], text)

    recipients = [
        replace(r, substitutions={k: swap(v) for k, v in r.substitutions.items()})
        for r in message.recipients
    ]
    return replace(message, html=swap(message.html), text=swap(message.text), recipients=recipients)
