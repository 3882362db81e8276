"""When things happen for one reader, as words in their own time zone: the next issue, the end
of a pause, and what the subscribe page promises (the zones a reader can pick: `core.zones`).

Pure (`now` and the settings come in), so the welcome mail and the preference pages say the
same thing, and tests can pin any date.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from babel.dates import format_date

from digest.config import Settings
from digest.core.cadence import local_send_time, week_fire, zone_name
from digest.core.i18n import translations
from digest.core.zones import canonical_zone
from digest.model.subscriber import Subscriber
from digest.model.weeks import current_week

__all__ = ["delivery_time", "pause_end", "schedule_words"]


def delivery_time(settings: Settings, timezone: str | None, now: datetime) -> str:
    """When a reader gets the issue, in their own time zone, as a phrase for mail and pages in
    `settings.locale`: "every Monday at 09:00 (Asia/Tokyo time)", or "next on Tuesday
    1 December at 06:30 (…)" for a schedule that does not fire every week.

    Pure. With local-time delivery the schedule's wall-clock time holds in every zone; without
    it the one send time in DIGEST_TIMEZONE is shown converted to the reader's zone. A schedule
    firing on several days sends one issue a week, at the first fire, so that is the one shown.
    """
    gettext = translations(settings.locale).gettext
    name = canonical_zone(zone_name(timezone, settings))  # "Asia/Kolkata", not "Asia/Calcutta"
    when = _next_sends(settings, ZoneInfo(name), now)
    if when is None:
        return gettext("when the editors send one (%(zone)s time)") % {"zone": name}
    # TRANSLATORS: `when` is "every Monday at 09:00" or "next on Monday 1 June at 09:00".
    return gettext("%(when)s (%(zone)s time)") % {"when": when, "zone": name}


def schedule_words(settings: Settings, now: datetime) -> str:
    """When issues arrive, as the subscribe page promises it to someone whose zone is not known
    yet: "every Monday at 09:00 in your own time zone" with local-time delivery, else the one
    send time in DIGEST_TIMEZONE, "every Monday at 09:00 (Europe/Amsterdam time)". Pure."""
    if not settings.local_time_delivery:
        return delivery_time(settings, None, now)
    gettext = translations(settings.locale).gettext
    # The schedule's wall-clock time, which every reader's zone keeps.
    when = _next_sends(settings, settings.zone, now)
    if not when:
        return gettext("when the editors send one")
    return gettext("%(when)s in your own time zone") % {"when": when}


def _next_sends(settings: Settings, zone: ZoneInfo, now: datetime) -> str | None:
    """The next sends read in `zone`, "every Monday at 09:00" or "next on Tuesday 1 December
    at 06:30" (in `settings.locale`); None when the schedule does not fire in the next 60
    weeks."""
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
        return None
    first = upcoming[0]
    weekly = (
        len(upcoming) == 2
        and upcoming[1].date() - first.date() == timedelta(days=7)
        and (upcoming[1].hour, upcoming[1].minute) == (first.hour, first.minute)
    )
    gettext = translations(settings.locale).gettext
    time = f"{first:%H:%M}"  # the 24-hour clock both languages write
    if weekly:
        weekday = format_date(first.date(), "EEEE", locale=settings.locale)
        return gettext("every %(weekday)s at %(time)s") % {"weekday": weekday, "time": time}
    day = _day(first.date(), settings.locale)
    return gettext("next on %(day)s at %(time)s") % {"day": day, "time": time}


def pause_end(settings: Settings, subscriber: Subscriber, now: datetime) -> str | None:
    """The day a reader's pause ends, in their zone and `settings.locale` ("Monday 8 June
    2026", "maandag 8 juni 2026"); None if not paused."""
    until = subscriber.paused_until
    if until is None or until <= now:
        return None
    local = until.astimezone(ZoneInfo(zone_name(subscriber.timezone, settings)))
    return format_date(local.date(), "EEEE d MMMM y", locale=settings.locale)


def _day(day: date, locale: str) -> str:
    """ "Monday 1 June": the weekday and the day, in `locale` (Babel's CLDR names)."""
    return format_date(day, "EEEE d MMMM", locale=locale)
