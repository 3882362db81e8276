"""The RSS 2.0 feed: valid for feedparser and the spec, escaped, newest first, reproducible."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import feedparser
import pytest

from digest.core.feed import render_feed
from digest.model.weeks import IsoWeek
from tests.test_render import (
    NOW,
    TRICKY_TITLE,
    record_of,
    settings_for,
    snapshot_of,
    tricky_glossary,
)

NS = {"atom": "http://www.w3.org/2005/Atom", "content": "http://purl.org/rss/1.0/modules/content/"}
SENT_W47 = datetime(2026, 11, 16, 9, 5, tzinfo=UTC)


@pytest.fixture
def glossary(make_terms):
    return tricky_glossary(make_terms)


def records(glossary, settings, *weeks_and_slugs, sent_at=None):
    return [
        record_of(snapshot_of(glossary, slug, settings, week=IsoWeek(2026, w)), sent_at=sent_at)
        for w, slug in weeks_and_slugs
    ]


def test_feed_is_valid_for_feedparser(glossary):
    settings = settings_for()
    xml = render_feed(settings, records(glossary, settings, (47, "basis"), (48, "cafe")), NOW)
    parsed = feedparser.parse(xml.encode("utf-8"))
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "rss20"
    assert parsed.feed.title == "AI Term of the Week"
    assert parsed.feed.link == "https://digest.example.org/issues/"
    assert parsed.feed.language == "en"
    assert [e.link for e in parsed.entries] == [
        "https://digest.example.org/issues/2026-W48",
        "https://digest.example.org/issues/2026-W47",
    ]


def test_feed_follows_the_rss_2_spec(glossary):
    settings = settings_for(language="nl")
    xml = render_feed(settings, records(glossary, settings, (47, "basis"), (48, "cafe")), NOW)
    rss = ET.fromstring(xml.encode("utf-8"))
    assert rss.tag == "rss" and rss.get("version") == "2.0"
    channel = rss.find("channel")
    assert channel is not None
    for required in ("title", "link", "description"):
        assert (channel.findtext(required) or "").strip()
    assert channel.findtext("language") == "nl"
    self_link = channel.find("atom:link", NS)
    assert self_link is not None
    assert self_link.attrib == {
        "href": "https://digest.example.org/feed.xml",
        "rel": "self",
        "type": "application/rss+xml",
    }
    parsedate_to_datetime(channel.findtext("lastBuildDate") or "")
    for item in channel.findall("item"):
        guid = item.find("guid")
        assert guid is not None and guid.get("isPermaLink") == "true"
        assert guid.text == item.findtext("link")
        published = parsedate_to_datetime(item.findtext("pubDate") or "")
        assert published.tzinfo is not None
        assert (item.findtext("description") or "").strip()
        assert "<article" in (item.findtext("content:encoded", namespaces=NS) or "")


def test_items_carry_title_summary_and_the_full_issue(glossary):
    settings = settings_for()
    xml = render_feed(settings, records(glossary, settings, (48, "cafe")), NOW)
    [entry] = feedparser.parse(xml.encode("utf-8")).entries
    assert entry.title == TRICKY_TITLE
    assert entry.summary == "Summaries &amp; &lt;b&gt;tags&lt;/b&gt; stay text — ë."
    content = entry.content[0].value
    assert "één ë" in content and "Why it matters" in content
    assert "Related concepts" in content


def test_content_is_escaped_once_and_carries_no_markup_from_terms(glossary):
    settings = settings_for()
    xml = render_feed(settings, records(glossary, settings, (48, "cafe")), NOW)
    item = ET.fromstring(xml.encode("utf-8")).find("channel/item")
    assert item is not None
    assert item.findtext("title") == TRICKY_TITLE
    # <description> is HTML to readers: the summary is HTML-escaped text inside it.
    assert item.findtext("description") == "Summaries &amp; &lt;b&gt;tags&lt;/b&gt; stay text — ë."
    content = item.findtext("content:encoded", namespaces=NS) or ""
    # Inside content:encoded is the article's HTML, where the term's markup is still text.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content
    assert "<script>" not in content


def test_sent_issues_are_dated_when_sent_and_unsent_ones_by_their_week(glossary):
    settings = settings_for(timezone="Europe/Amsterdam")
    sent = records(glossary, settings, (47, "basis"), sent_at=SENT_W47)
    built = records(glossary, settings, (48, "cafe"))
    parsed = feedparser.parse(render_feed(settings, sent + built, NOW).encode("utf-8"))
    published = [datetime(*e.published_parsed[:6], tzinfo=UTC) for e in parsed.entries]
    # Monday of 2026-W48 at midnight in Amsterdam is 23:00 UTC on the Sunday before.
    assert published == [datetime(2026, 11, 22, 23, 0, tzinfo=UTC), SENT_W47]
    assert parsed.feed.updated == "Sun, 22 Nov 2026 23:00:00 GMT"


def test_feed_holds_the_newest_feed_items_issues(glossary):
    settings = settings_for(feed_items=2)
    some = records(glossary, settings, (45, "basis"), (47, "basis"), (46, "cafe"), (48, "cafe"))
    parsed = feedparser.parse(render_feed(settings, some, NOW).encode("utf-8"))
    assert [e.link.rsplit("/", 1)[1] for e in parsed.entries] == ["2026-W48", "2026-W47"]


def test_empty_feed_is_valid_and_built_now():
    parsed = feedparser.parse(render_feed(settings_for(), [], NOW).encode("utf-8"))
    assert parsed.bozo == 0
    assert parsed.entries == []
    assert parsed.feed.updated == "Mon, 23 Nov 2026 08:00:00 GMT"


def test_feed_does_not_depend_on_the_clock_when_it_has_items(glossary):
    settings = settings_for()
    some = records(glossary, settings, (47, "basis"), (48, "cafe"))
    later = datetime(2027, 1, 1, tzinfo=UTC)
    assert render_feed(settings, some, NOW) == render_feed(settings, some, later)


def test_characters_xml_forbids_are_dropped_not_fatal(glossary):
    settings = settings_for()
    [record] = records(glossary, settings, (48, "cafe"))
    assert record.snapshot is not None
    record.snapshot["term"]["summary"] = "form\x0cfeed and nul\x00 byte"
    xml = render_feed(settings, [record], NOW)
    assert ET.fromstring(xml.encode("utf-8")).findtext("channel/item/description") == (
        "formfeed and nul byte"
    )
    assert feedparser.parse(xml.encode("utf-8")).bozo == 0


def test_issues_without_content_are_left_out(glossary):
    settings = settings_for()
    [record] = records(glossary, settings, (48, "cafe"))
    empty = record_of(record.snapshot, snapshot=None, status="planned", week=IsoWeek(2026, 49))
    parsed = feedparser.parse(render_feed(settings, [record, empty], NOW).encode("utf-8"))
    assert [e.link.rsplit("/", 1)[1] for e in parsed.entries] == ["2026-W48"]
