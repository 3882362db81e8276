"""Building an issue: pick → snapshot → render → quality gates → stored as "built"; and the files.

The snapshot frozen here is what every later view (a resend, the archive, the feed) renders from,
so they show exactly what went out even after the glossary changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from digest.campaign.preflight import check_issue
from digest.campaign.site import write_atomic, write_glossary_site
from digest.config import Settings
from digest.core.archive import archive_index, archive_pages
from digest.core.checks import QualityError, check_email, check_page
from digest.core.dates import issue_date
from digest.core.feed import Feeds, render_feeds
from digest.core.i18n import available_locales
from digest.core.mails import PLACEHOLDERS, fill_markers
from digest.core.quiz import make_quiz
from digest.core.render import RenderedIssue, render_issue
from digest.core.selection import Pick, PickSource, pick_featured, related_concepts
from digest.core.tracking import tracked_links
from digest.core.urls import Urls
from digest.model.glossary import Glossary
from digest.model.issue import FEATURED_STATES, IssueRecord
from digest.model.snapshot import (
    SNAPSHOT_VERSION,
    Snapshot,
    SnapshotTerm,
    check_snapshot_version,
    readable,
)
from digest.model.weeks import IsoWeek
from digest.store.archive import PUBLIC_STATES, last_issue_out
from digest.store.issues import (
    InvalidTransition,
    featured_history,
    get_issue,
    list_issues,
    save_built,
)
from digest.store.news import NewsItem, fetch_news
from digest.store.queue import consume, list_queue
from digest.store.reader_language import languages_in_use
from digest.store.renditions import Rendition

__all__ = [
    "PREVIOUS_ISSUES",
    "BuildOutput",
    "RenderedIssue",
    "build_issue",
    "build_renditions",
    "build_site",
    "check_rendered",
    "make_snapshot",
    "next_issue_week",
    "preview_issue",
    "previous_issues",
    "render_issue",
    "sample_markers",
    "write_build",
]


@dataclass(frozen=True, slots=True)
class BuildOutput:
    record: IssueRecord
    rendered: RenderedIssue
    files: list[Path]


# --------------------------------------------------------------------------- snapshot


# How many earlier issues a mail links ("the last three issues").
PREVIOUS_ISSUES = 3


def make_snapshot(
    settings: Settings,
    glossary: Glossary,
    pick: Pick,
    news: Sequence[NewsItem] | Sequence[dict[str, str]] = (),
    previous: Sequence[IssueRecord] = (),
    *,
    last_week: tuple[IsoWeek, str] | None = None,
) -> Snapshot:
    """The JSON-able record of everything the issue shows: the featured term, its related
    concepts, the news, how it was picked, the `previous` issues it links (sent ones, newest
    first: `previous_issues`) and its quiz, which asks about `last_week`'s term ((week, slug)
    of the latest issue out before this one: `store.archive.last_issue_out`). Only the term and
    its neighbours are touched, so the cost does not grow with the glossary (the quiz's wrong
    answers read the term's category)."""
    term = glossary[pick.slug]
    related = related_concepts(glossary, term, settings.related_count)
    urls = Urls.from_settings(settings)
    frozen: SnapshotTerm = {
        "slug": term.slug,
        "title": term.title,
        "summary": term.summary,
        "definition": term.definition,
        "category": term.category,
        "difficulty": term.difficulty,
        "added": str(term.added),
        "aliases": [{"name": a.name, "lang": a.lang} for a in term.aliases],
        "sources": [{"title": s.title, "url": s.url} for s in term.sources],
        "sections": [
            {"title": s.title, "markdown": s.markdown, "html": s.html} for s in term.sections
        ],
        "url": urls.term(term.slug),
    }
    # Only when the file has them, so a term without its own lines freezes as it always did.
    if term.subject is not None:
        frozen["subject"] = term.subject
    if term.preheader is not None:
        frozen["preheader"] = term.preheader
    if term.pronunciation is not None:
        frozen["pronunciation"] = term.pronunciation
    if term.did_you_know is not None:
        frozen["did_you_know"] = term.did_you_know
    snapshot: Snapshot = {
        "version": SNAPSHOT_VERSION,
        "week": str(pick.week),
        "term": frozen,
        "related": [
            {
                "slug": other.slug,
                "title": other.title,
                "summary": other.summary,
                "url": urls.term(other.slug),
            }
            for other in related
        ],
        "news": [n.to_dict() if isinstance(n, NewsItem) else dict(n) for n in news],
        "pick": {"source": pick.source, "note": pick.note},
        "previous": [
            {
                "week": str(record.week),
                "title": record.snapshot["term"]["title"],
                "date": issue_date(record.week, settings.schedule, settings.timezone).isoformat(),
                "url": urls.archive_page(record.week),
            }
            for record in previous
            if record.snapshot
        ],
    }
    quiz = make_quiz(glossary, pick.week, term, related, last_week, urls)
    if quiz is not None:
        snapshot["quiz"] = quiz
    return snapshot


def previous_issues(engine: Engine, week: IsoWeek) -> list[IssueRecord]:
    """The last `PREVIOUS_ISSUES` issues sent before `week`, newest first: what its mail links.

    Sent only, like the archive: a built issue that never went out has no page to link. A
    snapshot this digest cannot read is passed over rather than stopping the build.
    """
    sent = list_issues(engine, statuses=["sent"], limit=PREVIOUS_ISSUES)
    if any(r.week >= week for r in sent):  # building a week older than the newest sent one
        sent = list_issues(engine, statuses=["sent"])
    earlier = [r for r in sent if r.week < week and r.snapshot and readable(r)]
    return earlier[:PREVIOUS_ISSUES]


def _choose(engine: Engine, glossary: Glossary, week: IsoWeek) -> tuple[Pick, bool]:
    """(the pick, whether it is new). A week that already has an issue keeps its term when
    rebuilt — its queue entry was consumed on the first build, so re-picking would silently
    feature something else — unless an editor has since pinned a term to that very week."""
    pick = pick_featured(glossary, featured_history(engine), list_queue(engine), week)
    existing = get_issue(engine, week)
    if existing is None or pick.source == "pin" or existing.featured_slug not in glossary:
        return pick, True
    pick_made = existing.snapshot.get("pick") if existing.snapshot else None
    note = pick_made.get("note") if pick_made else None
    source: PickSource = "rotation"
    if existing.pick_source in ("pin", "queue"):
        source = existing.pick_source  # type: ignore[assignment]
    return Pick(week, existing.featured_slug, source, note), False


# --------------------------------------------------------------------------- build


def check_rendered(rendered: RenderedIssue) -> list[str]:
    """Every quality-gate problem of a rendered issue: the mail parts and the public page."""
    return [
        *check_email(rendered.html, rendered.text),
        *(f"archive page: {p}" for p in check_page(rendered.archive_html)),
    ]


def build_issue(
    engine: Engine,
    settings: Settings,
    glossary: Glossary,
    week: IsoWeek,
    *,
    now: datetime,
    news: Sequence[NewsItem] | None = None,
    rebuild: bool = False,
) -> IssueRecord:
    """Build `week`'s issue and store it as "built"; return the stored issue.

    An issue that is already built (or sending, sent, paused) is returned unchanged unless
    `rebuild`, which only works until sending starts. With `news=None` the news feeds in the
    settings are fetched (only when the issue is actually built); pass a list, even an empty
    one, to choose the news yourself. Raises `QualityError` listing every failed gate,
    `RenderError` for a broken template, `InvalidTransition` for a frozen issue.
    """
    existing = get_issue(engine, week)
    if existing is not None and existing.status in FEATURED_STATES and not rebuild:
        return existing
    if existing is not None and not existing.can_rebuild:
        raise InvalidTransition(
            f"issue {week} is {existing.status}; its content is frozen once sending starts"
        )
    pick, fresh = _choose(engine, glossary, week)
    if news is None:
        news = fetch_news(settings, now)
    snapshot = make_snapshot(
        settings,
        glossary,
        pick,
        news,
        previous_issues(engine, week),
        last_week=last_issue_out(engine, week),
    )
    # An editor's subject and preheader belong to the week, not to one build of it.
    rendered = render_issue(
        snapshot,
        settings,
        subject=existing.subject_override if existing else None,
        preheader=existing.preheader_override if existing else None,
    )
    problems = check_rendered(rendered)
    if problems:
        raise QualityError(f"issue {week} ({pick.slug})", problems)
    renditions = build_renditions(engine, settings, snapshot, week)
    record = save_built(
        engine,
        week=week,
        featured_slug=pick.slug,
        related_slugs=[r["slug"] for r in snapshot["related"]],
        pick_source=pick.source,
        subject=rendered.subject,
        preheader=rendered.preheader,
        html=rendered.html,
        text=rendered.text,
        archive_html=rendered.archive_html,
        snapshot=snapshot,
        now=now,
        # Always, tracking on or off: a redirect of this issue can only ever go to one of
        # these, and switching DIGEST_TRACK_CLICKS on before the send needs no rebuild.
        links=_all_links(rendered, renditions),
        renditions=renditions,
    )
    # After the save: should this fail, the entry stays queued and is featured again, which is
    # better than a consumed entry that never went out. `consume` is idempotent.
    if fresh and pick.source in ("pin", "queue"):
        consume(engine, pick.slug)
    return record


def build_renditions(
    engine: Engine, settings: Settings, snapshot: Snapshot, week: IsoWeek
) -> list[Rendition]:
    """The issue in each other language its readers chose (`languages_in_use`), each through
    the same quality gates. An editor's subject and preheader are written in the newsletter's
    language and stay with its own rendition; the others take the term's (or the default)."""
    renditions = []
    for locale in sorted(languages_in_use(engine) - {settings.locale}):
        if locale not in available_locales():
            continue  # a catalogue since removed: those readers get the newsletter's own
        rendered = render_issue(snapshot, settings, locale=locale)
        problems = check_rendered(rendered)
        if problems:
            raise QualityError(f"issue {week} in {locale}", problems)
        renditions.append(
            Rendition(
                locale=locale,
                subject=rendered.subject,
                preheader=rendered.preheader,
                html=rendered.html,
                text=rendered.text,
                archive_html=rendered.archive_html,
            )
        )
    return renditions


def _all_links(rendered: RenderedIssue, renditions: Sequence[Rendition]) -> tuple[str, ...]:
    """The issue's tracked links: its own mail's in order, then any a rendition adds. A click
    token names an index here, so every rendition's links must be among them."""
    links = dict.fromkeys(tracked_links(rendered.html, rendered.text))
    for rendition in renditions:
        links.update(dict.fromkeys(tracked_links(rendition.html, rendition.text)))
    return tuple(links)


def _rendered_from(record: IssueRecord, settings: Settings) -> RenderedIssue:
    """What a stored issue rendered to. Mail and page are the stored strings (what went out);
    only the MJML, which is not stored, is rendered again from the frozen snapshot."""
    if not record.snapshot or record.html is None or record.text is None:
        raise ValueError(f"issue {record.week} has no content (status {record.status})")
    check_snapshot_version(record)
    again = render_issue(
        record.snapshot,
        settings,
        subject=record.subject_override,
        preheader=record.preheader_override,
    )
    return RenderedIssue(
        week=record.week,
        subject=record.subject or again.subject,
        preheader=record.preheader or again.preheader,
        mjml=again.mjml,
        html=record.html,
        text=record.text,
        archive_html=record.archive_html or again.archive_html,
    )


def preview_issue(
    engine: Engine,
    settings: Settings,
    glossary: Glossary,
    week: IsoWeek,
    *,
    now: datetime,
    news: Sequence[NewsItem] | None = None,
) -> tuple[RenderedIssue, list[str]]:
    """(the issue as it would be built, its quality-gate problems) — nothing is stored or
    consumed. A week that already has content shows that content. `news` as in build_issue."""
    existing = get_issue(engine, week)
    if existing is not None and existing.status in FEATURED_STATES and existing.snapshot:
        rendered = _rendered_from(existing, settings)
    else:
        pick, _fresh = _choose(engine, glossary, week)
        if news is None:
            news = fetch_news(settings, now)
        rendered = render_issue(
            make_snapshot(
                settings,
                glossary,
                pick,
                news,
                previous_issues(engine, week),
                last_week=last_issue_out(engine, week),
            ),
            settings,
            subject=existing.subject_override if existing else None,
            preheader=existing.preheader_override if existing else None,
        )
    return rendered, check_rendered(rendered)


def next_issue_week(engine: Engine, start: IsoWeek) -> IsoWeek:
    """The week of the next issue to go out: `start` unless its issue was sent, else the
    first later week without a sent issue (what an editor means by "the next one")."""
    sent = {r.week for r in list_issues(engine, statuses=["sent"])}
    week = start
    while week in sent:
        week += 1
    return week


# --------------------------------------------------------------------------- files

# Where a sample reader's token would be: no token at all (it has no dots, so every link page
# refuses it as "not valid"), plainly a sample to whoever reads the URL, and it keeps the built
# files free of the clock and the signing key, so builds stay byte-identical.
SAMPLE_TOKEN = "sample-reader-not-a-real-link"
SAMPLE_NAME = "Sample Reader"


def sample_markers(settings: Settings) -> dict[str, str]:
    """The per-reader markers filled in for the built files' sample reader (`write_build`)."""
    urls = Urls.from_settings(settings)
    return {
        PLACEHOLDERS["unsubscribe_url"]: urls.token_link("unsubscribe", SAMPLE_TOKEN),
        PLACEHOLDERS["preferences_url"]: urls.token_link("preferences", SAMPLE_TOKEN),
        PLACEHOLDERS["name"]: SAMPLE_NAME,
        PLACEHOLDERS["name_html"]: SAMPLE_NAME,
    }


def write_build(
    out_dir: Path,
    rendered: RenderedIssue,
    settings: Settings,
    feeds: Feeds | None = None,
    archive_index_html: str | None = None,
    pages: Mapping[IsoWeek, str] | None = None,
) -> list[Path]:
    """Write the issue's files under `out_dir`; return their paths.

    email.html, email.txt, email.mjml, issues/<week>/index.html, and when given the feeds
    (feed.xml, feed.atom, feed.json and the browser view's feed.xsl), issues/index.html and
    `pages`: every public issue's page by week (`core.archive.archive_pages`), which replace
    the issue's own stored one, so each links its neighbours as they are now. The mail is
    written as a sample reader gets it (`sample_markers`), so the file works when opened in a
    browser; the stored issue keeps its markers for the send, and email.mjml, the template's
    output, keeps them too. Each file is replaced atomically, so a web server reading the
    folder never sees half a file.
    """
    sample = sample_markers(settings)
    files: dict[str, str | bytes] = {
        "email.html": fill_markers(rendered.html, sample),
        "email.txt": fill_markers(rendered.text, sample),
        "email.mjml": rendered.mjml,
        f"issues/{rendered.week}/index.html": rendered.archive_html,
    }
    if feeds is not None:
        files["feed.xml"] = feeds.rss
        files["feed.atom"] = feeds.atom
        files["feed.json"] = feeds.json
        files["feed.xsl"] = feeds.stylesheet
    if archive_index_html is not None:
        files["issues/index.html"] = archive_index_html
    for week, page in (pages or {}).items():
        files[f"issues/{week}/index.html"] = page
    written: list[Path] = []
    for name, content in files.items():
        path = Path(out_dir) / name
        write_atomic(path, content if isinstance(content, bytes) else content.encode("utf-8"))
        written.append(path)
    return written


def build_site(
    engine: Engine,
    settings: Settings,
    glossary: Glossary,
    week: IsoWeek,
    out_dir: Path,
    *,
    now: datetime,
    rebuild: bool = False,
) -> BuildOutput:
    """`digest build`: build (or reuse) `week`'s issue and write it with the feeds and archive.

    The feeds list the sent issues plus this one, newest first; the archive index and pages
    every public issue (`store.archive.PUBLIC_STATES`: its send has started) plus this one, and
    every one of those pages is written again, so previous/next stay right. An issue
    whose send has not started is then checked as `digest send` will check it
    (`preflight.check_issue`): with any problem, `QualityError` lists them all and no files are
    written; the issue stays stored as built, and the send refuses it until they are fixed.
    A stored snapshot this digest cannot read raises `SnapshotVersionError`; a public one does
    so before anything is built.
    """
    public = {r.week: r for r in list_issues(engine, statuses=PUBLIC_STATES)}
    for other in public.values():
        if other.week != week:
            check_snapshot_version(other)
    record = build_issue(engine, settings, glossary, week, now=now, rebuild=rebuild)
    check_snapshot_version(record)  # reused as stored, unless `rebuild`
    if record.send_started_at is None:
        problems = check_issue(engine, settings, week, now=now)
        if problems:
            raise QualityError(
                f"issue {week} (stored as built; `digest send` refuses it)", problems
            )
    rendered = _rendered_from(record, settings)
    public[record.week] = record
    records = sorted(public.values(), key=lambda r: r.week, reverse=True)
    in_feed = [r for r in records if r.status == "sent" or r.week == week]
    files = write_build(
        out_dir,
        rendered,
        settings,
        feeds=render_feeds(settings, in_feed, now),
        archive_index_html=archive_index(settings, records),
        pages=archive_pages(settings, records),
    )
    files += write_glossary_site(out_dir, settings, glossary)
    return BuildOutput(record=record, rendered=rendered, files=files)
