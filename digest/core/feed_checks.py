"""Whether the three feeds of a build are valid: RSS 2.0, Atom 1.0 (RFC 4287), JSON Feed 1.1.

The W3C Feed Validation Service's code is not a package digest can depend on, so its rules that
a generated feed can break are written out here: required elements, absolute links, dates in
RFC 822 / RFC 3339, contacts that are addresses, known language codes, image title and link
equal to the channel's, unique ids, a rel="self" link. feedparser reads the RSS and the Atom
feed as a reader does (`checks.check_feed`); `digest check` runs all of it on every issue.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import feedparser
from babel import Locale, UnknownLocaleError

from digest.core.checks import check_feed
from digest.core.feed import Feeds

__all__ = ["check_atom", "check_feeds", "check_json_feed", "check_rss"]

_ATOM = "{http://www.w3.org/2005/Atom}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
# RSS contacts: "address (Name)" or a bare address (the validator's InvalidContact).
_CONTACT = re.compile(r"^[^@\s()]+@[^@\s()]+(\s+\(.*\))?$")
_JSON_FEED_1_1 = "https://jsonfeed.org/version/1.1"


def check_feeds(feeds: Feeds) -> list[str]:
    """Every problem of the RSS, Atom and JSON feeds, each prefixed with the feed it is in."""
    problems = check_rss(feeds.rss)
    problems.extend(f"atom feed: {p}" for p in check_atom(feeds.atom))
    problems.extend(f"json feed: {p}" for p in check_json_feed(feeds.json))
    return problems


# --------------------------------------------------------------------------- RSS 2.0


def check_rss(xml: str) -> list[str]:
    """`checks.check_feed` (parses cleanly, unique guids) and the RSS 2.0 validator's rules."""
    problems = check_feed(xml)
    try:
        root = ET.fromstring(xml.encode("utf-8"))
    except ET.ParseError:
        return problems  # check_feed has said it is not well-formed
    channel = root.find("channel")
    if root.tag != "rss" or root.get("version") != "2.0" or channel is None:
        return [*problems, 'feed: not an RSS 2.0 document (<rss version="2.0"><channel>)']
    found = [f"<channel>: {p}" for p in _rss_channel(channel)]
    for index, item in enumerate(channel.findall("item"), 1):
        found.extend(f"item {index}: {p}" for p in _rss_item(item))
    return problems + [f"feed: {p}" for p in found]


def _rss_channel(channel: ET.Element) -> list[str]:
    problems = [
        f"no <{name}>" for name in ("title", "link", "description") if not _text(channel, name)
    ]
    problems.extend(_url_problem("<link>", _text(channel, "link")))
    problems.extend(_language_problem("<language>", _text(channel, "language")))
    for name in ("lastBuildDate", "pubDate"):
        problems.extend(_rfc822_problem(f"<{name}>", _text(channel, name)))
    for name in ("managingEditor", "webMaster"):
        problems.extend(_contact_problem(f"<{name}>", _text(channel, name)))
    ttl = _text(channel, "ttl")
    if ttl is not None and not ttl.isdigit():
        problems.append(f"<ttl> {ttl!r} is not a whole number of minutes")
    selves = [
        link.get("href") for link in channel.findall(f"{_ATOM}link") if link.get("rel") == "self"
    ]
    if not selves:
        problems.append('no <atom:link rel="self"> giving the feed\'s own address')
    for href in selves:
        problems.extend(_url_problem('<atom:link rel="self">', href))
    image = channel.find("image")
    if image is not None:
        for name in ("url", "title", "link"):
            if not _text(image, name):
                problems.append(f"<image> has no <{name}>")
        problems.extend(_url_problem("<image><url>", _text(image, "url")))
        for name in ("title", "link"):
            if _text(image, name) not in (None, _text(channel, name)):
                problems.append(f"<image><{name}> differs from the channel's <{name}>")
    return problems


def _rss_item(item: ET.Element) -> list[str]:
    problems: list[str] = []
    if not _text(item, "title") and not _text(item, "description"):
        problems.append("has neither <title> nor <description>")
    problems.extend(_url_problem("<link>", _text(item, "link")))
    problems.extend(_rfc822_problem("<pubDate>", _text(item, "pubDate")))
    problems.extend(_contact_problem("<author>", _text(item, "author")))
    guid = item.find("guid")
    if guid is not None and guid.get("isPermaLink", "true") == "true":
        problems.extend(_url_problem("<guid> (a permalink)", (guid.text or "").strip()))
    return problems


# --------------------------------------------------------------------------- Atom 1.0


def check_atom(xml: str) -> list[str]:
    """RFC 4287's rules for a feed and its entries, and feedparser reading it cleanly."""
    parsed = feedparser.parse(xml.encode("utf-8"))
    problems = [f"not well-formed: {parsed.get('bozo_exception')}"] if parsed.bozo else []
    try:
        feed = ET.fromstring(xml.encode("utf-8"))
    except ET.ParseError:
        return problems
    if feed.tag != f"{_ATOM}feed":
        return [*problems, 'not an Atom document (<feed xmlns="http://www.w3.org/2005/Atom">)']
    problems.extend(f"<feed>: {p}" for p in _atom_common(feed))
    problems.extend(_language_problem("<feed xml:lang>", feed.get(_XML_LANG)))
    links = feed.findall(f"{_ATOM}link")
    if not any(link.get("rel") == "self" for link in links):
        problems.append('<feed>: no <link rel="self"> giving the feed\'s own address')
    entries = feed.findall(f"{_ATOM}entry")
    if feed.find(f"{_ATOM}author") is None and any(
        e.find(f"{_ATOM}author") is None for e in entries
    ):
        problems.append("<feed>: no <author>, and not every entry has one")
    seen: set[str] = set()
    for index, entry in enumerate(entries, 1):
        found = _atom_common(entry)
        entry_id = _text(entry, f"{_ATOM}id")
        if entry_id in seen:
            found.append(f"id {entry_id} appears more than once")
        seen.add(entry_id or "")
        found.extend(_rfc3339_problem("<published>", _text(entry, f"{_ATOM}published")))
        content = entry.find(f"{_ATOM}content")
        alternate = [
            e for e in entry.findall(f"{_ATOM}link") if e.get("rel", "alternate") == "alternate"
        ]
        if content is None and not alternate:
            found.append('has neither <content> nor <link rel="alternate">')
        if content is not None and content.get("type", "text") not in ("text", "html", "xhtml"):
            found.append(f"<content type={content.get('type')!r}> is not text, html or xhtml")
        problems.extend(f"entry {index}: {p}" for p in found)
    return problems


