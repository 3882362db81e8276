"""The calendar date of an issue: the schedule's first day in its week, in the reader's words."""

from __future__ import annotations

from datetime import date

import pytest

from digest.core.dates import issue_date, long_date
from digest.model.weeks import parse_week


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("mon 09:00", date(2026, 12, 7)),
        ("thu 07:30", date(2026, 12, 10)),
        ("mon,thu 07:30", date(2026, 12, 7)),
        ("0 9 * * 5", date(2026, 12, 11)),  # crontab Friday
        ("0 9 1 * *", date(2026, 12, 7)),  # monthly, not in this week: the Monday
    ],
)
def test_the_issue_is_dated_by_the_first_day_the_schedule_fires_in_its_week(
    schedule: str, expected: date
) -> None:
    assert issue_date(parse_week("2026-W50"), schedule, "Europe/Amsterdam") == expected


def test_a_sunday_send_in_a_zone_ahead_of_utc_stays_in_its_week() -> None:
    assert issue_date(parse_week("2026-W50"), "sun 23:30", "Pacific/Auckland") == date(2026, 12, 13)


def test_the_date_is_written_in_the_locale_s_own_words() -> None:
    day = date(2026, 12, 7)
    assert long_date(day, "en") == "December 7, 2026"
    assert long_date(day, "nl") == "7 december 2026"
