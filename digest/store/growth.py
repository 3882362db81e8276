"""How the list changed week by week: readers on it at each week's end, who joined, who left,
which addresses bounced. The read view behind the desk's /admin/stats trend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select

from digest.model.weeks import IsoWeek
from digest.store.db import events, subscribers

__all__ = ["BOUNCE_KINDS", "ListWeek", "list_weeks"]

# The provider events that take an address off the list as undeliverable.
BOUNCE_KINDS = ("bounce", "dropped")


@dataclass(frozen=True, slots=True)
class ListWeek:
    """One week of the list. `confirmed`: readers confirmed by the week's end and not
    unsubscribed by then (an address that bounced still counts: its status has no date, the
    bounce is counted in `bounced` that week). The rest happened within the week."""

    week: IsoWeek
    confirmed: int
    joined: int
    unsubscribed: int
    bounced: int


def list_weeks(engine: Engine, weeks: Sequence[IsoWeek], zone: ZoneInfo) -> list[ListWeek]:
    """The list's numbers for each of `weeks` (weeks start on Monday 00:00 in `zone`); a few
    COUNT queries per week, so the page costs the same for ten readers as for a million."""
    s = subscribers.c
    out = []
    with engine.connect() as conn:
        for week in weeks:
            start, end = week.starts_at(zone), (week + 1).starts_at(zone)

            def count(*where: ColumnElement[bool]) -> int:
                return int(conn.execute(select(func.count()).where(*where)).scalar_one())

            out.append(
                ListWeek(
                    week=week,
                    confirmed=count(
                        s.confirmed_at < end,
                        or_(s.unsubscribed_at.is_(None), s.unsubscribed_at >= end),
                    ),
                    joined=count(s.confirmed_at >= start, s.confirmed_at < end),
                    unsubscribed=count(s.unsubscribed_at >= start, s.unsubscribed_at < end),
                    bounced=count(
                        and_(
                            events.c.kind.in_(BOUNCE_KINDS),
                            events.c.occurred_at >= start,
                            events.c.occurred_at < end,
                        )
                    ),
                )
            )
    return out