def _atom_common(element: ET.Element) -> list[str]:
    """What RFC 4287 asks of a feed and of an entry alike: id, title, updated, absolute links."""
    problems = [
        f"no <{name}>"
        for name in ("id", "title", "updated")
        if not _text(element, f"{_ATOM}{name}")
    ]
    identifier = _text(element, f"{_ATOM}id")
    if identifier is not None and not urlsplit(identifier).scheme:
        problems.append(f"<id> {identifier!r} is not an absolute IRI")
    problems.extend(_rfc3339_problem("<updated>", _text(element, f"{_ATOM}updated")))
    for link in element.findall(f"{_ATOM}link"):
        problems.extend(
            _url_problem(f"<link rel={link.get('rel', 'alternate')!r}>", link.get("href"))
        )
    return problems


# --------------------------------------------------------------------------- JSON Feed 1.1


def check_json_feed(data: bytes | str) -> list[str]:
    """JSON Feed 1.1: version, title, items with unique ids and content, URLs and dates."""
    try:
        feed = json.loads(data)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    if not isinstance(feed, dict):
        return ["not a JSON object"]
    problems: list[str] = []
    if feed.get("version") != _JSON_FEED_1_1:
        problems.append(f"version is {feed.get('version')!r}, not {_JSON_FEED_1_1!r}")
    if not _nonempty_str(feed.get("title")):
        problems.append("no title")
    for name in ("home_page_url", "feed_url", "icon", "favicon"):
        if name in feed:
            problems.extend(_url_problem(name, feed[name]))
    problems.extend(_language_problem("language", feed.get("language")))
    problems.extend(_json_authors("authors", feed.get("authors")))
    items = feed.get("items")
    if not isinstance(items, list):
        return [*problems, "items is not a list"]
    seen: set[str] = set()
    for index, item in enumerate(items, 1):
        found = _json_item(item, seen)
        problems.extend(f"item {index}: {p}" for p in found)
    return problems


def _json_item(item: Any, seen: set[str]) -> list[str]:
    if not isinstance(item, dict):
        return ["not an object"]
    problems: list[str] = []
    identifier = item.get("id")
    if not _nonempty_str(identifier):
        problems.append("no id (a non-empty string)")
    elif identifier in seen:
        problems.append(f"id {identifier} appears more than once")
    else:
        seen.add(str(identifier))
    if not (_nonempty_str(item.get("content_html")) or _nonempty_str(item.get("content_text"))):
        problems.append("neither content_html nor content_text")
    for name in ("url", "external_url", "image"):
        if name in item:
            problems.extend(_url_problem(name, item[name]))
    for name in ("date_published", "date_modified"):
        if name in item:
            problems.extend(_rfc3339_problem(name, item[name]))
    if "tags" in item and not (
        isinstance(item["tags"], list) and all(isinstance(t, str) for t in item["tags"])
    ):
        problems.append("tags is not a list of strings")
    problems.extend(_json_authors("authors", item.get("authors")))
    return problems


def _json_authors(name: str, authors: Any) -> list[str]:
    if authors is None:
        return []
    if not isinstance(authors, list) or not all(isinstance(a, dict) for a in authors):
        return [f"{name} is not a list of objects"]
    problems: list[str] = []
    for author in authors:
        if not any(_nonempty_str(author.get(k)) for k in ("name", "url", "avatar")):
            problems.append(f"an entry of {name} has no name, url or avatar")
        if "url" in author:
            problems.extend(_url_problem(f"{name} url", author["url"]))
    return problems


# --------------------------------------------------------------------------- values


def _text(element: ET.Element, path: str) -> str | None:
    found = element.find(path)
    if found is None:
        return None
    return (found.text or "").strip()


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _url_problem(what: str, value: Any) -> Iterable[str]:
    if value is None:
        return []
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        return [f"{what} {value!r} is not an absolute http(s) URL"]
    return []


def _rfc822_problem(what: str, value: str | None) -> Iterable[str]:
    if value is None:
        return []
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return [f"{what} {value!r} is not an RFC 822 date"]
    return [] if when.tzinfo is not None else [f"{what} {value!r} has no time zone"]


def _rfc3339_problem(what: str, value: Any) -> Iterable[str]:
    if value is None or (isinstance(value, str) and _RFC3339.match(value)):
        return []
    return [f"{what} {value!r} is not an RFC 3339 date-time"]


def _contact_problem(what: str, value: str | None) -> Iterable[str]:
    if value is None or _CONTACT.match(value):
        return []
    return [f"{what} {value!r} is not an address with an optional (name)"]


def _language_problem(what: str, value: Any) -> Iterable[str]:
    if value is None:
        return []
    try:
        Locale.parse(str(value), sep="-")
    except (UnknownLocaleError, ValueError):
        return [f"{what} {value!r} is not a language code"]
    return []
