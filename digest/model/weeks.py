"""ISO weeks (`2026-W17`): the unit every issue, pin and term date is keyed on.

Kept apart so selection, schedule and the archive agree on one parser and one notion of "this week".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["IsoWeek", "current_week", "parse_week"]

# ASCII digits only: `\d` alone would take "２０２６-W10" and print it back as "2026-W10".
_WEEK_RE = re.compile(r"(\d{4})-W(\d{2})", re.ASCII)


@dataclass(frozen=True, order=True, slots=True)
class IsoWeek:
    """An ISO 8601 week; ordered, hashable and printed as `YYYY-Www`."""

    year: int
    week: int

    def __post_init__(self) -> None:
        # date.fromisocalendar rejects W00, W54 and W53 in years that have only 52 weeks.
        date.fromisocalendar(self.year, self.week, 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-W{self.week:02d}"

    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.week, 1)

    def day(self, weekday: int) -> date:
        """The date of `weekday` (1 = Monday … 7 = Sunday) in this week."""
        return date.fromisocalendar(self.year, self.week, weekday)

    def starts_at(self, zone: ZoneInfo) -> datetime:
        return datetime.combine(self.monday(), time(0), tzinfo=zone)

    def __add__(self, weeks: int) -> IsoWeek:
        return IsoWeek.of(self.monday() + timedelta(weeks=weeks))

    def __sub__(self, weeks: int) -> IsoWeek:
        return self + (-weeks)

    def weeks_since(self, other: IsoWeek) -> int:
        return (self.monday() - other.monday()).days // 7

    @classmethod
    def of(cls, day: date | datetime) -> IsoWeek:
        iso = day.isocalendar()
        return cls(iso.year, iso.week)


def parse_week(text: str) -> IsoWeek:
    """Parse `YYYY-Www`; raise ValueError with a message fit to show a user."""
    match = _WEEK_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        shown = repr(text)
        if len(shown) > 40:  # a pasted paragraph should not drown the message
            shown = shown[:39] + "…"
        raise ValueError(f"must be an ISO week like 2026-W17 (got {shown})")
    year, week = int(match.group(1)), int(match.group(2))
    try:
        return IsoWeek(year, week)
    except ValueError:
        raise ValueError(f"{text} does not exist: {year} has no week {week}") from None


def current_week(now: datetime, zone: ZoneInfo | None = None) -> IsoWeek:
    """The ISO week `now` falls in, seen from `zone` (Sunday night in Tokyo is Monday already)."""
    if zone is not None and now.tzinfo is not None:
        now = now.astimezone(zone)
    return IsoWeek.of(now)
