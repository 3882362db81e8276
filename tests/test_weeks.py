"""ISO weeks: parsing, arithmetic, and which week it is in a given time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from digest.model.weeks import IsoWeek, current_week, parse_week


def test_parse_and_print_round_trip():
    assert str(parse_week("2026-W07")) == "2026-W07"
    assert parse_week(" 2026-W17 ") == IsoWeek(2026, 17)


@pytest.mark.parametrize("text", ["2026-17", "2026-w17", "26-W17", "2026-W7", "", "2026-W00"])
def test_malformed_weeks_are_rejected_with_the_input(text):
    with pytest.raises(ValueError, match=r"2026-W17|no week"):
        parse_week(text)


def test_week_53_exists_only_in_long_years():
    assert parse_week("2026-W53").monday() == date(2026, 12, 28)
    with pytest.raises(ValueError, match="2027 has no week 53"):
        parse_week("2027-W53")


def test_arithmetic_crosses_year_boundaries():
    assert IsoWeek(2026, 53) + 1 == IsoWeek(2027, 1)
    assert IsoWeek(2027, 1) - 1 == IsoWeek(2026, 53)
    assert IsoWeek(2027, 2).weeks_since(IsoWeek(2026, 52)) == 3


def test_current_week_depends_on_the_zone():
    # Sunday 2026-11-29 20:00 UTC is already Monday 05:00 in Tokyo.
    now = datetime(2026, 11, 29, 20, 0, tzinfo=UTC)
    assert current_week(now, ZoneInfo("UTC")) == IsoWeek(2026, 48)
    assert current_week(now, ZoneInfo("Asia/Tokyo")) == IsoWeek(2026, 49)


def test_weeks_order_chronologically():
    assert sorted([IsoWeek(2027, 1), IsoWeek(2026, 52)]) == [IsoWeek(2026, 52), IsoWeek(2027, 1)]
