"""Joining and leaving: double opt-in subscribe, the confirmation mail, confirm, unsubscribe,
and "subscribe again" from the page that said goodbye.

Library functions take the engine, the settings and `now`; the web service and the CLI are thin
wrappers over them. The rows change in `digest.store.subscribers`; this layer sends the mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from digest.config import Settings
from digest.core.i18n import reader_locale
from digest.core.mails import Message
from digest.core.reader_input import clean_name, clean_timezone, normalise_email
from digest.core.reader_links import confirm_url
from digest.core.reader_mails import confirmation_mail
from digest.core.tokens import BadToken, Purpose, read_token
from digest.core.zones import canonical_zone
from digest.delivery import send_one_off
from digest.model.subscriber import InvalidSubscriber, Subscriber
from digest.store import reader_language
from digest.store import subscribers as store

__all__ = [
    "UNDO_WINDOW",
    "NotResubscribable",
    "Subscription",
    "confirm",
    "release_confirmation",
    "resubscribe",
    "send_confirmation",
    "subscribe",
    "subscriber_from_token",
    "undo_possible",
    "unsubscribe",
]

# How long after unsubscribing "subscribe again" restores the subscription at once. The
# unsubscribe link was used moments ago, so whoever presses the button is the reader taking
# back a click. Later, an old mail's link (it never expires, and mails get forwarded) is too
# little proof of consent, and the address goes through the double opt-in again.
UNDO_WINDOW = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Subscription:
    """What `subscribe` did: the subscriber as stored now, and the mail it owes, if any."""

    subscriber: Subscriber
    # The confirmation mail to send, or None when none is due (already active, suppressed,
    # or one went out less than `confirm_resend_interval` ago).
    mail: Message | None
    # `confirm_sent_at` before this claim: `send_confirmation` puts it back when the send
    # fails, so the person can retry at once instead of waiting out the resend interval.
    previous_confirm_sent_at: datetime | None = None


def subscriber_from_token(
    engine: Engine | Connection, settings: Settings, purpose: Purpose, token: str
) -> Subscriber | None:
    """Verify `token` and return its subscriber, without changing anything (for GET pages).

    Raises `BadToken` when the token is forged, tampered with, expired or for another purpose.
    Returns None when the token is genuine but its subscriber is gone (erased, or the id now
    belongs to another address): there is nothing left to act on.
    """
    max_age = settings.confirm_max_age if purpose == "confirm" else None
    data = read_token(settings, purpose, token, max_age=max_age)
    found = store.get_subscriber(engine, data.subscriber_id)
    if found is None or not data.matches(found.email):
        return None
    return found


def subscribe(
    engine: Engine,
    settings: Settings,
    email: str,
    *,
    name: str | None = None,
    timezone: str | None = None,
    source: str = "web",
    now: datetime,
    send: bool = True,
    language: str | None = None,
) -> Subscription:
    """Start (or restart) a double opt-in for `email`.

    New and unsubscribed addresses become `pending` and are owed a confirmation mail; a pending
    address is owed another only once per `confirm_resend_interval`. Active, bounced and
    complained addresses are left exactly as they are. The confirmation mail is rendered in
    every case, so the caller's answer takes the same work whether or not the address is known.
    With `send=False` the caller sends `Subscription.mail` itself (the web service does, after
    answering) through `send_confirmation`. `language`: the browser's (`accepted_locale`), kept
    for a reader who has chosen none when it is not the newsletter's own.
    """
    address = normalise_email(email)
    name = clean_name(name)
    try:
        zone = clean_timezone(timezone)
    except InvalidSubscriber:
        zone = None  # a hint from the browser, not something the person typed
    if zone is not None:  # browsers still say Asia/Calcutta; the picker offers Asia/Kolkata
        zone = canonical_zone(zone)
    opt_in = store.start_opt_in(
        engine, settings, address, name=name, timezone=zone, source=source, now=now
    )
    subscriber = opt_in.subscriber
    chosen = subscriber.language  # a choice made in the preference centre comes first
    if (
        language is not None
        and language != settings.locale
        and chosen is None
        and reader_language.adopt_language(engine, subscriber.id, language)
    ):
        chosen = language
    # In the language the reader will read: a resend (and "subscribe again") takes the stored
    # one, since it calls without a browser's `language`.
    mail = confirmation_mail(
        settings,
        subscriber,
        confirm_url(settings, subscriber.id, subscriber.email),
        reader_locale(chosen),
    )
    if not opt_in.mail_due:
        return Subscription(subscriber, None)
    result = Subscription(subscriber, mail, opt_in.previous_confirm_sent_at)
    if send:
        send_confirmation(engine, settings, result)
    return result


def send_confirmation(
    engine: Engine, settings: Settings, subscription: Subscription, *, release: bool = True
) -> None:
    """Send the confirmation mail `subscribe` prepared; on failure free the resend slot again
    (with `release=False` the caller does, through `release_confirmation`)."""
    if subscription.mail is None:
        return
    try:
        send_one_off(settings, subscription.mail)
    except Exception:  # a provider error, or the outbox folder not writable: same remedy
        if release:
            release_confirmation(engine, subscription)
        raise


def release_confirmation(engine: Engine, subscription: Subscription) -> None:
    """Give back the claim of a confirmation mail that could not be sent, so the person can
    try again at once instead of waiting out the resend interval."""
    store.release_confirmation(
        engine, subscription.subscriber, subscription.previous_confirm_sent_at
    )


def confirm(engine: Engine, settings: Settings, token: str, *, now: datetime) -> Subscriber:
    """Activate the pending subscriber a confirm token names (idempotent once active).

    Raises `BadToken` for a forged, tampered, expired or wrong-purpose token, for a token whose
    subscriber is gone or changed address, and when the subscription was cancelled since (an
    old confirm link must not undo an unsubscribe).
    """
    found = subscriber_from_token(engine, settings, "confirm", token)
    if found is None:
        raise BadToken("this link is not valid")
    current = store.activate(engine, found.id, now=now)
    if current is None or current.status != "active":
        raise BadToken(
            "this subscription was cancelled after the link was sent; subscribe again to get "
            "a new link"
        )
    return current


def unsubscribe(
    engine: Engine, settings: Settings, token: str, *, now: datetime
) -> Subscriber | None:
    """Unsubscribe whoever an unsubscribe token names; idempotent, and None if they are gone.

    Unsubscribe tokens never expire (an old mail's link must still work). Bounced and complained
    addresses keep their stronger status.
    """
    found = subscriber_from_token(engine, settings, "unsubscribe", token)
    if found is None:
        return None
    return store.unsubscribe_subscriber(engine, found.id, now=now)


# --------------------------------------------------------------------------- subscribe again


class NotResubscribable(Exception):
    """Subscribing again cannot bring this address back: `why` is "erased", "bounced" or
    "complained", and `reason` says it to the reader."""

    def __init__(self, why: str) -> None:
        self.why = why
        self.reason = _ERASED if why == "erased" else _REFUSED[why]
        super().__init__(self.reason)


_ERASED = (
    "this address is no longer on our list at all, so there is nothing to restore; "
    "subscribe with the form to start again"
)
_REFUSED = {
    "bounced": (
        "mail to this address bounced, so the mail provider stopped our sending to it; "
        "a link cannot undo that"
    ),
    "complained": (
        "one of our mails to this address was reported as spam, so we stopped sending to it "
        "for good; a link cannot undo that"
    ),
}


def resubscribe(
    engine: Engine,
    settings: Settings,
    reader: Subscriber | None,
    *,
    now: datetime,
    send: bool = True,
) -> Subscription:
    """Subscribe again the reader a signed link names (the unsubscribe or preferences link;
    None: the link's subscriber is gone).

    - unsubscribed less than `UNDO_WINDOW` ago, having confirmed before: active again at once
      (`Subscription.mail` None), as if the unsubscribe had not happened;
    - unsubscribed longer ago, or never confirmed: a new double opt-in, exactly as the
      subscribe form starts one (`subscribe`), so the confirmation mail decides;
    - already active: nothing changes.

    Raises `NotResubscribable` for an erased address (nothing left to restore) and for one that
    bounced or complained: the provider's word is not undone by a link, whoever holds it.
    """
    found = store.get_subscriber(engine, reader.id) if reader is not None else None
    if found is None or reader is None or found.email != reader.email:
        raise NotResubscribable("erased")
    if found.status in _REFUSED:
        raise NotResubscribable(found.status)
    if found.status == "active":
        return Subscription(found, None)
    if not undo_possible(found, now):
        return subscribe(
            engine,
            settings,
            found.email,
            name=found.name,
            timezone=found.timezone,
            source=found.source,
            now=now,
            send=send,
        )
    # Back through the status table's own steps (unsubscribed → pending → active), each a
    # conditional UPDATE, so a bounce or complaint arriving meanwhile still wins.
    opt_in = store.start_opt_in(
        engine,
        settings,
        found.email,
        name=found.name,
        timezone=found.timezone,
        source=found.source,
        now=now,
    )
    current: Subscriber | None = opt_in.subscriber
    if opt_in.subscriber.status == "pending":
        current = store.activate(engine, found.id, now=now)
    if current is None:
        raise NotResubscribable("erased")
    if current.status in _REFUSED:
        raise NotResubscribable(current.status)
    return Subscription(current, None)


def undo_possible(reader: Subscriber, now: datetime) -> bool:
    """Whether "subscribe again" restores `reader` at once (else it starts a double opt-in):
    they confirmed once and unsubscribed less than `UNDO_WINDOW` ago."""
    return (
        reader.status == "unsubscribed"
        and reader.confirmed_at is not None
        and reader.unsubscribed_at is not None
        and now - reader.unsubscribed_at <= UNDO_WINDOW
    )
