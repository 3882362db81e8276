"""The news section: real feeds from a local HTTP server, including broken, slow and failing ones."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from digest.store.news import FeedError, NewsItem, fetch_news, parse_feed, select_news
from tests.test_render import settings_for

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def rfc822(days_ago: float) -> str:
    return format_datetime(NOW - timedelta(days=days_ago), usegmt=True)


def rss(title: str, items: list[tuple[str, str, float]]) -> bytes:
    body = "".join(
        f"<item><title>{t}</title><link>{link}</link><pubDate>{rfc822(age)}</pubDate></item>"
        for t, link, age in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://wire.example.org/</link><description>d</description>"
        f"{body}</channel></rss>"
    ).encode()


GOOD = rss(
    "The Wire &amp; Co",
    [
        ("Newest &amp; best", "https://wire.example.org/3", 0.5),
        ("Middle", "https://wire.example.org/2", 2),
        ("Too old", "https://wire.example.org/old", 9),
        ("Script link", "javascript:alert(1)", 1),
        ("Relative link", "/relative", 1.5),
    ],
)
ATOM = f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom Weekly</title><id>urn:x</id>
<updated>{(NOW - timedelta(days=1)).isoformat()}</updated>
<entry><title type="html">Markup &lt;b&gt;bold&lt;/b&gt; title</title><id>urn:1</id>
<link href="https://atom.example.org/1"/><updated>{(NOW - timedelta(days=1)).isoformat()}</updated>
</entry></feed>""".encode()
MALFORMED = GOOD[: len(GOOD) // 2]  # cut off mid-document
SLOW_SECONDS = 3.0


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/good.xml":
            self._send(200, GOOD, "application/rss+xml")
        elif self.path == "/atom.xml":
            self._send(200, ATOM, "application/atom+xml")
        elif self.path == "/malformed.xml":
            self._send(200, MALFORMED, "application/rss+xml")
        elif self.path == "/page.html":
            self._send(200, b"<!doctype html><html><body>not a feed</body></html>", "text/html")
        elif self.path == "/error.xml":
            self._send(500, b"internal error", "text/plain")
        elif self.path == "/slow.xml":
            time.sleep(SLOW_SECONDS)
            self._send(200, GOOD, "application/rss+xml")
        elif self.path == "/drip.xml":
            # Each byte arrives within the read timeout, the whole feed does not.
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            try:
                for i in range(0, len(GOOD), 16):
                    self.wfile.write(GOOD[i : i + 16])
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass  # the client gave up, as it should
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False  # do not wait out the deliberately slow handlers
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_items_of_the_week_come_newest_first_with_their_source(server):
    settings = settings_for(news_feeds=[f"{server}/good.xml"], news_items=5)
    items = fetch_news(settings, NOW)
    assert [(i.title, i.link, i.source) for i in items] == [
        ("Newest & best", "https://wire.example.org/3", "The Wire & Co"),
        (
            "Relative link",
            f"{server}/relative",
            "The Wire & Co",
        ),  # resolved against the feed
        ("Middle", "https://wire.example.org/2", "The Wire & Co"),
    ]


def test_only_web_links_are_kept(server):
    settings = settings_for(news_feeds=[f"{server}/good.xml"], news_items=10)
    links = [i.link for i in fetch_news(settings, NOW)]
    assert all(link.startswith(("http://", "https://")) for link in links)
    assert not any("javascript" in link for link in links)


def test_atom_feeds_work_and_html_titles_become_text(server):
    settings = settings_for(news_feeds=[f"{server}/atom.xml"])
    [item] = fetch_news(settings, NOW)
    assert item == NewsItem(
        title="Markup bold title",
        link="https://atom.example.org/1",
        source="Atom Weekly",
        published=NOW - timedelta(days=1),
    )


def test_broken_feeds_are_logged_and_skipped_never_fatal(server, caplog):
    bad = ["malformed.xml", "page.html", "error.xml", "missing.xml"]
    settings = settings_for(
        news_feeds=[f"{server}/{name}" for name in bad] + [f"{server}/good.xml", "ftp://x/feed"],
        news_items=1,
    )
    with caplog.at_level(logging.WARNING, logger="digest.store.news"):
        items = fetch_news(settings, NOW)
    assert [i.title for i in items] == ["Newest & best"]
    logged = caplog.text
    assert f"{server}/malformed.xml skipped: not a well-formed feed" in logged
    assert f"{server}/page.html skipped: not a well-formed feed" in logged
    assert f"{server}/error.xml skipped: HTTP 500" in logged
    assert f"{server}/missing.xml skipped: HTTP 404" in logged
    assert "'ftp://x/feed' skipped: not an http(s) URL" in logged


def test_a_slow_feed_is_given_up_after_the_timeout(server, caplog):
    settings = settings_for(
        news_feeds=[f"{server}/slow.xml", f"{server}/good.xml"], news_timeout=0.5, news_items=1
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="digest.store.news"):
        items = fetch_news(settings, NOW)
    assert time.monotonic() - started < SLOW_SECONDS - 1
    assert [i.title for i in items] == ["Newest & best"]
    assert f"{server}/slow.xml skipped: no answer within 0.5 s" in caplog.text


def test_a_feed_that_trickles_in_is_cut_off_at_the_timeout_in_total(server, caplog):
    settings = settings_for(news_feeds=[f"{server}/drip.xml"], news_timeout=0.5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="digest.store.news"):
        assert fetch_news(settings, NOW) == []
    assert time.monotonic() - started < 1.5
    assert f"{server}/drip.xml skipped: took longer than 0.5 s" in caplog.text


def test_no_feeds_means_no_requests_and_no_news():
    assert fetch_news(settings_for(news_feeds=[]), NOW) == []


def test_parse_feed_refuses_what_is_not_a_feed():
    with pytest.raises(FeedError, match="not a well-formed feed"):
        parse_feed(MALFORMED, "https://x.example.org/feed")
    with pytest.raises(FeedError, match="not an RSS or Atom feed"):
        parse_feed(b"<?xml version='1.0'?><note>hi</note>", "https://x.example.org/feed")


def item(title: str, hours_ago: float, link: str | None = None) -> NewsItem:
    return NewsItem(
        title=title,
        link=link or f"https://n.example.org/{title}",
        source="N",
        published=NOW - timedelta(hours=hours_ago),
    )


def test_select_news_keeps_the_weeks_newest_n_deterministically():
    items = [
        item("b", 5),
        item("a", 5),
        item("older", 24 * 8),
        item("future", -5),
        item("c", 1),
        item("d", 30),
    ]
    assert [i.title for i in select_news(items, NOW, 3)] == ["c", "a", "b"]
    assert [i.title for i in select_news(reversed(items), NOW, 3)] == ["c", "a", "b"]


def test_select_news_drops_duplicate_links_and_non_web_links():
    items = [
        item("first", 1, "https://n.example.org/same"),
        item("again", 2, "https://n.example.org/same"),
        item("data", 1, "data:text/html,hi"),
        item("spaces", 1, "https://n.example.org/a b"),
        item("mail", 1, "mailto:x@example.org"),
    ]
    assert [i.title for i in select_news(items, NOW, 10)] == ["first"]


def test_news_items_freeze_into_a_snapshot_as_json():
    assert item("x", 1).to_dict() == {
        "title": "x",
        "link": "https://n.example.org/x",
        "source": "N",
        "published": "2026-11-23T07:00:00+00:00",
    }
