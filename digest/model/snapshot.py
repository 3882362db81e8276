"""An issue's snapshot: the typed, versioned record of everything it shows, frozen at its build.

Stored as JSON and rendered again long after (the archive, the feed, a preview), possibly by
another digest version, so the shape carries a version and is checked before it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NotRequired, Protocol, TypedDict

from digest.model.weeks import IsoWeek

__all__ = [
    "SNAPSHOT_VERSION",
    "PreviousIssue",
    "RelatedTerm",
    "Snapshot",
    "SnapshotAlias",
    "SnapshotPick",
    "SnapshotQuiz",
    "SnapshotQuizChoice",
    "SnapshotQuizTerm",
    "SnapshotSection",
    "SnapshotSource",
    "SnapshotTerm",
    "SnapshotVersionError",
    "StoredSnapshot",
    "check_snapshot_version",
    "readable",
    "snapshot_problem",
]

# The shape below. Bump it when the shape changes, so a digest that does not know a snapshot's
# shape (an older one after a downgrade) refuses it instead of rendering it wrongly.
SNAPSHOT_VERSION = 1


class SnapshotAlias(TypedDict):
    name: str
    lang: str | None


class SnapshotSource(TypedDict):
    title: str
    url: str


class SnapshotSection(TypedDict):
    title: str
    markdown: str
    html: str


class SnapshotTerm(TypedDict):
    slug: str
    title: str
    summary: str
    definition: str
    category: str
    difficulty: str
    added: str  # an ISO week, "2026-W10"
    aliases: list[SnapshotAlias]
    sources: list[SnapshotSource]
    sections: list[SnapshotSection]
    url: str
    # The term file's own lines, written only when it has them. Optional keys, not a new
    # version: a snapshot without them renders with the default subject as it always did.
    subject: NotRequired[str]
    preheader: NotRequired[str]
    # The Word-of-the-Day extras, likewise only when the file has them.
    pronunciation: NotRequired[str]
    did_you_know: NotRequired[str]


class RelatedTerm(TypedDict):
    slug: str
    title: str
    summary: str
    url: str


class PreviousIssue(TypedDict):
    """An issue sent before this one, as the mail lists it ("the last three issues")."""

    week: str  # "2026-W49"
    title: str
    date: str  # its calendar date (digest.core.dates.issue_date), ISO: "2026-11-30"
    url: str  # its archive page


class SnapshotPick(TypedDict):
    source: str  # "pin", "queue" or "rotation"
    note: str | None


class SnapshotQuizChoice(TypedDict):
    """One answer of the quiz: a term's one-liner (`summary`), and whose it is."""

    slug: str
    title: str
    summary: str
    url: str  # the term's glossary page


class SnapshotQuizTerm(TypedDict):
    """The term the quiz asks about, as its explanation shows it."""

    slug: str
    title: str
    definition: str
    url: str


class SnapshotQuiz(TypedDict):
    """The issue's quiz (digest.core.quiz), frozen like the rest: which one-liner is `term`'s?

    `kind` "last_week": `term` was featured by the issue of `from_week`, the latest one sent
    before this (spaced repetition); "related": no earlier issue, so a related concept of this
    issue's own term. `choices` in the order shown; `right` the number (from 1) of its summary.
    """

    kind: Literal["last_week", "related"]
    from_week: str | None
    term: SnapshotQuizTerm
    choices: list[SnapshotQuizChoice]
    right: int


class Snapshot(TypedDict):
    """What `digest.campaign.build.make_snapshot` writes, exactly as stored (the JSON is this dict)."""

    version: int
    week: str
    term: SnapshotTerm
    related: list[RelatedTerm]
    news: list[dict[str, str]]  # NewsItem.to_dict(): title, link, source, published
    pick: SnapshotPick
    # The last issues sent before this one, newest first, as they were when it was built: the
    # mail links them. Snapshots from before the list lack the key; their mail has no list.
    previous: NotRequired[list[PreviousIssue]]
    # An optional key, not a new version: snapshots from before the quiz (or of a glossary too
    # small for one) lack it, and their mail and page show no quiz.
    quiz: NotRequired[SnapshotQuiz]


class SnapshotVersionError(ValueError):
    """A stored issue's snapshot has a shape this digest does not know; the message says what
    to do (upgrade digest, or rebuild the issue while it can still be rebuilt)."""


class StoredSnapshot(Protocol):
    """What the version check needs of a stored issue (an `IssueRecord`)."""

    @property
    def week(self) -> IsoWeek: ...
    @property
    def status(self) -> str: ...
    @property
    def snapshot(self) -> Mapping[str, object] | None: ...
    @property
    def can_rebuild(self) -> bool: ...


def snapshot_problem(record: StoredSnapshot) -> str | None:
    """Why this digest cannot render `record`'s snapshot, with what to do; None when it can."""
    try:
        check_snapshot_version(record)
    except SnapshotVersionError as exc:
        return str(exc)
    return None


def readable(record: StoredSnapshot) -> bool:
    """Whether this digest can render `record`'s snapshot (see `check_snapshot_version`)."""
    return snapshot_problem(record) is None


def check_snapshot_version(record: StoredSnapshot) -> None:
    """Refuse `record`'s stored snapshot unless this digest knows its shape (SNAPSHOT_VERSION).

    Rendering an unknown shape would fail deep in a template or, worse, quietly show the wrong
    thing. digest has always written a version; a snapshot without one is read as version 1.
    """
    version = (record.snapshot or {}).get("version", 1)
    if type(version) is int and version == SNAPSHOT_VERSION:  # not True, not "1"
        return
    week = record.week
    if type(version) is int and version > SNAPSHOT_VERSION:
        problem = f"issue {week} was built by a newer digest (snapshot version {version})"
        upgrade = "upgrade digest or "
    else:
        problem = f"issue {week} has a snapshot of unknown version {version!r}"
        upgrade = ""
    if record.can_rebuild:
        remedy = f"{upgrade}rebuild it with `digest build --week {week} --rebuild`"
    elif upgrade:
        remedy = f"upgrade digest; a {record.status} issue cannot be rebuilt"
    else:
        remedy = f"a {record.status} issue cannot be rebuilt; restore it from a backup"
    raise SnapshotVersionError(f"{problem}; {remedy}")
