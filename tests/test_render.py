"""Rendering an issue: escaping, plain text, subject lines, placeholders, links and MJML errors."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from digest.config import Settings
from digest.core.archive import archive_index, archive_page
from digest.core.mails import PLACEHOLDERS
from digest.core.render import (
    RenderError,
    markdown_to_text,
    render_issue,
    subject_line,
)
from digest.core.selection import Pick
from digest.model.glossary import Glossary
from digest.model.issue import IssueRecord
from digest.model.weeks import IsoWeek, parse_week
from digest.packaged import default_theme_dir
from digest.store.terms import load_glossary
from tests.conftest import term_text

WEEK = IsoWeek(2026, 48)
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)

TRICKY_TITLE = 'Café <script>alert("t")</script> & Co'
TRICKY_BODY = textwrap.dedent(
    """\
    ## Why it matters

    It matters: <script>alert(1)</script> & "quotes" 'single' — één ë.
    See [the paper](https://example.org/paper?a=1&b=2) for more.

    ## How it works

    1. First a long step that explains things at length, so that it surely needs wrapping.
    2. Then a second one.

    ```
    template = "{{ name }}" if a < b && c > d
    ```

    ## Example

    Use it with https://example.org/a/very/long/url/that/must/never/be/broken/across/lines/at/all.
    """
)


def settings_for(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "base_url": "https://digest.example.org",
        "site_url": "https://glossary.example.org",
        "language": "en",
        "newsletter_name": "AI Term of the Week",
    }
    values.update(overrides)
    return Settings(**values)


def tricky_glossary(make_terms: Callable[[dict[str, str]], Path]) -> Glossary:
    """A featured term full of markup, ampersands, quotes and Dutch; and a plain neighbour."""
    folder = make_terms(
        {
            "cafe": term_text(
                json.dumps(TRICKY_TITLE, ensure_ascii=False),
                related=["basis"],
                summary=json.dumps("Summaries & <b>tags</b> stay text — ë.", ensure_ascii=False),
                definition=json.dumps(
                    "A café term: <i>not italic</i> & 'quoted' — één.", ensure_ascii=False
                ),
                aliases='[FM, {name: basismodel, lang: nl}, {name: "ëën model", lang: nl}]',
                body=TRICKY_BODY,
            ),
            "basis": term_text("Basis & Base", related=["cafe"], summary="A <plain> neighbour."),
        }
    )
    return load_glossary(folder)


def snapshot_of(
    glossary: Glossary, slug: str, settings: Settings, week: IsoWeek = WEEK, news: Any = ()
) -> dict[str, Any]:
    from digest.campaign.build import make_snapshot

    return make_snapshot(settings, glossary, Pick(week, slug, "rotation"), news)


def record_of(snap: dict[str, Any], **changes: Any) -> IssueRecord:
    """An IssueRecord as the database would return it (for the pure archive/feed functions)."""
    base = IssueRecord(
        id=1,
        week=parse_week(snap["week"]),
        featured_slug=snap["term"]["slug"],
        related_slugs=tuple(r["slug"] for r in snap["related"]),
        pick_source="rotation",
        status="sent",
        status_reason=None,
        subject=None,
        preheader=None,
        html=None,
        text=None,
        archive_html=None,
        snapshot=snap,
        claimed_by=None,
        claimed_until=None,
        created_at=NOW,
        built_at=NOW,
        send_started_at=None,
        sent_at=None,
        updated_at=NOW,
    )
    return replace(base, **changes)


class _Read(HTMLParser):
    """What a browser would make of a page: its elements, and its visible text decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read_html(html: str) -> _Read:
    parser = _Read()
    parser.feed(html)
    parser.close()
    return parser


@pytest.fixture
def tricky(make_terms):
    settings = settings_for()
    glossary = tricky_glossary(make_terms)
    snapshot = snapshot_of(glossary, "cafe", settings)
    return settings, snapshot, render_issue(snapshot, settings)


# --------------------------------------------------------------------------- escaping


def test_markup_in_term_content_is_escaped_in_email_and_archive(tricky):
    _settings, _snapshot, rendered = tricky
    for html in (rendered.html, rendered.archive_html):
        page = read_html(html)
        assert "script" not in page.tags and "i" not in page.tags and "b" not in page.tags
        text = " ".join(" ".join(page.text).split())
        assert TRICKY_TITLE in text
        assert "<script>alert(1)</script> & \"quotes\" 'single' — één ë." in text
        assert "A café term: <i>not italic</i> & 'quoted' — één." in text


def test_non_ascii_survives_intact_everywhere(tricky):
    _settings, _snapshot, rendered = tricky
    for part in (rendered.html, rendered.archive_html, rendered.text):
        assert "één ë" in part
        assert "ëën model" in part
        assert "Café" in part


def test_aliases_carry_their_language(tricky):
    _settings, _snapshot, rendered = tricky
    assert '<span lang="nl">basismodel</span>' in rendered.html
    assert '<span lang="nl">basismodel</span>' in rendered.archive_html


def test_plain_text_shows_content_as_written_not_escaped(tricky):
    _settings, _snapshot, rendered = tricky
    text = rendered.text
    assert TRICKY_TITLE in text
    assert "<script>alert(1)</script> & \"quotes\" 'single'" in text
    assert "&amp;" not in text and "&lt;" not in text and "&#" not in text


def test_link_query_strings_are_escaped_in_html_and_plain_in_text(tricky):
    _settings, _snapshot, rendered = tricky
    assert 'href="https://example.org/paper?a=1&amp;b=2"' in rendered.html
    assert "the paper <https://example.org/paper?a=1&b=2>" in rendered.text


# --------------------------------------------------------------------------- plain text


def test_plain_text_is_wrapped_at_72_columns_without_breaking_urls(tricky):
    _settings, _snapshot, rendered = tricky
    long_url = "https://example.org/a/very/long/url/that/must/never/be/broken/across/lines/at/all."
    assert long_url in rendered.text.split()
    for line in rendered.text.splitlines():
        if len(line) > 72:
            # Only an unbreakable word (a URL) may stick out.
            assert len(line.split()) <= 2 and "://" in line, line


def test_plain_text_sections_are_underlined(tricky):
    _settings, _snapshot, rendered = tricky
    title_line = f"{TRICKY_TITLE}\n{'=' * len(TRICKY_TITLE)}\n"
    assert title_line in rendered.text
    for title in ("Why it matters", "How it works", "Example", "Sources", "Related concepts"):
        assert f"\n{title}\n{'-' * len(title)}\n" in rendered.text


def test_plain_text_lists_links_to_related_terms_and_sources(tricky):
    settings, _snapshot, rendered = tricky
    assert f"- Basis & Base: A <plain> neighbour.\n  {settings.site_url}/basis" in rendered.text
    assert "- A source\n  https://example.org/source" in rendered.text
    assert f"View in your browser: {settings.base_url}/issues/2026-W48" in rendered.text


def test_markdown_to_text_lists_code_and_links():
    text = markdown_to_text(
        "Intro with [a link](https://example.org/x) and `code`.\n\n"
        "1. one that is long enough to need wrapping when the width is only thirty\n"
        "2. two\n   - nested\n\n"
        "```\nkeep   <this>  as is\n```\n\n"
        "> quoted\n",
        width=30,
    )
    assert text.splitlines() == [
        "Intro with a link",
        "<https://example.org/x> and",
        "code.",
        "",
        "1. one that is long enough to",
        "   need wrapping when the",
        "   width is only thirty",
        "2. two",
        "   - nested",
        "",
        "    keep   <this>  as is",
        "",
        "> quoted",
    ]


# --------------------------------------------------------------------------- subject, preheader


def test_default_subject_is_the_title_and_the_newsletter_name():
    assert subject_line("Foundation Model", "AI Term of the Week", 70) == (
        "Foundation Model — AI Term of the Week"
    )


def test_a_long_title_stands_alone_in_the_subject_never_cut():
    title = "Reinforcement Learning from Human Feedback with Proximal Policy Optimisation"
    assert subject_line(title, "AI Term of the Week", 70) == title
    assert not subject_line(title, "AI Term of the Week", 70).endswith("…")
    assert subject_line("RAG  \n  basics", "AI  Term", 70) == "RAG basics — AI Term"


def test_subject_and_preheader_come_from_the_term(tricky):
    _settings, snapshot, rendered = tricky
    assert rendered.subject == f"{TRICKY_TITLE} — AI Term of the Week"
    assert rendered.preheader == snapshot["term"]["summary"]
    assert "Summaries &amp; &lt;b&gt;tags&lt;/b&gt; stay text" in rendered.html  # the preview


# --------------------------------------------------------------------------- links and markers


def test_mail_leaves_per_subscriber_links_as_placeholders(tricky):
    _settings, _snapshot, rendered = tricky
    assert f'href="{PLACEHOLDERS["unsubscribe_url"]}"' in rendered.html
    assert f'href="{PLACEHOLDERS["preferences_url"]}"' in rendered.html
    assert f"Unsubscribe: {PLACEHOLDERS['unsubscribe_url']}" in rendered.text
    assert f"Preferences: {PLACEHOLDERS['preferences_url']}" in rendered.text


def test_archive_page_has_no_per_subscriber_links_but_a_subscribe_link(tricky):
    settings, _snapshot, rendered = tricky
    for marker in PLACEHOLDERS.values():
        assert marker not in rendered.archive_html
    assert f'<a href="{settings.base_url}/">subscribe to' in rendered.archive_html


def test_terms_link_to_the_glossary_site_and_issues_to_the_archive(tricky):
    settings, _snapshot, rendered = tricky
    assert f'href="{settings.site_url}/cafe"' in rendered.html
    assert f'href="{settings.site_url}/basis"' in rendered.html
    assert f'href="{settings.base_url}/issues/2026-W48"' in rendered.html  # view in browser
    assert f'<link rel="canonical" href="{settings.base_url}/issues/2026-W48">' in (
        rendered.archive_html
    )


def test_mail_language_comes_from_settings(make_terms):
    settings = settings_for(language="nl")
    snapshot = snapshot_of(tricky_glossary(make_terms), "cafe", settings)
    rendered = render_issue(snapshot, settings)
    assert rendered.html.startswith('<!doctype html><html lang="nl"')
    assert rendered.archive_html.startswith('<!doctype html>\n<html lang="nl">')


def test_mail_makes_no_third_party_font_requests(tricky):
    _settings, _snapshot, rendered = tricky
    assert "fonts.googleapis.com" not in rendered.html


def test_news_section_appears_only_with_news(make_terms):
    settings = settings_for()
    glossary = tricky_glossary(make_terms)
    news = [{"title": "Big <news>", "link": "https://news.example.org/1?a&b", "source": "Wire"}]
    without = render_issue(snapshot_of(glossary, "basis", settings), settings)
    with_news = render_issue(snapshot_of(glossary, "basis", settings, news=news), settings)
    assert "In the news" not in without.html and "In the news" not in without.text
    # The link carries its colour inline (some clients drop <head> styles).
    assert (
        '<a href="https://news.example.org/1?a&amp;b" style="color:#1d4ed8;">Big &lt;news&gt;</a>'
        in with_news.html
    )
    assert "- Big <news> (Wire)\n  https://news.example.org/1?a&b" in with_news.text


# --------------------------------------------------------------------------- errors


def test_broken_mjml_is_reported_with_the_template_name(tmp_path, make_terms):
    templates = tmp_path / "templates"
    shutil.copytree(default_theme_dir(), templates)
    email = templates / "email.mjml.j2"
    email.write_text(email.read_text().replace("</mj-text>", "", 1))
    settings = settings_for(templates_dir=templates)
    snapshot = snapshot_of(tricky_glossary(make_terms), "cafe", settings)
    with pytest.raises(RenderError, match=r"^email\.mjml\.j2: invalid MJML"):
        render_issue(snapshot, settings)


def test_template_typo_is_reported_with_template_and_line(tmp_path, make_terms):
    templates = tmp_path / "templates"
    shutil.copytree(default_theme_dir(), templates)
    text = templates / "email.txt.j2"
    text.write_text("{{ newsletter_name }}\n{{ term.no_such_field }}\n")
    settings = settings_for(templates_dir=templates)
    snapshot = snapshot_of(tricky_glossary(make_terms), "cafe", settings)
    with pytest.raises(RenderError, match=r"^email\.txt\.j2:2: .*no_such_field"):
        render_issue(snapshot, settings)


# --------------------------------------------------------------------------- archive


def test_archive_page_is_rendered_from_the_frozen_snapshot_not_the_stored_page(tricky):
    # The page shows what its build could not know (its neighbours, the quiz answer), so it is
    # rendered from the snapshot each time; the stored page is the build's, for its checks.
    settings, snapshot, rendered = tricky
    record = record_of(snapshot, archive_html="<!doctype html><p>as stored</p>")
    page = archive_page(settings, record)
    assert "as stored" not in page
    assert page.startswith('<!doctype html>\n<html lang="en">')
    for part in (
        "A café term: &lt;i&gt;not italic&lt;/i&gt;",
        "Why it matters",
        "Basis &amp; Base",
    ):
        assert part in page and part in rendered.archive_html


def test_archive_page_of_an_issue_without_content_is_an_error(tricky):
    settings, snapshot, _rendered = tricky
    with pytest.raises(RenderError, match="2026-W48 has no content"):
        archive_page(settings, record_of(snapshot, snapshot=None, status="planned"))


def test_archive_index_lists_issues_in_the_given_order(make_terms):
    settings = settings_for()
    glossary = tricky_glossary(make_terms)
    newer = record_of(snapshot_of(glossary, "cafe", settings, week=IsoWeek(2026, 48)))
    older = record_of(snapshot_of(glossary, "basis", settings, week=IsoWeek(2026, 47)))
    html = archive_index(settings, [newer, older])
    assert html.index("issues/2026-W48") < html.index("issues/2026-W47")
    assert "<strong>Basis &amp; Base</strong></a> — A &lt;plain&gt; neighbour." in html
    # Calendar dates, the first day the schedule ("mon 09:00") sends in each week.
    assert '<time datetime="2026-11-16">November 16, 2026</time>' in html
    assert '<time datetime="2026-11-23">November 23, 2026</time>' in html
    for marker in PLACEHOLDERS.values():
        assert marker not in html


def test_empty_archive_index_says_so():
    assert "No issues yet." in archive_index(settings_for(), [])
