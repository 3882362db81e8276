"""The calendar date an issue carries, and how it is written in a reader's language.

An issue is named by its ISO week (`2026-W50`), but a reader thinks in dates: the mail, the
archive and the feed say "December 7, 2026" (in Dutch "7 december 2026"). The date is the first day
the schedule sends in that week, in the newsletter's time zone, so it is the same for every
reader and every page; Babel writes it in the locale's own words.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from babel.dates import format_date

from digest.core.i18n import translations
from digest.model.schedule import parse_schedule
from digest.model.weeks import IsoWeek

__all__ = ["issue_date", "long_date", "week_label"]


def issue_date(week: IsoWeek, schedule: str, timezone: str) -> date:
    """The first day of `week` the schedule fires on, in `timezone`.

    A schedule that does not fire in that week at all (a monthly crontab) dates the issue by
    the week's Monday rather than a day of another week.
    """
    zone = ZoneInfo(timezone)
    trigger = parse_schedule(schedule, zone)
    start = week.starts_at(zone)
    fire: datetime | None = trigger.get_next_fire_time(None, start)  # APScheduler is untyped
    if fire is None or fire.date() >= week.monday() + timedelta(days=7):
        return week.monday()
    return fire.date()


def long_date(day: date, locale: str) -> str:
    """`day` as a person writes it in `locale`: "December 7, 2026" (en), "7 december 2026" (nl)."""
    return format_date(day, format="long", locale=locale)


def week_label(week: IsoWeek, locale: str) -> str:
    """`week` as a reader names it where no date is at hand: "Week 50, 2026" (en)."""
    return translations(locale).gettext("Week %(week)s, %(year)s") % {
        "week": week.week,
        "year": week.year,
    }
