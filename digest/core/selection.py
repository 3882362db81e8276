"""Choosing the week's featured term (pin, then queue, then rotation) and its related concepts.

Pure: glossary, featured history, queue and week in; a pick out. No clock and no database, so the
same inputs always give the same pick and `plan` can simulate the coming months without risk.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from digest.model.glossary import Glossary, Term
from digest.model.queue import QueueEntry
from digest.model.weeks import IsoWeek

__all__ = ["Pick", "PickSource", "first_open_week", "pick_featured", "plan", "related_concepts"]

PickSource = Literal["pin", "queue", "rotation"]
History = Sequence[tuple[IsoWeek, str]]


@dataclass(frozen=True, slots=True)
class Pick:
    week: IsoWeek
    slug: str
    source: PickSource
    note: str | None = None


# --------------------------------------------------------------------------- featured pick


def pick_featured(
    glossary: Glossary, history: History, queue: Sequence[QueueEntry], week: IsoWeek
) -> Pick:
    """The term to feature in `week`.

    1. A queue entry pinned to `week`.
    2. The first queue entry (by position) that is unpinned, or pinned to a week before `week`:
       a missed pin is not dropped, it simply waits its turn in the queue.
    3. Otherwise the rotation (see `_rotate`).

    Only history before `week` counts, so rebuilding a week gives the pick it had. Queue entries
    for terms no longer in the glossary are skipped; one whose file is invalid (in
    `glossary.left_out`) is skipped too, but the pick's note says why, and the entry is never
    consumed, so it goes out once the file is fixed.
    """
    if len(glossary) == 0:
        raise ValueError("the glossary is empty: there is nothing to feature")
    ordered = sorted(queue, key=lambda e: e.position)
    entries = [e for e in ordered if e.slug in glossary]
    # The order the queue is tried in: this week's pin, then the due entries by position.
    due: list[tuple[QueueEntry, PickSource]] = [(e, "pin") for e in ordered if e.week == week]
    due += [(e, "queue") for e in ordered if e.week is None or e.week < week]
    passed_over: list[str] = []
    for entry, source in due:
        if entry.slug in glossary:
            return Pick(week, entry.slug, source, _note(*passed_over, entry.note))
        errors = glossary.left_out.get(entry.slug)
        if errors:
            kind = "pinned" if source == "pin" else "queued"
            passed_over.append(f"{kind} term {entry.slug} left out: {_first(errors)}")
    past = sorted(((w, s) for w, s in history if w < week), key=lambda item: item[0])
    # What is left in the queue is pinned to later weeks: the rotation must not take it early.
    reserved = {e.slug for e in entries}
    # …and should not match the category of next week's pin, or the two would run back to back.
    pinned_next = next((e.slug for e in entries if e.week == week + 1), None)
    slug = _rotate(glossary, past, reserved, pinned_next)
    return Pick(week, slug, "rotation", _note(*passed_over))


def _note(*parts: str | None) -> str | None:
    return "; ".join(p for p in parts if p) or None


def _first(errors: Sequence[object]) -> str:
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{errors[0]}{more}"


def plan(
    glossary: Glossary,
    history: History,
    queue: Sequence[QueueEntry],
    start: IsoWeek,
    weeks: int,
    *,
    fixed: Mapping[IsoWeek, Pick] | None = None,
) -> list[Pick]:
    """The picks for `weeks` weeks from `start`, as building each week in turn would make them.

    `fixed` holds the weeks whose term is already decided (an issue is built or sent for it):
    they keep it, count as history for every later week, and consume nothing — their queue
    entries went when they were built. Each other pick is appended to a simulated history and
    consumed from a simulated queue, exactly as building that week would; nothing is stored.
    Other history from `start` on is ignored: it is what the plan replaces.
    """
    if weeks < 0:
        raise ValueError(f"weeks must be 0 or more (got {weeks})")
    decided = dict(fixed or {})
    simulated = [(w, s) for w, s in history if w < start and w not in decided]
    simulated += [(w, p.slug) for w, p in decided.items()]
    pending = list(queue)
    picks: list[Pick] = []
    for offset in range(weeks):
        week = start + offset
        pick = decided.get(week)
        if pick is None:
            pick = pick_featured(glossary, simulated, pending, week)
            simulated.append((pick.week, pick.slug))
            if pick.source != "rotation":
                pending = [e for e in pending if e.slug != pick.slug]
        picks.append(pick)
    return picks


def first_open_week(history: History, this_week: IsoWeek) -> IsoWeek:
    """The first week from `this_week` on that has no issue yet: where a plan starts."""
    latest = max((w for w, _ in history), default=None)
    return this_week if latest is None or latest < this_week else latest + 1


# --------------------------------------------------------------------------- rotation


@dataclass(frozen=True)
class _RotationIndex:
    """What the rotation needs from a glossary, computed once per Glossary object."""

    level: dict[str, int]
    category: dict[str, str]  # casefolded
    prerequisites: dict[str, tuple[str, ...]]  # related terms (either direction) of lower level
    dependents: dict[str, tuple[str, ...]]  # related terms (either direction) of higher level
    level_totals: dict[int, int]


_rotation_indexes: weakref.WeakKeyDictionary[Glossary, _RotationIndex] = weakref.WeakKeyDictionary()


def _rotation_index(glossary: Glossary) -> _RotationIndex:
    index = _rotation_indexes.get(glossary)
    if index is None:
        level = {t.slug: t.level for t in glossary}
        # Related in either direction: a basic term need not list the advanced ones built on it.
        near: dict[str, set[str]] = {slug: set() for slug in level}
        for term in glossary:
            for other in term.related:
                if other in near and other != term.slug:
                    near[term.slug].add(other)
                    near[other].add(term.slug)
        prerequisites: dict[str, tuple[str, ...]] = {}
        dependents: dict[str, tuple[str, ...]] = {}
        for slug, others in near.items():
            # Only ever counted, so their (set) order cannot leak into a pick.
            own = level[slug]
            prerequisites[slug] = tuple(s for s in others if level[s] < own)
            dependents[slug] = tuple(s for s in others if level[s] > own)
        index = _RotationIndex(
            level=level,
            category={t.slug: t.category.casefold() for t in glossary},
            prerequisites=prerequisites,
            dependents=dependents,
            level_totals=dict(Counter(level.values())),
        )
        _rotation_indexes[glossary] = index
    return index


def _rotate(
    glossary: Glossary, history: History, reserved: set[str], pinned_next: str | None = None
) -> str:
    """The automatic pick, by these rules in this order of strength:

    1. Cycles: no term repeats until every term has been featured; then a new cycle starts,
       avoiding for a while the terms that closed the last one.
    2. Category: never the category of the last issue (nor of next week's pin) while another is
       available, and only categories that keep the rest of the cycle free of back-to-back
       categories when that is still possible.
    3. Prerequisites: prefer terms whose more basic related terms were featured in this cycle.
    4. Difficulty balance: prefer the level furthest behind its share of the glossary.
    5. Then terms that unlock the most advanced terms, then a per-cycle stable shuffle.
    """
    index = _rotation_index(glossary)
    seen: set[str] = set()
    cycle = 0
    for _week, slug in history:
        if slug in index.level:
            seen.add(slug)
            if len(seen) == len(index.level):
                seen, cycle = set(), cycle + 1
    last = next((s for _w, s in reversed(history) if s in index.level), None)
    last_category = index.category[last] if last else None

    pool = [s for s in index.level if s not in seen and s not in reserved]
    if not pool:
        # Every term not yet featured is pinned to a later week. Repeat the one featured longest
        # ago rather than take a pin early (which would then repeat on its own week).
        pool = [s for s in index.level if s not in reserved] or list(index.level)
        ago = {s: i for i, (_w, s) in enumerate(history)}
        other = [s for s in pool if index.category[s] != last_category] or pool
        return min(other, key=lambda s: (ago.get(s, -1), s))
    # A new cycle starts with terms the old one featured early, not with the ones just featured.
    span = len(index.level) // 2
    recent = {s for _w, s in history[max(0, len(history) - span) :]}
    pool = [s for s in pool if s not in recent] or pool

    counts = Counter(index.category[s] for s in pool)
    categories = _allowed_categories(counts, last_category)
    if pinned_next is not None:
        categories = categories - {index.category[pinned_next]} or categories
    candidates = [s for s in pool if index.category[s] in categories]

    done = Counter(index.level[s] for s in seen)
    progress = (len(seen) + 1) / len(index.level)
    # How far each level is behind its share of the cycle so far. The share grows a little
    # faster for basic terms and slower for advanced ones, so a cycle leans basic early on.
    behind = {
        lvl: round(n * progress ** _LEVEL_PACE.get(lvl, 1.0) - done[lvl], 9)
        for lvl, n in index.level_totals.items()
    }

    def key(slug: str) -> tuple[bool, float, int, int]:
        unmet = sum(1 for p in index.prerequisites[slug] if p not in seen)
        unlocks = sum(1 for d in index.dependents[slug] if d not in seen)
        return (unmet > 0, -behind[index.level[slug]], unmet, -unlocks)

    keys = {s: key(s) for s in candidates}
    best = min(keys.values())
    return min((s for s, k in keys.items() if k == best), key=lambda s: _shuffle(cycle, s))


_LEVEL_PACE = {0: 0.8, 1: 1.0, 2: 1.25}  # exponents of the share curve per difficulty level


def _allowed_categories(counts: Counter[str], last: str | None) -> set[str]:
    """Categories the next pick may come from, given how many unfeatured terms each has left.

    Picking category c leaves n-1 terms to order with c not first; that is possible without two
    same-category weeks in a row iff c has at most (n-1)//2 left and every other category at most
    n//2. Choosing only such categories keeps the whole cycle free of repeats whenever it can be;
    when no choice can, the largest category goes first, which keeps the repeats to a minimum.
    """
    options = [c for c in counts if c != last] or list(counts)
    rest = sum(counts.values()) - 1
    ranked = counts.most_common(2)

    def largest_other(c: str) -> int:
        return next((n for k, n in ranked if k != c), 0)

    fits = {
        c for c in options if counts[c] - 1 <= rest // 2 and largest_other(c) <= (rest + 1) // 2
    }
    if fits:
        return fits
    most = max(counts[c] for c in options)
    return {c for c in options if counts[c] == most}


def _shuffle(cycle: int, slug: str) -> bytes:
    """A stable pseudo-random order that changes from cycle to cycle (not alphabetical)."""
    return hashlib.blake2b(f"{cycle}:{slug}".encode(), digest_size=8).digest()


# --------------------------------------------------------------------------- related concepts

_WORD_RE = re.compile(r"[^\W_]+")
_LINK_TARGET_RE = re.compile(r"\]\([^)]*\)|<?https?://\S+")


@dataclass(frozen=True)
class _NameIndex:
    names: dict[tuple[str, ...], str]  # a title or alias as casefolded words → its slug
    longest: int  # words in the longest name
    by_category: dict[str, tuple[str, ...]]


_name_indexes: weakref.WeakKeyDictionary[Glossary, _NameIndex] = weakref.WeakKeyDictionary()


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.casefold())


def _name_index(glossary: Glossary) -> _NameIndex:
    index = _name_indexes.get(glossary)
    if index is None:
        names: dict[tuple[str, ...], str] = {}
        by_category: dict[str, list[str]] = {}
        for term in glossary:
            by_category.setdefault(term.category.casefold(), []).append(term.slug)
            for name in term.names:
                words = tuple(_words(name))
                if sum(map(len, words)) >= 2:  # a one-letter name would match everywhere
                    names.setdefault(words, term.slug)
        index = _NameIndex(
            names=names,
            longest=max(map(len, names), default=0),
            by_category={c: tuple(s) for c, s in by_category.items()},
        )
        _name_indexes[glossary] = index
    return index


def _mentioned(glossary: Glossary, term: Term) -> list[str]:
    """Terms whose title or an alias occurs in `term`'s text, in order of first mention.

    Matching is on whole words, ignoring case: "RAG" is not found in "fragment". The longest name
    wins at each place ("large language model" before "language model"), and a plural -s/-es on
    the last word still matches ("transformers" → Transformer).
    """
    index = _name_index(glossary)
    text = _LINK_TARGET_RE.sub(" ", "\n".join((term.summary, term.definition, term.body_text)))
    words = _words(text)
    found: list[str] = []
    i = 0
    while i < len(words):
        for width in range(min(index.longest, len(words) - i), 0, -1):
            slug = _lookup(index.names, words[i : i + width])
            if slug is not None:
                found.append(slug)
                i += width
                break
        else:
            i += 1
    return list(dict.fromkeys(found))


def _lookup(names: dict[tuple[str, ...], str], words: list[str]) -> str | None:
    key = tuple(words)
    slug = names.get(key)
    if slug is None and key[-1].endswith("s"):
        *head, tail = key
        slug = names.get((*head, tail[:-1]))
        if slug is None and tail.endswith("es"):
            slug = names.get((*head, tail[:-2]))
    return slug


def related_concepts(glossary: Glossary, term: Term, k: int = 4) -> list[Term]:
    """Up to `k` terms to show beside `term`, most relevant first, never `term`, never twice.

    Its own `related` list (the editor's choice) first; then terms its text mentions, in order;
    then terms whose `related` names it; then its category, nearest difficulty first.
    """
    if k <= 0:
        return []
    chosen: dict[str, Term] = {}

    def offer(slugs: Sequence[str]) -> bool:
        for slug in slugs:
            other = glossary.get(slug)
            if other is not None and slug != term.slug and slug not in chosen:
                chosen[slug] = other
                if len(chosen) == k:
                    return True
        return False

    if offer(term.related) or offer(_mentioned(glossary, term)):
        return list(chosen.values())
    if offer(glossary.backlinks.get(term.slug, ())):
        return list(chosen.values())
    same = _name_index(glossary).by_category.get(term.category.casefold(), ())
    offer(sorted(same, key=lambda s: (abs(glossary[s].level - term.level), s)))
    return list(chosen.values())
