"""The schedule setting as a value: its two accepted forms read into an APScheduler cron trigger
in a time zone, and the one error that says what is accepted when it cannot be read.

Model-level so the settings validator (digest.config) can refuse a bad schedule at load time;
crontab weekday numbers are translated here, since APScheduler 3 reads them differently.
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

__all__ = ["ScheduleError", "parse_schedule"]


class ScheduleError(ValueError):
    """The schedule setting cannot be understood; the message says what is accepted."""


_SIMPLE_RE = re.compile(r"^(?P<days>[A-Za-z][A-Za-z,\-]*)\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})$")
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = {
    f"{day}day": day[:3] for day in ("mon", "tues", "wednes", "thurs", "fri", "satur", "sun")
}
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab: 0 (and 7) is Sunday
_FORMS = "'<day_of_week> HH:MM' (e.g. 'mon 09:00', 'mon,thu 07:30') or a 5-field crontab"


def parse_schedule(text: str, zone: ZoneInfo | str) -> CronTrigger:
    """The cron trigger for a schedule setting, in `zone`.

    Two forms: `mon 09:00` (days as names, lists and ranges: `mon,thu`, `mon-fri`), or a
    standard 5-field crontab (`0 9 * * 1`), where weekday numbers mean what they mean to cron.
    """
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    spec = " ".join(str(text).split())
    if not spec:
        raise ScheduleError(f"the schedule is empty; use {_FORMS}")
    fields = spec.split(" ")
    if len(fields) == 5:
        return _from_crontab(spec, fields, tz)
    match = _SIMPLE_RE.match(spec)
    if not match:
        raise ScheduleError(f"cannot read schedule {text!r}; use {_FORMS}")
    days = re.sub(r"[a-z]+", lambda m: _FULL_DAY_NAMES.get(m[0], m[0]), match["days"].lower())
    for part in days.split(","):
        for name in part.split("-", 1):
            if name not in _DAY_NAMES:
                raise ScheduleError(
                    f"schedule {text!r}: {name!r} is not a day; use {', '.join(_DAY_NAMES)}"
                )
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise ScheduleError(f"schedule {text!r}: {match['hour']}:{match['minute']} is not a time")
    try:
        return CronTrigger(day_of_week=days, hour=hour, minute=minute, timezone=tz)
    except ValueError as exc:
        raise ScheduleError(f"schedule {text!r}: {exc}") from None


def _from_crontab(text: str, fields: list[str], zone: ZoneInfo) -> CronTrigger:
    minute, hour, day, month, weekday = fields
    if day != "*" and weekday != "*":
        # cron runs when EITHER matches, APScheduler when BOTH do: refuse rather than surprise.
        raise ScheduleError(
            f"crontab {text!r} restricts both day of month and day of week; restrict one"
        )
    try:
        days = _crontab_weekdays(weekday)
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=days, timezone=zone
        )
    except ValueError as exc:
        raise ScheduleError(f"crontab {text!r}: {exc}") from None


def _crontab_weekdays(field: str) -> str:
    """A crontab weekday field as APScheduler day names.

    APScheduler 3 numbers Monday 0 where cron numbers Sunday 0 (its from_crontab documents the
    mismatch: `from_crontab("0 9 * * 1")` fires on Tuesday); names mean the same to both, so
    numbers are translated to names here.
    """
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        body, slash, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else 0
        if slash and step < 1:
            raise ValueError(f"bad step in day of week {part!r}")
        if body == "*":
            low, high = 0, 6
        elif "-" in body:
            first, last = body.split("-", 1)
            low, high = _cron_day(first), _cron_day(last)
            if low > high:
                raise ValueError(f"day-of-week range {body!r} runs backwards")
        else:
            low = _cron_day(body)
            high = 6 if slash else low
        days.update(d % 7 for d in range(low, high + 1, step or 1))
    return ",".join(_CRON_DAYS[d] for d in sorted(days))


def _cron_day(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text in _CRON_DAYS:
        return _CRON_DAYS.index(text)
    raise ValueError(f"{text!r} is not a day of week (0-7 or sun-sat)")
