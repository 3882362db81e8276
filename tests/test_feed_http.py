"""The feeds over HTTP: conditional GETs (ETag, Last-Modified, 304), HEAD, Cache-Control, the
autodiscovery tags on every page, and the RSS feed shown as a page by headless Chromium's XSLT.

Against the real app on both database backends; the browser test serves it under uvicorn.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import feedparser
import pytest
from playwright.sync_api import ConsoleMessage, sync_playwright

from digest.campaign.build import build_issue
from digest.config import get_settings
from digest.core.tokens import make_token
from digest.model.weeks import IsoWeek
from digest.store.issues import transition
from digest.store.subscribers import add_confirmed
from tests.browser import CHROMIUM, CHROMIUM_ARGS, serving

FEEDS = {
    "/feed.xml": "application/rss+xml; charset=utf-8",
    "/feed.atom": "application/atom+xml; charset=utf-8",
    "/feed.json": "application/feed+json; charset=utf-8",
}
SENT_W18 = datetime(2026, 5, 4, 9, 0, 7, 250_000, tzinfo=UTC)
SENT_W19 = SENT_W18 + timedelta(weeks=1)
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def send(engine, settings, glossary, week: IsoWeek, at: datetime) -> None:  # type: ignore[no-untyped-def]
    build_issue(engine, settings, glossary, week, now=at - timedelta(days=1), news=[])
    transition(engine, week, "sending", now=at)
    transition(engine, week, "sent", now=at)


@pytest.fixture
def one_sent(engine, settings, starter_glossary):  # type: ignore[no-untyped-def]
    send(engine, settings, starter_glossary, IsoWeek(2026, 18), SENT_W18)


# --------------------------------------------------------------------------- caching


@pytest.mark.parametrize("path", FEEDS)
def test_each_feed_is_cacheable_with_validators(client, one_sent, path):
    answer = client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == FEEDS[path]
    assert answer.headers["cache-control"] == "public, max-age=900"
    etag = answer.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    # The newest issue's send, to the second: not the clock.
    assert answer.headers["last-modified"] == "Mon, 04 May 2026 09:00:07 GMT"
    again = client.get(path)
    assert again.headers["etag"] == etag and again.content == answer.content


@pytest.mark.parametrize("path", FEEDS)
def test_if_none_match_answers_304_without_a_body(client, one_sent, path):
    etag = client.get(path).headers["etag"]
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        answer = client.get(path, headers={"If-None-Match": sent})
        assert answer.status_code == 304, sent
        assert answer.content == b""
        assert answer.headers["etag"] == etag
        assert answer.headers["cache-control"] == "public, max-age=900"
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize("path", FEEDS)
def test_if_modified_since_answers_304_unless_older(client, one_sent, path):
    last_modified = client.get(path).headers["last-modified"]
    later = format_datetime(SENT_W18 + timedelta(hours=1), usegmt=True)
    earlier = format_datetime(SENT_W18 - timedelta(seconds=1), usegmt=True)
    for since in (last_modified, later):
        answer = client.get(path, headers={"If-Modified-Since": since})
        assert answer.status_code == 304 and answer.content == b"", since
    assert client.get(path, headers={"If-Modified-Since": earlier}).status_code == 200
    # If-None-Match decides when both are sent (RFC 9110 13.2.2).
    both = {"If-Modified-Since": later, "If-None-Match": '"stale"'}
    assert client.get(path, headers=both).status_code == 200


@pytest.mark.parametrize("path", FEEDS)
def test_a_new_issue_gives_a_new_etag_and_a_200(
    client, engine, settings, starter_glossary, one_sent, path
):
    etag = client.get(path).headers["etag"]
    send(engine, settings, starter_glossary, IsoWeek(2026, 19), SENT_W19)
    answer = client.get(path, headers={"If-None-Match": etag})
    assert answer.status_code == 200
    assert answer.headers["etag"] != etag
    assert answer.headers["last-modified"] == format_datetime(
        SENT_W19.replace(microsecond=0), usegmt=True
    )
    assert b"2026-W19" in answer.content


@pytest.mark.parametrize("path", [*FEEDS, "/feed.xsl"])
def test_head_answers_200_with_the_same_headers_and_no_body(client, one_sent, path):
    get, head = client.get(path), client.head(path)
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "cache-control", "content-type", "content-length"):
        assert head.headers.get(name) == get.headers.get(name), name
    if path != "/feed.xsl":
        assert head.headers["last-modified"] == get.headers["last-modified"]


def test_an_empty_feed_has_an_etag_but_no_last_modified(client):
    answer = client.get("/feed.xml")
    assert answer.status_code == 200 and "last-modified" not in answer.headers
    again = client.get("/feed.xml", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304


def test_the_stylesheet_is_served_as_xsl(client):
    answer = client.get("/feed.xsl")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/xsl; charset=utf-8"
    assert b"xsl:stylesheet" in answer.content


def test_a_browser_gets_the_rss_as_xml_so_the_stylesheet_applies(client, one_sent):
    reader = client.get("/feed.xml")
    browser = client.get("/feed.xml", headers={"Accept": BROWSER_ACCEPT})
    assert browser.headers["content-type"] == "application/xml; charset=utf-8"
    assert reader.headers["content-type"] == "application/rss+xml; charset=utf-8"
    assert browser.content == reader.content and browser.headers["vary"] == "Accept"
    # Its own policy, alone: the app's nonce policy would block the stylesheet.
    policy = browser.headers.get_list("content-security-policy")
    assert len(policy) == 1 and "script-src 'self' 'sha256-" in policy[0]
    assert len(client.get("/feed.atom").headers.get_list("content-security-policy")) == 1


def test_the_served_feeds_parse_cleanly(client, settings, one_sent):
    for path in ("/feed.xml", "/feed.atom"):
        parsed = feedparser.parse(client.get(path).content)
        assert parsed.bozo == 0, (path, parsed.get("bozo_exception"))
        assert [e.link for e in parsed.entries] == [f"{settings.base_url}/issues/2026-W18"]
    items = json.loads(client.get("/feed.json").content)["items"]
    assert [item["id"] for item in items] == [f"{settings.base_url}/issues/2026-W18"]


# --------------------------------------------------------------------------- autodiscovery


def test_every_page_links_the_three_feeds(client, engine, settings, one_sent):
    reader, _ = add_confirmed(engine, "ann@example.org", name="Ann", now=SENT_W18)
    preferences = f"/preferences/{make_token(settings, 'preferences', reader.id, reader.email)}"
    for path in ("/", "/issues/", "/issues/2026-W18", preferences):
        page = client.get(path)
        assert page.status_code == 200, path
        head = page.text.split("</head>")[0]
        for kind, url in (
            ("application/rss+xml", "/feed.xml"),
            ("application/atom+xml", "/feed.atom"),
            ("application/feed+json", "/feed.json"),
        ):
            assert f'<link rel="alternate" type="{kind}"' in head, (path, kind)
            assert f'href="{settings.base_url}{url}"' in head, (path, url)
            assert head.count(f'type="{kind}"') == 1, (path, kind)


# --------------------------------------------------------------------------- in a browser


@pytest.mark.browser
def test_the_feed_reads_as_a_page_in_chromium(settings_env, engine, starter_glossary):
    problems: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if "Content Security Policy" in msg.text or msg.type == "error":
            problems.append(msg.text)

    with serving(get_settings()) as settings, sync_playwright() as p:
        send(engine, settings, starter_glossary, IsoWeek(2026, 18), SENT_W18)
        send(engine, settings, starter_glossary, IsoWeek(2026, 19), SENT_W19)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 375, "height": 800})
            context.grant_permissions(["clipboard-read", "clipboard-write"])
            page = context.new_page()
            page.on("console", on_console)
            page.goto(f"{settings.base_url}/feed.xml")
            follow = page.locator("#follow")
            assert "Copy this URL into your feed reader" in follow.inner_text()
            assert page.locator("#feed-url").input_value() == f"{settings.base_url}/feed.xml"
            items = page.locator(".items li")
            assert items.count() == 2
            assert "/issues/2026-W19" in (items.first.locator("a").get_attribute("href") or "")
            assert "11 May 2026" in items.first.inner_text()
            assert page.get_by_role("link", name="Subscribe to the newsletter").count() == 1
            # The inline script ran (allowed by its hash): the copy button shows and copies.
            page.get_by_role("button", name="Copy").click()
            assert page.get_by_role("button", name="Copied").count() == 1
            copied = page.evaluate("navigator.clipboard.readText()")
            assert copied == f"{settings.base_url}/feed.xml"
            # Readable at 375 px: nothing scrolls sideways.
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
        finally:
            browser.close()
    # Left out: /favicon.ico's 404, and the inline handler of the "XSLT is being removed"
    # banner Chromium 156 lays over any XSLT page (a stylesheet with no script gets it too).
    real = [m for m in problems if "status of 404" not in m and "inline event handler" not in m]
    assert not real, problems
