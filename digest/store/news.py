"""The optional news section: recent items from external RSS/Atom feeds (`DIGEST_NEWS_FEEDS`).

Fetching is I/O and forgiving — a broken, slow or malformed feed is logged and skipped, never
failing a build; choosing the items (`select_news`) is a pure function of the items and `now`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import feedparser
import httpx

from digest.config import Settings

__all__ = ["FeedError", "NewsItem", "fetch_news", "parse_feed", "select_news"]

log = logging.getLogger(__name__)

# A news feed is a few hundred KB at most; anything far larger is not one.
MAX_FEED_BYTES = 5 * 1024 * 1024
# Issues go out weekly, so "news" is what appeared in the week before the build.
NEWS_WINDOW = timedelta(days=7)
# Publishers' clocks drift; a date a little in the future is still this week's news.
_CLOCK_SKEW = timedelta(hours=1)
# feedparser reports these for feeds it read fine but whose headers were imprecise.
_HARMLESS = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)


class FeedError(Exception):
    """A news feed could not be fetched or read."""


@dataclass(frozen=True, slots=True)
class NewsItem:
    title: str
    link: str
    source: str
    published: datetime  # aware UTC

    def to_dict(self) -> dict[str, str]:
        """The JSON-able form frozen into an issue's snapshot."""
        return {
            "title": self.title,
            "link": self.link,
            "source": self.source,
            "published": self.published.isoformat(),
        }


def _is_web_link(url: str) -> bool:
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class _TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _plain(text: str, html: bool) -> str:
    """One line of plain text; titles marked as HTML are reduced to their text."""
    if html:
        parser = _TextOf()
        parser.feed(text)
        parser.close()
        text = "".join(parser.parts)
    return " ".join("".join(ch for ch in text if ch.isprintable() or ch.isspace()).split())


def _entry_time(entry: Any) -> datetime | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if not parsed:
        return None
    try:
        year, month, day, hour, minute, second = parsed[:6]
        # feedparser normalises dates to UTC
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def parse_feed(content: bytes, url: str, content_type: str | None = None) -> list[NewsItem]:
    """Items of one fetched feed; `FeedError` if it is not a well-formed RSS or Atom feed.

    A feed feedparser had to guess its way through (bozo) is refused, not half-used: a truncated
    or broken document can yield plausible-looking but wrong items.
    """
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    parsed = feedparser.parse(content, response_headers=headers)
    if parsed.get("bozo") and not isinstance(parsed.get("bozo_exception"), _HARMLESS):
        raise FeedError(f"not a well-formed feed ({parsed.get('bozo_exception')})")
    if not parsed.get("version"):
        raise FeedError("not an RSS or Atom feed")
    feed_title = parsed.feed.get("title_detail") or {}
    source = _plain(feed_title.get("value", ""), "html" in feed_title.get("type", ""))
    source = source or urlsplit(url).hostname or url
    items: list[NewsItem] = []
    for entry in parsed.entries:
        detail = entry.get("title_detail") or {}
        title = _plain(detail.get("value", ""), "html" in detail.get("type", ""))
        link = (entry.get("link") or "").strip()
        published = _entry_time(entry)
        if title and link and published is not None:
            items.append(NewsItem(title=title, link=link, source=source, published=published))
    return items


def select_news(items: Iterable[NewsItem], now: datetime, limit: int) -> list[NewsItem]:
    """The newest `limit` items of the week before `now`: web links only, each link once.

    Undated items are dropped upstream (their week is unknown). Ties are broken by title and
    link so the same items always come out in the same order.
    """
    fresh = [
        item
        for item in items
        if _is_web_link(item.link) and now - NEWS_WINDOW <= item.published <= now + _CLOCK_SKEW
    ]
    fresh.sort(key=lambda i: (-i.published.timestamp(), i.title, i.link))
    chosen: list[NewsItem] = []
    seen: set[str] = set()
    for item in fresh:
        if item.link in seen:
            continue
        seen.add(item.link)
        chosen.append(item)
        if len(chosen) == limit:
            break
    return chosen


def _download(client: httpx.Client, url: str, timeout: float) -> tuple[bytes, str | None]:
    """The body of `url`, within `timeout` seconds in all.

    httpx's timeout bounds each network wait, not the whole transfer; a server dribbling a byte
    a second would never trip it, so the total is checked here too.
    """
    deadline = time.monotonic() + timeout
    with client.stream("GET", url) as response:
        response.raise_for_status()
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_FEED_BYTES:
                raise FeedError(f"larger than {MAX_FEED_BYTES // (1024 * 1024)} MB")
            if time.monotonic() > deadline:
                raise FeedError(f"took longer than {timeout:g} s")
            chunks.append(chunk)
        return b"".join(chunks), response.headers.get("content-type")


def _fetch_one(client: httpx.Client, url: str, timeout: float) -> list[NewsItem]:
    if not _is_web_link(url):
        log.warning("news feed %r skipped: not an http(s) URL", url)
        return []
    try:
        content, content_type = _download(client, url, timeout)
        return parse_feed(content, url, content_type)
    except httpx.TimeoutException:
        log.warning("news feed %s skipped: no answer within %g s", url, timeout)
    except httpx.HTTPStatusError as exc:
        log.warning("news feed %s skipped: HTTP %s", url, exc.response.status_code)
    except (httpx.HTTPError, FeedError) as exc:
        log.warning("news feed %s skipped: %s", url, exc)
    except Exception:  # a third party's bytes must never stop the weekly issue
        log.exception("news feed %s skipped: unexpected error", url)
    return []


def fetch_news(
    settings: Settings,
    now: datetime,
    *,
    transport: httpx.BaseTransport | None = None,
) -> list[NewsItem]:
    """Fetch every feed in `settings.news_feeds` in parallel and pick the week's newest items."""
    urls: Sequence[str] = settings.news_feeds
    if not urls or settings.news_items == 0:
        return []
    timeout = settings.news_timeout
    with (
        httpx.Client(
            timeout=timeout,
            follow_redirects=True,
            headers={"User-Agent": f"digest (+{settings.base_url})"},
            transport=transport,
        ) as client,
        ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool,
    ):
        results = list(pool.map(lambda url: _fetch_one(client, url, timeout), urls))
    return select_news((item for items in results for item in items), now, settings.news_items)
