"""The weekly quiz: one question that brings back last week's term, and how an answer is read.

Spaced repetition: a term read once is kept far better when it is recalled a week later, so the
question asks which one-liner (`summary`) is last week's term's, among two plausible ones of the
same category. Pure and deterministic: the same glossary and week always give the same quiz
(the order comes from SHA-256 of the week, never from Python's per-process `hash()`), and the
build freezes it into the snapshot, so a resend or the archive shows the quiz that went out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from digest.core.urls import Urls
from digest.model.glossary import Glossary, Term
from digest.model.snapshot import SnapshotQuiz, SnapshotQuizChoice
from digest.model.weeks import IsoWeek

__all__ = ["CHOICES", "Verdict", "make_quiz", "read_answer"]

# One right answer and two wrong ones: enough to make a reader think, few enough to read in a
# mail's glance, and each one a short line.
CHOICES = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    """A reader's answer to an issue's quiz: the number they chose, whether it is the right
    one, and the choice itself (whose one-liner it was)."""

    number: int
    right: bool
    choice: SnapshotQuizChoice


def make_quiz(
    glossary: Glossary,
    week: IsoWeek,
    featured: Term,
    related: Sequence[Term],
    last_week: tuple[IsoWeek, str] | None,
    urls: Urls,
) -> SnapshotQuiz | None:
    """`week`'s quiz, or None when the glossary cannot make one (no term to ask about, or fewer
    than three distinct one-liners).

    `last_week`: (week, featured slug) of the latest issue before this one that went out; the
    quiz asks about that term. Without one (the first issue), or when that term has since left
    the glossary or is this week's term again, it asks about `related[0]`, the concept most
    related to this week's `featured` term, which the mail lists just above the quiz.
    """
    asked: Term | None = None
    from_week: str | None = None
    if last_week is not None:
        earlier = glossary.get(last_week[1])
        if earlier is not None and earlier.slug != featured.slug:
            asked, from_week = earlier, str(last_week[0])
    if asked is None:
        asked = next((t for t in related if t.slug != featured.slug), None)
    if asked is None:
        return None
    wrong = _distractors(glossary, asked, featured, week)
    if len(wrong) < CHOICES - 1:
        return None
    right = _order(week, "right answer") % CHOICES
    choices = list(wrong)
    choices.insert(right, asked)
    return {
        "kind": "related" if from_week is None else "last_week",
        "from_week": from_week,
        "term": {
            "slug": asked.slug,
            "title": asked.title,
            "definition": asked.definition,
            "url": urls.term(asked.slug),
        },
        "choices": [
            {"slug": t.slug, "title": t.title, "summary": t.summary, "url": urls.term(t.slug)}
            for t in choices
        ],
        "right": right + 1,
    }


def read_answer(quiz: Mapping[str, object] | None, answer: str | None) -> Verdict | None:
    """What the `answer` of a quiz link (`?answer=2`) says, or None for no quiz, no answer or
    anything that is not exactly one of the choices' numbers ("2", not "02", " 2" or "two")."""
    if quiz is None or answer is None:
        return None
    choices = quiz.get("choices")
    right = quiz.get("right")
    if not isinstance(choices, list) or not isinstance(right, int):
        return None
    numbers = {str(n): n for n in range(1, len(choices) + 1)}
    number = numbers.get(answer)
    if number is None:
        return None
    chosen: SnapshotQuizChoice = choices[number - 1]
    return Verdict(number=number, right=number == right, choice=chosen)


# --------------------------------------------------------------------------- wrong answers


def _order(week: IsoWeek, what: str) -> int:
    """A number that stands still for a week and `what`, and differs between weeks: SHA-256,
    so a rebuild next year, on another machine or Python, orders the same way."""
    digest = hashlib.sha256(f"digest quiz|{week}|{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _same_words(summary: str) -> str:
    return " ".join(summary.split()).casefold()


def _distractors(glossary: Glossary, asked: Term, featured: Term, week: IsoWeek) -> list[Term]:
    """Two wrong one-liners, as plausible as the glossary allows, each unlike the right one
    and unlike each other.

    Terms of the asked term's category first, nearest in difficulty first (an advanced line
    beside a beginner's gives the answer away); when the category is too small, the asked
    term's neighbours in the related graph, then any term. This week's featured term comes
    last: its one-liner is in the same mail, so it would be the easiest line to rule out.
    Ties are broken by the week's own order, so the wrong answers change from week to week.
    """

    def closeness(term: Term) -> tuple[int, int]:
        return abs(term.level - asked.level), _order(week, term.slug)

    others = [t for t in glossary if t.slug not in (asked.slug, featured.slug)]
    category = asked.category.casefold()
    neighbours = glossary.neighbours(asked.slug)
    tiers: list[Iterable[Term]] = [
        sorted((t for t in others if t.category.casefold() == category), key=closeness),
        sorted((t for t in others if t.slug in neighbours), key=closeness),
        sorted(others, key=closeness),
        [featured] if featured.slug != asked.slug else [],
    ]
    seen = {_same_words(asked.summary)}
    chosen: list[Term] = []
    for tier in tiers:
        for term in tier:
            words = _same_words(term.summary)
            if words in seen:
                continue
            seen.add(words)
            chosen.append(term)
            if len(chosen) == CHOICES - 1:
                return chosen
    return chosen
