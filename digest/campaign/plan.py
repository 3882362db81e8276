"""The coming weeks as one truth: built, held, approved and sent issues as they are, and the picks
the build will make for the rest — what `plan`, `queue list`, `status` and the desk all show.

Also the glossary those picks come from: the valid terms of the folder, with the broken files
left out and named, so one bad file never stops the newsletter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from digest.config import Settings
from digest.core.cadence import next_fire_time
from digest.core.selection import Pick, PickSource, plan
from digest.logs import get_logger, log_event
from digest.model.glossary import Glossary, GlossaryError
from digest.model.issue import FEATURED_STATES, IssueRecord
from digest.model.queue import QueueEntry
from digest.model.schedule import parse_schedule
from digest.model.weeks import IsoWeek, current_week
from digest.store.issues import list_issues
from digest.store.queue import list_queue
from digest.store.terms import read_glossary

__all__ = [
    "GlossaryHealth",
    "PlannedWeek",
    "coming_weeks",
    "glossary_health",
    "next_issue_week",
    "usable_glossary",
]

_log = get_logger("digest.glossary")


# --------------------------------------------------------------------------- the coming weeks


@dataclass(frozen=True, slots=True)
class PlannedWeek:
    """One week of the plan: its term, how it was (or will be) chosen, and where it stands."""

    week: IsoWeek
    slug: str
    title: str | None  # None: neither the glossary nor a stored snapshot knows the term
    source: str  # pin | queue | rotation
    state: str  # "pick" (nothing built yet), else the issue's status; "approved" = built+approved
    note: str | None  # the queue entry's note, or why a queued or pinned term was passed over
    issue: IssueRecord | None


def coming_weeks(
    engine: Engine,
    settings: Settings,
    glossary: Glossary,
    *,
    start: IsoWeek | None,
    weeks: int,
    now: datetime,
) -> list[PlannedWeek]:
    """`weeks` weeks from `start` (default: the next issue to go out, `next_issue_week`).

    A week with a stored issue shows it as stored; the others show what building each week in
    turn from `start` will pick, with the stored issues fixed in the history they add to. So
    `plan --from W` is what the builds will give, and a built issue is never shown as a pick.
    Raises ValueError when a pick is needed and the glossary is empty.
    """
    stored = {issue.week: issue for issue in list_issues(engine, newest_first=False)}
    first = start or next_issue_week(settings, stored.values(), now)
    queue = list_queue(engine)
    history = [(w, i.featured_slug) for w, i in stored.items() if i.status in FEATURED_STATES]
    fixed = {
        week: pick
        for week, issue in stored.items()
        if week >= first and (pick := _kept(issue, glossary, queue)) is not None
    }
    picks = plan(glossary, history, queue, first, weeks, fixed=fixed)
    return [_planned(pick, stored.get(pick.week), glossary) for pick in picks]


def next_issue_week(settings: Settings, issues: Iterable[IssueRecord], now: datetime) -> IsoWeek:
    """The week of the next issue to go out: this week's while it is stored and not sent (built,
    held for approval, paused, failed: it still needs sending or an editor), else the week of
    the schedule's next fire — next week's once this one went out or its fire time passed."""
    this_week = current_week(now, settings.zone)
    by_week = {issue.week: issue for issue in issues}
    current = by_week.get(this_week)
    if current is not None and current.status != "sent":
        return this_week
    fire = next_fire_time(parse_schedule(settings.schedule, settings.zone), now)
    week = current_week(fire, settings.zone) if fire is not None else this_week + 1
    while (issue := by_week.get(week)) is not None and issue.status == "sent":
        week += 1  # sent early by hand (`send --force`): the next issue is after it
    return max(week, this_week)


def _kept(issue: IssueRecord, glossary: Glossary, queue: Sequence[QueueEntry]) -> Pick | None:
    """The pick a stored issue stands for, or None when building its week picks anew.

    With content, an issue keeps its term (a build reuses it, the job sends it). Without
    (planned, or failed before it was built) a build keeps the term too, as
    `campaign.build._choose` does — unless an editor pinned a valid term to that week since,
    or the term has left the glossary.
    """
    source: PickSource = "rotation"
    if issue.pick_source in ("pin", "queue"):
        source = issue.pick_source  # type: ignore[assignment]
    kept = Pick(issue.week, issue.featured_slug, source, _stored_note(issue))
    if issue.html is not None or issue.status in FEATURED_STATES:
        return kept
    pinned = any(e.week == issue.week and e.slug in glossary for e in queue)
    if pinned or issue.featured_slug not in glossary:
        return None
    return kept


def _stored_note(issue: IssueRecord) -> str | None:
    made = issue.snapshot.get("pick") if issue.snapshot else None
    note = made.get("note") if isinstance(made, dict) else None
    return note if isinstance(note, str) else None


def _planned(pick: Pick, issue: IssueRecord | None, glossary: Glossary) -> PlannedWeek:
    term = glossary.get(pick.slug)
    title = term.title if term is not None else None
    if issue is None:
        return PlannedWeek(pick.week, pick.slug, title, pick.source, "pick", pick.note, None)
    if title is None and issue.snapshot and issue.featured_slug == pick.slug:
        shown = issue.snapshot.get("term")
        title = shown.get("title") if isinstance(shown, dict) else None
    state = "approved" if issue.status == "built" and issue.approved else issue.status
    return PlannedWeek(pick.week, pick.slug, title, pick.source, state, pick.note, issue)


# --------------------------------------------------------------------------- the glossary


@dataclass(frozen=True, slots=True)
class GlossaryHealth:
    """How the terms folder stands: how many terms are usable, and every error in the rest."""

    terms: int
    errors: list[GlossaryError]

    @property
    def ok(self) -> bool:
        return not self.errors


def glossary_health(settings: Settings) -> GlossaryHealth:
    """Count the usable terms and list every error, as `digest status` and the desk show them."""
    glossary, errors = read_glossary(settings.terms_dir)
    return GlossaryHealth(len(glossary), errors)


def usable_glossary(settings: Settings) -> tuple[Glossary, list[GlossaryError]]:
    """The valid terms, and the errors of those left out — each logged as a warning.

    What the build and the weekly job select from: a broken file costs its own term, never the
    week's issue (`digest terms validate` still fails on it, for the editor to fix).
    """
    glossary, errors = read_glossary(settings.terms_dir)
    for error in errors:
        log_event(
            _log,
            "term_left_out",
            level=logging.WARNING,
            path=str(error.path),
            line=error.line,
            field=error.field,
            message=error.message,
        )
    return glossary, errors
