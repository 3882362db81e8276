"""The public archive's pages: one issue's page with its neighbours and quiz answer, and the index.

Each page is rendered from the issue's frozen snapshot, never from the current glossary, so the
archive shows what went out. Only what its build could not know comes in when it is rendered:
the issues on either side (the next one did not exist yet), the dates in the site's language,
and, for a page the app serves, the reader's `?answer=` to the quiz. Pure: the web's routes
and `digest build` pass the issues in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from digest.config import Settings
from digest.core.dates import issue_date, long_date, week_label
from digest.core.quiz import read_answer
from digest.core.render import RenderError, base_context, issue_context, render_template
from digest.core.urls import Urls
from digest.model.snapshot import Snapshot
from digest.model.weeks import IsoWeek

__all__ = [
    "ArchivedIssue",
    "Visit",
    "archive_entry",
    "archive_index",
    "archive_page",
    "archive_pages",
]


class ArchivedIssue(Protocol):
    """What the archive needs of an issue: its week and frozen snapshot (an `IssueRecord`, or
    the lighter rows of `digest.store.archive`)."""

    @property
    def week(self) -> IsoWeek: ...
    @property
    def snapshot(self) -> Snapshot | None: ...


@dataclass(frozen=True, slots=True)
class Visit:
    """What a page the app serves knows and a written file cannot: the reader's `?answer=` as
    given (anything at all; `core.quiz.read_answer` judges it) and the request's CSP nonce."""

    answer: str | None
    csp_nonce: str


def archive_entry(
    settings: Settings, issue: ArchivedIssue, locale: str | None = None
) -> dict[str, str] | None:
    """An issue as the archive lists and links it: week, date, title, one-liner and address,
    in `locale` (None: the newsletter's own; its address then asks for that language too);
    None for an issue without content."""
    if not issue.snapshot:
        return None
    urls = Urls.from_settings(settings, locale)
    settings = settings.for_locale(locale)
    day = issue_date(issue.week, settings.schedule, settings.timezone)
    term = issue.snapshot["term"]
    return {
        "week": str(issue.week),
        "week_label": week_label(issue.week, settings.locale),
        "date": long_date(day, settings.locale),
        "date_iso": day.isoformat(),
        "title": term["title"],
        "summary": term["summary"],
        "url": urls.archive_page(issue.week),
    }


def archive_page(
    settings: Settings,
    issue: ArchivedIssue,
    *,
    older: ArchivedIssue | None = None,
    newer: ArchivedIssue | None = None,
    visit: Visit | None = None,
    locale: str | None = None,
) -> str:
    """The public page of one issue, with links to the `older` and `newer` public issues, in
    `locale` (None: the newsletter's own; its links then keep that language).

    `visit`: the page is served for a request, and says right or wrong to the quiz answer in
    it; without, it is a file for a static host, where a small script reads the answer from the
    address (templates/quiz/_page.html.j2).
    """
    if not issue.snapshot:
        raise RenderError(f"issue {issue.week} has no content yet")
    context: dict[str, Any] = issue_context(issue.snapshot, settings, locale)  # with its date
    context["older_issue"] = None if older is None else archive_entry(settings, older, locale)
    context["newer_issue"] = None if newer is None else archive_entry(settings, newer, locale)
    if visit is None:
        context["quiz_mode"] = "static"
    else:
        context["quiz_mode"] = "served"
        context["quiz_answer"] = read_answer(issue.snapshot.get("quiz"), visit.answer)
        context["csp_nonce"] = visit.csp_nonce
    return render_template(settings.templates_dir, "archive/issue.html.j2", context)


def archive_pages(settings: Settings, issues: Sequence[ArchivedIssue]) -> dict[IsoWeek, str]:
    """Every page of `issues` (the public ones) as files for a static host, each linking its
    neighbours among them: a new issue changes its predecessor's page too."""
    ordered = sorted((i for i in issues if i.snapshot), key=lambda i: i.week)
    pages: dict[IsoWeek, str] = {}
    for n, issue in enumerate(ordered):
        older = ordered[n - 1] if n > 0 else None
        newer = ordered[n + 1] if n + 1 < len(ordered) else None
        pages[issue.week] = archive_page(settings, issue, older=older, newer=newer)
    return pages


def archive_index(
    settings: Settings, issues: Sequence[ArchivedIssue], locale: str | None = None
) -> str:
    """The archive's list of issues, in the order given (callers pass newest first), in
    `locale` (None: the newsletter's own)."""
    context = base_context(settings, locale)
    found = (archive_entry(settings, issue, locale) for issue in issues)
    context["entries"] = [entry for entry in found if entry is not None]
    return render_template(settings.templates_dir, "archive/index.html.j2", context)
