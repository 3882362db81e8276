"""digest.core.feed_checks: the validator's rules for the RSS, Atom and JSON feeds, each fault
caught with a message that names it; digest's own feeds pass; `digest check` reports a bad one."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from digest.campaign.build import build_issue
from digest.cli import app
from digest.core.feed import Feeds, render_feeds
from digest.core.feed_checks import check_atom, check_feeds, check_json_feed, check_rss
from digest.model.glossary import Glossary
from digest.model.weeks import IsoWeek
from tests.sending import seed_subscribers
from tests.test_feed import records
from tests.test_render import NOW, settings_for, tricky_glossary

runner = CliRunner()


@pytest.fixture
def feeds(make_terms) -> Feeds:  # type: ignore[no-untyped-def]
    glossary = tricky_glossary(make_terms)
    settings = settings_for(logo_url="https://cdn.example.org/logo.png")
    return render_feeds(settings, records(glossary, settings, (47, "basis"), (48, "cafe")), NOW)


def test_digests_own_feeds_are_valid(feeds: Feeds, make_terms) -> None:  # type: ignore[no-untyped-def]
    assert check_feeds(feeds) == []
    settings = settings_for(language="nl")
    empty = render_feeds(settings, [], NOW)
    assert check_feeds(empty) == []
    one = records(tricky_glossary(make_terms), settings, (48, "cafe"))
    assert check_feeds(render_feeds(settings, one, NOW)) == []


# --------------------------------------------------------------------------- RSS


def test_rss_faults_are_each_named(feeds: Feeds) -> None:
    rss = (
        feeds.rss.replace("<language>en</language>", "<language>english</language>")
        .replace("<ttl>15</ttl>", "<ttl>a quarter</ttl>")
        .replace('rel="self"', 'rel="me"')
        .replace(
            "<managingEditor>digest@example.com (AI Term of the Week)</managingEditor>",
            "<managingEditor>AI Term of the Week</managingEditor>",
        )
        .replace(
            "<link>https://digest.example.org/issues/2026-W48</link>", "<link>/issues/x</link>"
        )
        .replace("<pubDate>", "<pubDate>yesterday ", 1)
    )

    problems = check_rss(rss)

    assert "feed: <channel>: <language> 'english' is not a language code" in problems
    assert "feed: <channel>: <ttl> 'a quarter' is not a whole number of minutes" in problems
    assert 'feed: <channel>: no <atom:link rel="self"> giving the feed\'s own address' in problems
    assert (
        "feed: <channel>: <managingEditor> 'AI Term of the Week' is not an address with an "
        "optional (name)"
    ) in problems
    assert "feed: item 1: <link> '/issues/x' is not an absolute http(s) URL" in problems
    assert any(p.startswith("feed: item 1: <pubDate> 'yesterday ") for p in problems)


def test_rss_needs_title_link_and_description_and_an_image_like_the_channel() -> None:
    rss = (
        "<?xml version='1.0'?><rss version='2.0'><channel><title>T</title>"
        "<link>https://d.example.org/</link>"
        "<image><url>https://d.example.org/logo.png</url><title>Other</title>"
        "<link>https://d.example.org/</link></image>"
        "<item><guid isPermaLink='true'>not-a-url</guid></item></channel></rss>"
    )

    problems = check_rss(rss)

    assert "feed: <channel>: no <description>" in problems
    assert "feed: <channel>: <image><title> differs from the channel's <title>" in problems
    assert "feed: item 1: has neither <title> nor <description>" in problems
    assert (
        "feed: item 1: <guid> (a permalink) 'not-a-url' is not an absolute http(s) URL"
    ) in problems


def test_rss_that_is_not_rss_says_so() -> None:
    assert check_rss("<?xml version='1.0'?><rss version='0.91'><channel/></rss>")[-1] == (
        'feed: not an RSS 2.0 document (<rss version="2.0"><channel>)'
    )


# --------------------------------------------------------------------------- Atom


def test_atom_faults_are_each_named(feeds: Feeds) -> None:
    first = feeds.atom.index("<entry>")
    head, entries = feeds.atom[:first], feeds.atom[first:]
    second_id = "<id>https://digest.example.org/issues/2026-W47</id>"
    entries = entries.replace(second_id, "<id>https://digest.example.org/issues/2026-W48</id>")
    head = head.replace('rel="self"', 'rel="via"')
    start, end = head.index("<author>"), head.index("</author>") + len("</author>")
    head = head[:start] + head[end:]
    entries = entries.replace("<updated>", "<updated>2026-11-23 ", 1)
    entries = entries.replace("<published>", "<published>Monday ", 1)

    problems = check_atom(head + entries)

    assert '<feed>: no <link rel="self"> giving the feed\'s own address' in problems
    assert "<feed>: no <author>, and not every entry has one" in problems
    assert "entry 2: id https://digest.example.org/issues/2026-W48 appears more than once" in (
        problems
    )
    assert any(p.startswith("entry 1: <updated> '2026-11-23 ") for p in problems), problems
    assert any(p.startswith("entry 1: <published> 'Monday ") for p in problems), problems


def test_atom_entries_need_id_title_updated_and_something_to_show() -> None:
    atom = (
        "<?xml version='1.0'?><feed xmlns='http://www.w3.org/2005/Atom' xml:lang='en'>"
        "<id>urn:x</id><title>T</title><updated>2026-11-23T00:00:00Z</updated>"
        "<author><name>A</name></author><link rel='self' href='https://d.example.org/a'/>"
        "<entry><id>relative</id><content type='markdown'>x</content></entry><entry/></feed>"
    )

    problems = check_atom(atom)

    assert "entry 1: no <title>" in problems and "entry 1: no <updated>" in problems
    assert "entry 1: <id> 'relative' is not an absolute IRI" in problems
    assert "entry 1: <content type='markdown'> is not text, html or xhtml" in problems
    assert "entry 2: no <id>" in problems
    assert 'entry 2: has neither <content> nor <link rel="alternate">' in problems


# --------------------------------------------------------------------------- JSON Feed


def test_json_feed_faults_are_each_named(feeds: Feeds) -> None:
    feed = json.loads(feeds.json)
    feed["version"] = "https://jsonfeed.org/version/1"
    feed["home_page_url"] = "/issues/"
    feed["items"][1]["id"] = feed["items"][0]["id"]
    del feed["items"][0]["content_html"]
    feed["items"][0]["date_published"] = "2026-11-23"
    feed["items"][0]["tags"] = "Fundamentals"

    problems = check_json_feed(json.dumps(feed))

    assert problems == [
        "version is 'https://jsonfeed.org/version/1', not 'https://jsonfeed.org/version/1.1'",
        "home_page_url '/issues/' is not an absolute http(s) URL",
        "item 1: neither content_html nor content_text",
        "item 1: date_published '2026-11-23' is not an RFC 3339 date-time",
        "item 1: tags is not a list of strings",
        "item 2: id https://digest.example.org/issues/2026-W48 appears more than once",
    ]


def test_json_that_is_not_a_feed_says_so() -> None:
    assert check_json_feed(b"{")[0].startswith("not JSON: ")
    assert check_json_feed(b"[]") == ["not a JSON object"]
    assert check_json_feed(json.dumps({"version": "https://jsonfeed.org/version/1.1"})) == [
        "no title",
        "items is not a list",
    ]


def test_each_feed_is_named_in_the_combined_check(feeds: Feeds) -> None:
    broken = Feeds(
        rss=feeds.rss.replace("<language>en</language>", "<language>zz</language>"),
        atom=feeds.atom.replace('xml:lang="en"', 'xml:lang="zz"'),
        json=feeds.json.replace(b'"language":"en"', b'"language":"zz"'),
        stylesheet=feeds.stylesheet,
    )
    assert check_feeds(broken) == [
        "feed: <channel>: <language> 'zz' is not a language code",
        "atom feed: <feed xml:lang> 'zz' is not a language code",
        "json feed: language 'zz' is not a language code",
    ]


# --------------------------------------------------------------------------- digest check


def test_digest_check_reports_an_invalid_feed(
    engine: Engine,
    settings_env: dict[str, str],
    starter_glossary: Glossary,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No locale of digest's catalogues writes a bad tag, so the tag the settings derive is made
    # one: the check must judge the feed as written, whatever produced it.
    import digest.config
    from digest.config import get_settings

    monkeypatch.setattr(digest.config, "language_tag", lambda _locale: "zz")
    get_settings.cache_clear()
    seed_subscribers(engine, 1)
    week = IsoWeek(2026, 48)
    build_issue(engine, get_settings(), starter_glossary, week, now=NOW, news=[])

    result = runner.invoke(app, ["check", "--week", str(week)])

    assert result.exit_code == 1
    assert "- feed: <channel>: <language> 'zz' is not a language code" in result.output
    assert "- atom feed: <feed xml:lang> 'zz' is not a language code" in result.output
    assert "- json feed: language 'zz' is not a language code" in result.output
