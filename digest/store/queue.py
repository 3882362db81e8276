"""The editors' queue: terms to feature next, in order, each optionally pinned to an ISO week.

Stored in the `queue` table with positions kept dense (1..n) after every change, so "move to 3"
always means third. Selection reads it through `list_queue`; the build calls `consume`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from digest.model.glossary import Glossary
from digest.model.issue import FEATURED_STATES
from digest.model.queue import QueueEntry
from digest.model.weeks import IsoWeek, parse_week
from digest.store.db import issues, queue, utcnow
from digest.store.issues import featured_history

__all__ = [
    "AlreadyFeatured",
    "QueueError",
    "add_to_queue",
    "consume",
    "list_queue",
    "move_in_queue",
    "pin",
    "remove_from_queue",
]

NOTE_MAX = 500


class QueueError(Exception):
    """A queue change was refused; the message says why, fit to show an editor."""


class AlreadyFeatured(QueueError):
    """The term went out before; queueing it again is allowed only when forced."""

    def __init__(self, slug: str, weeks: Sequence[IsoWeek]) -> None:
        self.slug = slug
        self.weeks = tuple(weeks)
        listed = ", ".join(str(w) for w in self.weeks)
        super().__init__(f"{slug!r} was already featured in {listed}")


def list_queue(engine: Engine | Connection) -> list[QueueEntry]:
    """Every entry, first position first."""
    with _transaction(engine) as conn:
        return [_entry(r) for r in conn.execute(_ordered())]


def add_to_queue(
    engine: Engine,
    glossary: Glossary,
    slug: str,
    *,
    week: IsoWeek | None = None,
    note: str | None = None,
    force: bool = False,
    history: Sequence[tuple[IsoWeek, str]] | None = None,
    this_week: IsoWeek | None = None,
    now: datetime,
) -> QueueEntry:
    """Append a term to the queue, or pin it to `week`; return the stored entry.

    `slug` may also be a title or alias. A term already featured (per `history`, read from the
    issues table when not given) raises `AlreadyFeatured` unless `force`. With `this_week`,
    a pin to an earlier week is refused: it would only ever be treated as a missed pin.
    """
    term = glossary.get(slug) or glossary.lookup(slug)
    if term is None:
        raise QueueError(f"no term {slug!r} in the glossary{_did_you_mean(slug, _names(glossary))}")
    slug = term.slug
    note = _clean_note(note)
    if week is not None and this_week is not None and week < this_week:
        raise QueueError(f"{week} is in the past (this week is {this_week})")
    if history is None:
        history = featured_history(engine)
    featured = [w for w, s in history if s == slug]
    if featured and not force:
        raise AlreadyFeatured(slug, featured)
    try:
        with engine.begin() as conn:
            existing = conn.execute(select(queue.c.position).where(queue.c.slug == slug)).first()
            if existing is not None:
                raise QueueError(
                    f"{slug!r} is already in the queue at position {existing.position}"
                )
            if week is not None:
                pinned = conn.execute(select(queue.c.slug).where(queue.c.week == str(week))).first()
                if pinned is not None:
                    raise QueueError(f"{week} is already pinned to {pinned.slug!r}")
            last = conn.execute(select(func.coalesce(func.max(queue.c.position), 0))).scalar_one()
            conn.execute(
                insert(queue).values(
                    slug=slug,
                    week=str(week) if week is not None else None,
                    note=note,
                    position=last + 1,
                    created_at=now,
                )
            )
            _renumber(conn)
            row = conn.execute(select(queue).where(queue.c.slug == slug)).one()
    except IntegrityError:  # another editor queued the same term at the same moment
        raise QueueError(f"{slug!r} is already in the queue") from None
    return _entry(row)


def pin(
    engine: Engine,
    glossary: Glossary,
    slug: str,
    week: IsoWeek,
    *,
    this_week: IsoWeek | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> QueueEntry:
    """Pin `slug` (or a title or alias) to `week`: a queued term keeps its place and note and
    gets the pin; one not queued is added, pinned, at the end (refused as `add_to_queue` would
    refuse it: `AlreadyFeatured` unless `force`). Return the stored entry.

    Refused: an unknown term (with a suggestion), a week before `this_week`, a week pinned to
    another term, and a week that already has an issue with content featuring another term —
    the pin would never be used, and the editor would believe it was.
    """
    term = glossary.get(slug) or glossary.lookup(slug)
    if term is None:
        raise QueueError(f"no term {slug!r} in the glossary{_did_you_mean(slug, _names(glossary))}")
    slug = term.slug
    if this_week is not None and week < this_week:
        raise QueueError(f"{week} is in the past (this week is {this_week})")
    with engine.begin() as conn:
        built = conn.execute(
            select(issues.c.featured_slug, issues.c.status).where(
                issues.c.week == str(week), issues.c.status.in_(FEATURED_STATES)
            )
        ).first()
        if built is not None and built.featured_slug != slug:
            raise QueueError(
                f"{week} already has an issue ({built.status}) featuring {built.featured_slug!r}"
            )
        pinned = conn.execute(
            select(queue.c.slug).where(queue.c.week == str(week), queue.c.slug != slug)
        ).first()
        if pinned is not None:
            raise QueueError(f"{week} is already pinned to {pinned.slug!r}")
        queued = conn.execute(update(queue).where(queue.c.slug == slug).values(week=str(week)))
        if queued.rowcount:
            return _entry(conn.execute(select(queue).where(queue.c.slug == slug)).one())
    # Not queued yet: added as `queue add --week` would add it (the same checks, one place).
    return add_to_queue(engine, glossary, slug, week=week, force=force, now=now or utcnow())


def remove_from_queue(engine: Engine, slug: str) -> QueueEntry:
    """Take `slug` out of the queue (it need not be in the glossary any more); return it."""
    with engine.begin() as conn:
        entry = _get(conn, slug)
        conn.execute(delete(queue).where(queue.c.slug == entry.slug))
        _renumber(conn)
    return entry


def move_in_queue(engine: Engine, slug: str, to: int) -> QueueEntry:
    """Move `slug` to position `to` (1-based); the entries in between shift by one."""
    with engine.begin() as conn:
        entry = _get(conn, slug)
        ids = [r.id for r in conn.execute(_ordered())]
        if not 1 <= to <= len(ids):
            raise QueueError(f"position must be between 1 and {len(ids)} (got {to})")
        moved = conn.execute(select(queue.c.id).where(queue.c.slug == entry.slug)).scalar_one()
        ids.remove(moved)
        ids.insert(to - 1, moved)
        _write_positions(conn, ids)
        row = conn.execute(select(queue).where(queue.c.id == moved)).one()
    return _entry(row)


def consume(engine: Engine | Connection, slug: str) -> bool:
    """Drop `slug` once an issue has used it; False if it was not queued (a no-op, so safe to
    repeat when a build is retried). Pass the build's Connection to make it part of its commit.
    """
    with _transaction(engine) as conn:
        removed = conn.execute(delete(queue).where(queue.c.slug == slug)).rowcount
        if removed:
            _renumber(conn)
    return bool(removed)


# --------------------------------------------------------------------------- helpers


@contextmanager
def _transaction(engine: Engine | Connection) -> Iterator[Connection]:
    """A transaction of our own on an Engine, or the caller's own on a Connection."""
    if isinstance(engine, Connection):
        yield engine
        return
    with engine.begin() as conn:
        yield conn


