"""The feeds of past issues — RSS 2.0, Atom 1.0 and JSON Feed 1.1 — from their frozen snapshots.

Pure: issue records and `now` in, text out, in the newsletter's language (`settings.locale`). The items are gathered once (`feed_channel`) and
written in each format: RSS and Atom by autoescaped Jinja2 templates, JSON Feed by orjson, so
every value is escaped by a serializer and never by string building.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import orjson

from digest.config import Settings
from digest.core.i18n import translations
from digest.core.render import base_context, render_article, render_template
from digest.core.urls import Urls
from digest.model.issue import IssueRecord
from digest.model.snapshot import readable

__all__ = [
    "FEED_MAX_AGE",
    "Channel",
    "FeedItem",
    "Feeds",
    "feed_channel",
    "render_atom",
    "render_feed",
    "render_feeds",
    "render_json_feed",
    "render_rss",
    "render_stylesheet",
]

# How long a reader (or a cache) may keep a feed without asking again: Cache-Control's max-age
# and the channel's <ttl>. An issue goes out once a week, so 15 minutes costs a reader at most
# a quarter of an hour of a new issue, and is the floor most readers poll at anyway; every poll
# in between is a 304 without a body.
FEED_MAX_AGE = 15 * 60

# Characters XML 1.0 forbids even as character references; one stray form feed in a term file
# would otherwise make the whole feed unreadable to every reader.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

_JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"


def _xml_safe(text: str) -> str:
    return _NOT_XML.sub("", text)


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One issue as every feed format shows it; text is plain (each writer escapes it)."""

    url: str
    title: str
    summary: str
    category: str
    published: datetime
    content_html: str


@dataclass(frozen=True, slots=True)
class Channel:
    """What the three feeds share: the newsletter, its addresses and the items, newest first.

    `updated` is the newest item's date (when the channel last changed), or None without items.
    """

    settings: Settings
    urls: Urls
    title: str
    description: str
    updated: datetime | None
    items: tuple[FeedItem, ...]

    @property
    def categories(self) -> list[str]:
        """Every category the items are in, once each, sorted (the channel's <category>)."""
        return sorted({item.category for item in self.items if item.category})


@dataclass(frozen=True, slots=True)
class Feeds:
    """The three feeds of one channel, and the stylesheet the RSS one points browsers at."""

    rss: str
    atom: str
    json: bytes
    stylesheet: str


def _published(record: IssueRecord, settings: Settings) -> datetime:
    """When the issue went out; an issue not sent yet is dated to the start of its week, which
    keeps a static build reproducible (no build-time clock in the output)."""
    when = record.sent_at or record.week.starts_at(settings.zone)
    return when.astimezone(UTC)


def _rfc822(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC), usegmt=True)


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def feed_channel(settings: Settings, records: Sequence[IssueRecord]) -> Channel:
    """The newest `settings.feed_items` issues among `records`, gathered once for every format.

    The caller chooses which issues are public (the web app passes sent ones; a static build
    adds the issue it just built). An issue whose snapshot this digest cannot read (built by a
    newer one) is left out rather than breaking the feed for every reader; `digest check`
    names it (campaign.preflight).
    """
    chosen = sorted(
        (r for r in records if r.snapshot and readable(r)), key=lambda r: r.week, reverse=True
    )[: settings.feed_items]
    urls = Urls.from_settings(settings)
    items = []
    for record in chosen:
        assert record.snapshot is not None
        term = record.snapshot["term"]
        items.append(
            FeedItem(
                url=urls.archive_page(record.week),
                title=_xml_safe(term["title"]),
                summary=_xml_safe(term["summary"]),
                category=_xml_safe(term["category"]),
                published=_published(record, settings),
                # Without its <h1>: every reader shows the item's title above the content.
                content_html=_xml_safe(render_article(record.snapshot, settings, with_title=False)),
            )
        )
    name = _xml_safe(settings.newsletter_name)
    return Channel(
        settings=settings,
        urls=urls,
        title=name,
        description=translations(settings.locale).gettext(
            "%(name)s: one AI term explained every week — what it means, why it matters, how "
            "it works, and related concepts."
        )
        % {"name": name},
        updated=max((item.published for item in items), default=None),
        items=tuple(items),
    )


