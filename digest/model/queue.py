"""One entry of the editors' queue, as data: a term to feature next, maybe pinned to a week.

Selection reads these and `digest.store.queue` stores them; neither needs the other's side.
"""

from __future__ import annotations

from dataclasses import dataclass

from digest.model.weeks import IsoWeek

__all__ = ["QueueEntry"]


@dataclass(frozen=True, slots=True)
class QueueEntry:
    slug: str
    week: IsoWeek | None  # pinned to this week, or None for "the next week that is free"
    note: str | None
    position: int  # 1-based
