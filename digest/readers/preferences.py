"""The reader's side of a subscription: the welcome mail, the preference centre (name, time zone,
pause, unsubscribe) and the reader's own data (download it, erase it).

Library functions taking the engine, the settings and `now`; `digest.web` serves them at
/preferences/{token} and sends the welcome mail after a confirmation.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from digest.config import Settings
from digest.core.i18n import N_, available_locales
from digest.core.mails import Message
from digest.core.reader_input import clean_name, clean_timezone
from digest.core.reader_mails import welcome_message
from digest.core.zones import canonical_zone
from digest.delivery import send_one_off
from digest.delivery.personalise import subscriber_recipient
from digest.model.subscriber import PAUSABLE, InvalidSubscriber, Subscriber
from digest.readers.latest import latest_issue
from digest.store import reader_language
from digest.store import subscribers as store
from digest.store.deliveries import reader_log

__all__ = [
    "MAX_PAUSE_WEEKS",
    "choose_language",
    "erase_data",
    "export_data",
    "pause",
    "resume",
    "send_welcome",
    "set_tracking",
    "unsubscribe",
    "update_profile",
    "welcome_mail",
]

MAX_PAUSE_WEEKS = 12


# --------------------------------------------------------------------------- the welcome mail


def welcome_mail(
    engine: Engine, settings: Settings, subscriber: Subscriber, now: datetime
) -> Message:
    """The mail a reader gets once, right after confirming: what the newsletter is, when it
    arrives in their time zone, the latest sent issue (left out before the first), and their
    preference and unsubscribe links with the same one-click headers as the weekly issue.

    Raises `QualityError` when the rendered mail fails the weekly issue's quality gates.
    """
    latest = latest_issue(engine, settings)
    featured = None
    if latest is not None:
        featured = {"title": latest.title, "summary": latest.summary, "url": latest.url}
    recipient = subscriber_recipient(
        settings,
        subscriber.id,
        subscriber.email,
        subscriber.name,
        tracking_opt_out=subscriber.tracking_opt_out,
    )
    return welcome_message(settings, subscriber, recipient, featured, now)


def send_welcome(engine: Engine, settings: Settings, subscriber_id: int, now: datetime) -> bool:
    """Send the welcome mail to a reader who is still active; False when there is no one to
    welcome (they unsubscribed or were erased in the moment since confirming)."""
    found = store.get_subscriber(engine, subscriber_id)
    if found is None or found.status != "active":
        return False
    send_one_off(settings, welcome_mail(engine, settings, found, now))
    return True


# --------------------------------------------------------------------------- the preference centre


def update_profile(
    engine: Engine, subscriber_id: int, *, name: str | None, timezone: str | None, now: datetime
) -> Subscriber:
    """Store a new display name and time zone (empty: none, i.e. the newsletter's zone); a
    legacy zone name is stored by its current one (`Asia/Calcutta` as `Asia/Kolkata`).

    Raises `InvalidSubscriber` naming the field for a name with line breaks or an unknown zone;
    nothing is stored then.
    """
    name, zone = clean_name(name), clean_timezone(timezone)
    if zone is not None:
        zone = canonical_zone(zone)
    return _still_there(store.set_profile(engine, subscriber_id, name=name, timezone=zone, now=now))


def pause(engine: Engine, subscriber_id: int, weeks: int, *, now: datetime) -> Subscriber:
    """Skip the issues of the next `weeks` weeks (1 to 12): `paused_until` = now + weeks.

    The sender gives a paused reader a `skipped` ledger row instead of the mail; afterwards
    they get the issue again by themselves. Only an active subscription can be paused.
    """
    if not 1 <= weeks <= MAX_PAUSE_WEEKS:
        raise InvalidSubscriber("weeks", f"pause for 1 to {MAX_PAUSE_WEEKS} weeks (got {weeks})")
    current = store.get_subscriber(engine, subscriber_id)
    if current is None or current.status not in PAUSABLE:
        raise InvalidSubscriber("status", N_("only an active subscription can be paused"))
    until = now + timedelta(weeks=weeks)
    paused = _still_there(store.pause_until(engine, subscriber_id, until, now=now))
    if paused.status not in PAUSABLE:  # unsubscribed or suppressed in the meantime
        raise InvalidSubscriber("status", N_("only an active subscription can be paused"))
    return paused


def resume(engine: Engine, subscriber_id: int, *, now: datetime) -> Subscriber:
    """End a pause now: the next issue comes as usual."""
    return _still_there(store.end_pause(engine, subscriber_id, now=now))


def set_tracking(engine: Engine, subscriber_id: int, *, allow: bool, now: datetime) -> Subscriber:
    """Say no to click and open tracking (`allow` False), or yes again.

    Whatever the status, so a paused or pending reader's choice holds when their mails resume;
    the issues built for them afterwards carry no rewritten link and no pixel. A mail already
    sent keeps its links (they still redirect), but a click on it is the reader's own.
    """
    return _still_there(store.set_tracking_opt_out(engine, subscriber_id, not allow, now=now))


def choose_language(
    engine: Engine, subscriber_id: int, language: str, *, now: datetime
) -> Subscriber:
    """Read the issues built from now on in `language` (a locale digest has; empty: the
    newsletter's own). Raises `InvalidSubscriber` for one it has no catalogue for."""
    chosen = language.strip() or None
    if chosen is not None and chosen not in available_locales():
        raise InvalidSubscriber("language", f"choose one of {', '.join(available_locales())}")
    return _still_there(reader_language.set_language(engine, subscriber_id, chosen, now=now))


def unsubscribe(engine: Engine, subscriber_id: int, *, now: datetime) -> Subscriber | None:
    """Unsubscribe from the preference centre: the same as the unsubscribe link."""
    return store.unsubscribe_subscriber(engine, subscriber_id, now=now)


def export_data(engine: Engine, subscriber_id: int) -> dict[str, Any] | None:
    """Everything digest keeps about one reader, as JSON-able data (GDPR access/portability):
    their subscriber row, every delivery of an issue to them, and every provider event about
    them. None when there is no such subscriber."""
    history = reader_log(engine, subscriber_id)
    if history is None:
        return None
    return {
        "subscriber": _jsonable(history.subscriber),
        "deliveries": [_jsonable(d, leave_out="events") for d in history.deliveries],
        "events": [_jsonable(e) for e in history.events],
    }


def erase_data(engine: Engine, subscriber_id: int) -> bool:
    """Erase the reader (GDPR erase, as `digest subscribers remove`): their row goes, the
    ledger and events keep their counts without them. False when there was nobody to erase."""
    return store.erase(engine, subscriber_id)


# --------------------------------------------------------------------------- private


def _still_there(current: Subscriber | None) -> Subscriber:
    if current is None:
        raise InvalidSubscriber("subscriber", N_("this subscription no longer exists"))
    return current


def _jsonable(record: Any, leave_out: str = "") -> dict[str, Any]:
    """A dataclass's fields as JSON values: datetimes in ISO 8601, weeks as `2026-W10`."""
    out: dict[str, Any] = {}
    for key in (f.name for f in fields(record) if f.name != leave_out):
        value = getattr(record, key)
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif value is not None and not isinstance(value, str | int | float | bool):
            out[key] = str(value)  # IsoWeek
        else:
            out[key] = value
    return out
