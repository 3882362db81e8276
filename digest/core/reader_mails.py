"""The two mails a reader gets outside the weekly issue: the confirmation of a double opt-in and
the welcome after it.

Pure builders: the settings, the subscriber, their links or recipient and `now` come in, a
`Message` goes out; finding the data and sending are the readers layer's work.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from digest.config import Settings
from digest.core.checks import QualityError, check_email, check_message
from digest.core.mails import PLACEHOLDERS, Message, Recipient
from digest.core.reader_times import delivery_time
from digest.core.render import base_context, render_mail
from digest.model.subscriber import Subscriber

__all__ = ["confirmation_mail", "welcome_message"]


def confirmation_mail(settings: Settings, subscriber: Subscriber, confirm_url: str) -> Message:
    """The mail with the link that confirms `subscriber`'s opt-in (`confirm_url`)."""
    context: dict[str, object] = {
        **base_context(settings),
        "name": subscriber.name,
        "confirm_url": confirm_url,
        "confirm_days": max(1, settings.confirm_max_age // 86400),
    }
    _mjml, html, text = render_mail(settings.templates_dir, "confirm", context)
    return Message(
        subject=f"Confirm your subscription to {settings.newsletter_name}",
        html=html,
        text=text,
        recipients=[Recipient(email=subscriber.email, name=subscriber.name)],
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
        categories=["confirm"],
    )


def welcome_message(
    settings: Settings,
    subscriber: Subscriber,
    recipient: Recipient,
    latest: Mapping[str, str] | None,
    now: datetime,
) -> Message:
    """The welcome mail: what the newsletter is, when it arrives in the reader's time zone, the
    latest sent issue (`latest`: its term's title and summary and its archive url; None before
    the first), and the list mail's links and one-click headers, which `recipient` carries.

    Raises `QualityError` when the rendered mail fails the weekly issue's quality gates.
    """
    context: dict[str, object] = {
        **base_context(settings),
        "name": subscriber.name,
        "delivery": delivery_time(settings, subscriber.timezone, now),
        "latest": latest,
        "unsubscribe_url": PLACEHOLDERS["unsubscribe_url"],
        "preferences_url": PLACEHOLDERS["preferences_url"],
    }
    _mjml, html, text = render_mail(settings.templates_dir, "welcome", context)
    message = Message(
        subject=f"Welcome to {settings.newsletter_name}",
        html=html,
        text=text,
        recipients=[recipient],
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
        categories=["welcome"],
    )
    # The weekly issue's gates: the rendered parts, then the message as the reader gets it.
    problems = [*check_email(html, text), *check_message(settings, message)]
    if problems:
        raise QualityError("the welcome mail", problems)
    return message
