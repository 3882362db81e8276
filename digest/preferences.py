"""The reader's side of a subscription: the welcome mail, the preference centre (name, time zone,
pause, unsubscribe) and the reader's own data (download it, erase it).

Library functions taking the engine, the settings and `now`; `digest.web` serves them at
/preferences/{token} and sends the welcome mail after a confirmation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import Engine, update

from digest import subscribers as store
from digest.checks import QualityError, check_email, check_message
from digest.config import Settings
from digest.db import subscribers
from digest.delivery import PLACEHOLDERS, Message, send_one_off
from digest.delivery.log import reader_log
from digest.delivery.personalise import subscriber_recipient
from digest.issues import list_issues
from digest.render import archive_url, render_mail
from digest.schedule import local_send_time, week_fire
from digest.subscribers import InvalidSubscriber, Subscriber
from digest.weeks import current_week

__all__ = [
    "MAX_PAUSE_WEEKS",
    "delivery_time",
    "erase_data",
    "export_data",
    "pause",
    "pause_end",
    "resume",
    "send_welcome",
    "time_zones",
    "unsubscribe",
    "update_profile",
    "welcome_mail",
]

MAX_PAUSE_WEEKS = 12
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


# --------------------------------------------------------------------------- when it arrives


def delivery_time(settings: Settings, timezone: str | None, now: datetime) -> str:
    """When a reader gets the issue, in their own time zone, as a phrase for mail and pages:
    "every Monday at 09:00 (Asia/Tokyo time)", or "next on Tuesday 1 December at 06:30 (…)"
    for a schedule that does not fire every week.

    Pure. With local-time delivery the schedule's wall-clock time holds in every zone; without
    it the one send time in DIGEST_TIMEZONE is shown converted to the reader's zone. A schedule
    firing on several days sends one issue a week, at the first fire, so that is the one shown.
    """
    name = _zone_name(timezone, settings)
    zone = ZoneInfo(name)
    upcoming: list[datetime] = []
    week = current_week(now, settings.zone)
    for offset in range(60):  # a monthly crontab leaves weeks without a fire
        fire = week_fire(settings, week + offset)
        if fire is None:
            continue
        at = local_send_time(fire, zone) if settings.local_time_delivery else fire.astimezone(zone)
        if at > now:
            upcoming.append(at)
        if len(upcoming) == 2:
            break
    if not upcoming:
        return f"when the editors send one ({name} time)"
    first = upcoming[0]
    weekly = (
        len(upcoming) == 2
        and upcoming[1].date() - first.date() == timedelta(days=7)
        and (upcoming[1].hour, upcoming[1].minute) == (first.hour, first.minute)
    )
    if weekly:
        return f"every {_WEEKDAYS[first.weekday()]} at {first:%H:%M} ({name} time)"
    return f"next on {_day(first.date())} at {first:%H:%M} ({name} time)"


def pause_end(settings: Settings, subscriber: Subscriber, now: datetime) -> str | None:
    """The day a reader's pause ends, in their zone ("Monday 8 June 2026"); None if not paused."""
    until = subscriber.paused_until
    if until is None or until <= now:
        return None
    local = until.astimezone(ZoneInfo(_zone_name(subscriber.timezone, settings)))
    return f"{_day(local.date())} {local.year}"


def _day(day: date) -> str:
    return f"{_WEEKDAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]}"


def _zone_name(timezone: str | None, settings: Settings) -> str:
    if timezone:
        try:
            ZoneInfo(timezone)
            return timezone
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return settings.timezone


@lru_cache(maxsize=1)
def time_zones() -> tuple[str, ...]:
    """The IANA zone names a reader can pick, sorted: `Region/City` names and UTC.

    Legacy aliases (`US/Pacific`, `Etc/GMT+5`, `posixrules`) are left out of the list; a stored
    one still works and the preference page offers it to whoever has it.
    """
    regions: tuple[str, ...] = ("Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic")
    regions += ("Australia", "Europe", "Indian", "Pacific")
    return tuple(
        sorted(z for z in available_timezones() if z == "UTC" or z.split("/", 1)[0] in regions)
    )


# --------------------------------------------------------------------------- the welcome mail


def welcome_mail(
    engine: Engine, settings: Settings, subscriber: Subscriber, now: datetime
) -> Message:
    """The mail a reader gets once, right after confirming: what the newsletter is, when it
    arrives in their time zone, the latest sent issue (left out before the first), and their
    preference and unsubscribe links with the same one-click headers as the weekly issue.

    Raises `QualityError` when the rendered mail fails the weekly issue's quality gates.
    """
    latest = list_issues(engine, statuses=["sent"], limit=1)
    featured = None
    if latest and latest[0].snapshot:
        term = latest[0].snapshot["term"]
        featured = {
            "title": term["title"],
            "summary": term["summary"],
            "url": archive_url(settings, latest[0].week),
        }
    context: dict[str, object] = {
        "language": settings.language,
        "newsletter_name": settings.newsletter_name,
        "postal_address": settings.postal_address,
        "base_url": settings.base_url,
        "name": subscriber.name,
        "delivery": delivery_time(settings, subscriber.timezone, now),
        "latest": featured,
        "archive_index_url": f"{settings.base_url}/issues/",
        "unsubscribe_url": PLACEHOLDERS["unsubscribe_url"],
        "preferences_url": PLACEHOLDERS["preferences_url"],
    }
    _mjml, html, text = render_mail(settings.templates_dir, "welcome", context)
    message = Message(
        subject=f"Welcome to {settings.newsletter_name}",
        html=html,
        text=text,
        recipients=[
            subscriber_recipient(settings, subscriber.id, subscriber.email, subscriber.name)
        ],
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
    """Store a new display name and time zone (empty: none, i.e. the newsletter's zone).

    Raises `InvalidSubscriber` naming the field for a name with line breaks or an unknown zone;
    nothing is stored then.
    """
    values = {
        "name": store.clean_name(name),
        "timezone": store.clean_timezone(timezone),
        "updated_at": now,
    }
    return _update(engine, subscriber_id, values)


def pause(engine: Engine, subscriber_id: int, weeks: int, *, now: datetime) -> Subscriber:
    """Skip the issues of the next `weeks` weeks (1 to 12): `paused_until` = now + weeks.

    The sender gives a paused reader a `skipped` ledger row instead of the mail; afterwards
    they get the issue again by themselves. Only an active subscription can be paused.
    """
    if not 1 <= weeks <= MAX_PAUSE_WEEKS:
        raise InvalidSubscriber("weeks", f"pause for 1 to {MAX_PAUSE_WEEKS} weeks (got {weeks})")
    current = store.get_subscriber(engine, subscriber_id)
    if current is None or current.status != "active":
        raise InvalidSubscriber("status", "only an active subscription can be paused")
    return _update(
        engine, subscriber_id, {"paused_until": now + timedelta(weeks=weeks), "updated_at": now}
    )


def resume(engine: Engine, subscriber_id: int, *, now: datetime) -> Subscriber:
    """End a pause now: the next issue comes as usual."""
    return _update(engine, subscriber_id, {"paused_until": None, "updated_at": now})


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


def _update(engine: Engine, subscriber_id: int, values: Mapping[str, Any]) -> Subscriber:
    with engine.begin() as conn:
        conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(**values))
        current = store.get_subscriber(conn, subscriber_id)
    if current is None:
        raise InvalidSubscriber("subscriber", "this subscription no longer exists")
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