def _template_context(channel: Channel, now: datetime) -> dict[str, Any]:
    settings = channel.settings
    return {
        **base_context(settings),
        "newsletter_name": channel.title,
        "description": channel.description,
        "categories": channel.categories,
        "logo_url": settings.logo_url,
        "author_name": _xml_safe(settings.sender_name),
        "author_email": settings.sender_email,
        "ttl": FEED_MAX_AGE // 60,
        "stylesheet_url": channel.urls.feed_stylesheet(),
        "atom_url": channel.urls.feed_atom(),
        # The clock only when there are no items yet: a feed with items is the same bytes
        # whenever it is rendered, so its ETag holds until a new issue goes out.
        "last_build_date": _rfc822(channel.updated or now),
        "updated": _rfc3339(channel.updated or now),
        "items": [
            {
                "title": item.title,
                "url": item.url,
                "pub_date": _rfc822(item.published),
                "published": _rfc3339(item.published),
                "category": item.category,
                "summary": item.summary,
                # Readers take RSS <description> as HTML: the plain-text summary is escaped for
                # HTML here, and the template escapes that again for XML.
                "summary_html": html.escape(item.summary, quote=False),
                "content": item.content_html,
            }
            for item in channel.items
        ],
    }


def render_rss(channel: Channel, now: datetime) -> str:
    """RSS 2.0 (templates/feed.xml.j2), with the stylesheet that shows it in a browser."""
    context = _template_context(channel, now)
    return render_template(channel.settings.templates_dir, "feed.xml.j2", context)


def render_atom(channel: Channel, now: datetime) -> str:
    """Atom 1.0 (RFC 4287; templates/feed.atom.xml.j2, autoescaped as an .xml.j2 template)."""
    context = _template_context(channel, now)
    return render_template(channel.settings.templates_dir, "feed.atom.xml.j2", context)


def render_json_feed(channel: Channel) -> bytes:
    """JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/), serialized by orjson."""
    settings, urls = channel.settings, channel.urls
    authors = [{"name": _xml_safe(settings.sender_name), "url": urls.home()}]
    feed: dict[str, Any] = {
        "version": _JSON_FEED_VERSION,
        "title": channel.title,
        "home_page_url": urls.archive_index(),
        "feed_url": urls.feed_json(),
        "description": channel.description,
        "language": settings.language,
        "authors": authors,
        "items": [
            {
                "id": item.url,
                "url": item.url,
                "title": item.title,
                "summary": item.summary,
                "content_html": item.content_html,
                "date_published": _rfc3339(item.published),
                "tags": [item.category] if item.category else [],
                "authors": authors,
            }
            for item in channel.items
        ],
    }
    if settings.logo_url:
        feed["icon"] = settings.logo_url
    return orjson.dumps(feed)


def render_stylesheet(settings: Settings) -> str:
    """The XSLT (templates/feed.xsl.j2) that turns the RSS feed into a page in a browser.

    A template so a site can override it like any other. It reads what it shows from the feed
    itself; only the subscribe page's address comes from the settings."""
    return render_template(settings.templates_dir, "feed.xsl.j2", base_context(settings))


def render_feeds(settings: Settings, records: Sequence[IssueRecord], now: datetime) -> Feeds:
    """Every feed file of a static build, from one gathering of the items."""
    channel = feed_channel(settings, records)
    return Feeds(
        rss=render_rss(channel, now),
        atom=render_atom(channel, now),
        json=render_json_feed(channel),
        stylesheet=render_stylesheet(settings),
    )


def render_feed(settings: Settings, records: Sequence[IssueRecord], now: datetime) -> str:
    """The RSS 2.0 feed of `records` (see `feed_channel`): what `digest check` validates.

    `lastBuildDate` is the newest item's date — when the channel last changed — and `now`
    only when there are no items yet.
    """
    return render_rss(feed_channel(settings, records), now)
