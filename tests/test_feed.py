"""The feeds (RSS 2.0, Atom 1.0, JSON Feed 1.1): valid, escaped, newest first, reproducible."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import feedparser
import pytest

from digest.core.feed import Feeds, render_feed, render_feeds
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


# --------------------------------------------------------------------------- the three formats
#
# The W3C Feed Validation Service's code is not on PyPI (`pip download feedvalidator` finds
# nothing) and lxml is not installed, so validity is checked strictly by hand: feedparser reads
# each feed without bozo, and the rules that validator enforces are asserted one by one
# (required elements, RFC 822 / RFC 3339 dates, absolute URLs, guid isPermaLink, rel=self).

ATOM = "{http://www.w3.org/2005/Atom}"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
HOSTILE_TITLE = "Evil ]]> <script>alert(1)</script> \x0b\x1f naïve — 日本"


def absolute(url: str | None) -> bool:
    parts = urlsplit(url or "")
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def feeds_of(settings, some) -> Feeds:  # type: ignore[no-untyped-def]
    return render_feeds(settings, some, NOW)


def hostile(glossary, settings):  # type: ignore[no-untyped-def]
    [record] = records(glossary, settings, (48, "cafe"))
    assert record.snapshot is not None
    record.snapshot["term"]["title"] = HOSTILE_TITLE
    record.snapshot["term"]["summary"] = "Sum ]]> <b>x</b> & \x00 ünïcode"
    record.snapshot["term"]["category"] = "Cat <i>&</i> ]]>"
    return [record]


def test_rss_meets_the_validators_rules(glossary):
    settings = settings_for(logo_url="https://cdn.example.org/logo.png")
    xml = feeds_of(settings, records(glossary, settings, (47, "basis"), (48, "cafe"))).rss
    assert xml.splitlines()[1] == (
        '<?xml-stylesheet type="text/xsl" href="https://digest.example.org/feed.xsl"?>'
    )
    channel = ET.fromstring(xml.encode("utf-8")).find("channel")
    assert channel is not None
    assert absolute(channel.findtext("link"))
    assert channel.findtext("managingEditor") == "digest@example.com (AI Term of the Week)"
    assert channel.findtext("ttl") == "15"  # minutes, as Cache-Control's max-age=900
    categories = [c.text for c in channel.findall("category")]
    assert categories == sorted(set(categories)) and categories
    image = channel.find("image")
    assert image is not None
    # The validator wants the image's title and link to be the channel's.
    assert image.findtext("url") == "https://cdn.example.org/logo.png"
    assert image.findtext("title") == channel.findtext("title")
    assert image.findtext("link") == channel.findtext("link")
    for item in channel.findall("item"):
        assert absolute(item.findtext("link"))
        assert item.findtext("author") == "digest@example.com (AI Term of the Week)"
        assert item.findtext("category") in categories
    parsed = feedparser.parse(xml.encode("utf-8"))
    assert parsed.bozo == 0 and parsed.feed.image.href == "https://cdn.example.org/logo.png"


def test_atom_follows_rfc_4287(glossary):
    settings = settings_for(logo_url="https://cdn.example.org/logo.png")
    atom = feeds_of(settings, records(glossary, settings, (47, "basis"), (48, "cafe"))).atom
    feed = ET.fromstring(atom.encode("utf-8"))
    assert feed.tag == f"{ATOM}feed"
    for required in ("id", "title", "updated"):
        assert (feed.findtext(f"{ATOM}{required}") or "").strip(), required
    assert RFC3339.match(feed.findtext(f"{ATOM}updated") or "")
    links = {link.get("rel"): link.attrib for link in feed.findall(f"{ATOM}link")}
    assert links["self"] == {
        "href": "https://digest.example.org/feed.atom",
        "rel": "self",
        "type": "application/atom+xml",
    }
    assert absolute(links["alternate"]["href"])
    assert feed.findtext(f"{ATOM}author/{ATOM}name") == "AI Term of the Week"
    assert feed.findtext(f"{ATOM}logo") == "https://cdn.example.org/logo.png"
    entries = feed.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}id") for e in entries] == [
        "https://digest.example.org/issues/2026-W48",
        "https://digest.example.org/issues/2026-W47",
    ]
    for entry in entries:
        for required in ("id", "title", "updated", "published"):
            assert (entry.findtext(f"{ATOM}{required}") or "").strip(), required
        assert RFC3339.match(entry.findtext(f"{ATOM}updated") or "")
        assert absolute(entry.find(f"{ATOM}link").get("href"))  # type: ignore[union-attr]
        assert entry.find(f"{ATOM}content").get("type") == "html"  # type: ignore[union-attr]
    assert feed.findtext(f"{ATOM}updated") == max(e.findtext(f"{ATOM}updated") for e in entries)
    parsed = feedparser.parse(atom.encode("utf-8"))
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.entries[0].title == TRICKY_TITLE


def test_json_feed_follows_version_1_1(glossary):
    settings = settings_for(logo_url="https://cdn.example.org/logo.png")
    feed = json.loads(
        feeds_of(settings, records(glossary, settings, (47, "basis"), (48, "cafe"))).json
    )
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert isinstance(feed["title"], str) and feed["title"]
    assert feed["feed_url"] == "https://digest.example.org/feed.json"
    assert feed["home_page_url"] == "https://digest.example.org/issues/"
    assert feed["icon"] == "https://cdn.example.org/logo.png"
    assert feed["authors"] == [
        {"name": "AI Term of the Week", "url": "https://digest.example.org/"}
    ]
    assert [item["id"] for item in feed["items"]] == [
        "https://digest.example.org/issues/2026-W48",
        "https://digest.example.org/issues/2026-W47",
    ]
    for item in feed["items"]:
        assert isinstance(item["id"], str) and item["url"] == item["id"]
        assert isinstance(item["content_html"], str) and "<article" in item["content_html"]
        assert isinstance(item["summary"], str) and isinstance(item["tags"], list)
        assert datetime.fromisoformat(item["date_published"]).tzinfo is not None
        assert RFC3339.match(item["date_published"])
    assert feed["items"][0]["title"] == TRICKY_TITLE
    # Plain text, unlike RSS's <description>, which is HTML.
    assert feed["items"][0]["summary"] == "Summaries & <b>tags</b> stay text — ë."


def test_all_three_feeds_carry_the_same_items(glossary):
    settings = settings_for()
    feeds = feeds_of(
        settings, records(glossary, settings, (46, "cafe"), (47, "basis"), (48, "cafe"))
    )
    rss = [e.link for e in feedparser.parse(feeds.rss.encode()).entries]
    atom = [e.link for e in feedparser.parse(feeds.atom.encode()).entries]
    assert rss == atom == [item["url"] for item in json.loads(feeds.json)["items"]]
    assert len(rss) == 3


def test_no_item_repeats_its_title_in_its_content(glossary):
    settings = settings_for()
    feeds = feeds_of(settings, records(glossary, settings, (47, "basis"), (48, "cafe")))
    rss_content = [
        item.findtext("content:encoded", namespaces=NS) or ""
        for item in ET.fromstring(feeds.rss.encode()).iter("item")
    ]
    atom_content = [
        entry.findtext(f"{ATOM}content") or ""
        for entry in ET.fromstring(feeds.atom.encode()).iter(f"{ATOM}entry")
    ]
    json_content = [item["content_html"] for item in json.loads(feeds.json)["items"]]
    for contents in (rss_content, atom_content, json_content):
        assert len(contents) == 2
        for content in contents:
            assert "<article" in content and "<h1" not in content
            assert "Why it matters" in content


def test_the_archive_page_still_shows_the_title(glossary):
    from digest.core.render import render_issue

    settings = settings_for()
    [record] = records(glossary, settings, (48, "cafe"))
    assert record.snapshot is not None
    page = render_issue(record.snapshot, settings).archive_html
    assert page.count("<h1>") == 1 and "Café &lt;script&gt;" in page


def test_channel_image_only_when_a_logo_is_set(glossary):
    settings = settings_for()
    feeds = feeds_of(settings, records(glossary, settings, (48, "cafe")))
    assert ET.fromstring(feeds.rss.encode()).find("channel/image") is None
    assert ET.fromstring(feeds.atom.encode()).find(f"{ATOM}logo") is None
    assert "icon" not in json.loads(feeds.json)


def test_hostile_term_text_stays_escaped_and_valid_in_all_three(glossary):
    settings = settings_for()
    feeds = feeds_of(settings, hostile(glossary, settings))
    clean_title = "Evil ]]> <script>alert(1)</script>  naïve — 日本"
    for xml in (feeds.rss, feeds.atom):
        assert "<script>" not in xml and "]]>" not in xml
        assert "\x0b" not in xml and "\x00" not in xml
        parsed = feedparser.parse(xml.encode("utf-8"))
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        assert parsed.entries[0].title == clean_title
    rss_item = ET.fromstring(feeds.rss.encode()).find("channel/item")
    assert rss_item is not None and rss_item.findtext("category") == "Cat <i>&</i> ]]>"
    content = rss_item.findtext("content:encoded", namespaces=NS) or ""
    assert "<script>" not in content and "&lt;script&gt;" in content
    item = json.loads(feeds.json)["items"][0]
    assert item["title"] == clean_title
    assert item["summary"] == "Sum ]]> <b>x</b> &  ünïcode"
    assert item["tags"] == ["Cat <i>&</i> ]]>"]
    assert "<script>" not in item["content_html"]
    assert "日本".encode() in feeds.json  # UTF-8 as it is, not \\u escapes


def test_the_stylesheet_is_xslt_that_reads_the_feed():
    xsl = render_feeds(settings_for(), [], NOW).stylesheet
    root = ET.fromstring(xsl.encode("utf-8"))
    assert root.tag == "{http://www.w3.org/1999/XSL/Transform}stylesheet"
    assert "Copy this URL into your feed reader" in xsl
    assert 'href="https://digest.example.org/"' in xsl  # subscribe by mail
    assert xsl.count("<script>") == 1  # allowed by hash (digest.web.feeds)