def _ordered() -> Any:
    # `id` breaks ties, so two adds that raced to the same position still list in a stable order.
    return select(queue).order_by(queue.c.position, queue.c.id)


def _renumber(conn: Connection) -> None:
    _write_positions(conn, [r.id for r in conn.execute(_ordered())])


def _write_positions(conn: Connection, ids: list[int]) -> None:
    current = {r.id: r.position for r in conn.execute(select(queue.c.id, queue.c.position))}
    for position, id_ in enumerate(ids, start=1):
        if current.get(id_) != position:
            conn.execute(update(queue).where(queue.c.id == id_).values(position=position))


def _entry(row: Any) -> QueueEntry:
    week = parse_week(row.week) if row.week else None
    return QueueEntry(slug=row.slug, week=week, note=row.note, position=row.position)


def _get(conn: Connection, slug: str) -> QueueEntry:
    row = conn.execute(select(queue).where(queue.c.slug == slug)).first()
    if row is None:
        queued = [r.slug for r in conn.execute(_ordered())]
        hint = _did_you_mean(slug, {s: s for s in queued})
        raise QueueError(f"{slug!r} is not in the queue{hint}")
    return _entry(row)


def _clean_note(note: str | None) -> str | None:
    if note is None:
        return None
    note = " ".join(note.split())  # one line: it is shown in tables
    if len(note) > NOTE_MAX:
        raise QueueError(f"note is {len(note)} characters; keep it under {NOTE_MAX}")
    return note or None


def _names(glossary: Glossary) -> dict[str, str]:
    """Every way to name a term (slug, title, aliases), casefolded, → its slug."""
    names: dict[str, str] = {}
    for term in glossary:
        for name in (term.slug, *term.names):
            names.setdefault(name.casefold(), term.slug)
    return names


def _did_you_mean(wanted: str, names: dict[str, str]) -> str:
    close = difflib.get_close_matches(wanted.strip().casefold(), list(names), n=6, cutoff=0.75)
    slugs = list(dict.fromkeys(names[c] for c in close))[:3]
    return f"; did you mean {_or_list(slugs)}?" if slugs else ""


def _or_list(items: Iterable[str]) -> str:
    quoted = [repr(i) for i in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
