"""Quality gates: what a rendered issue must satisfy before it is stored and sent.

Pure functions returning every problem found (an empty list means fine), so a build reports all
of them at once. HTML is read with the stdlib's html.parser, never with regular expressions.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from html.parser import HTMLParser
from urllib.parse import urlsplit

from digest.delivery.base import PLACEHOLDERS

__all__ = ["GMAIL_CLIP_BYTES", "QualityError", "check_email", "check_page"]

# Gmail cuts messages larger than 102 KB behind a "[Message clipped]" link, which hides the
# footer — and the unsubscribe link with it.
GMAIL_CLIP_BYTES = 102 * 1024
# A marker becomes a signed-token URL at send time; count each one at this many bytes.
_FILLED_MARKER_BYTES = 300
# Markers that stand for a URL, so an href holding one is as good as an absolute link.
_URL_MARKERS = frozenset({PLACEHOLDERS["unsubscribe_url"], PLACEHOLDERS["preferences_url"]})
_MARKER_RE = re.compile(r"%%[A-Za-z0-9_.-]*%%")
_TEMPLATE_RE = re.compile(r"\{\{|\{%|\{#")
# Code is content: a term about prompt templates may rightly show `{{ variable }}` there.
_VERBATIM_TAGS = frozenset({"code", "pre", "style", "script", "title"})
_MIN_TEXT_WORDS = 30


class QualityError(Exception):
    """A rendered issue failed its quality gates; `problems` lists every failure."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{what} failed {len(problems)} quality check(s):\n{listing}")


class _Scan(HTMLParser):
    """One pass over a document collecting what the gates look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.html_lang: str | None = None
        self.saw_html = False
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.images_without_alt: list[str] = []
        self.texts: list[str] = []  # text and attribute values outside verbatim elements
        self._verbatim = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "html":
            self.saw_html = True
            self.html_lang = values.get("lang", "").strip() or None
        for name in ("href", "src"):
            if name in values:
                self.links.append((tag, name, values[name].strip()))
        if tag == "img" and not values.get("alt", "").strip():
            self.images_without_alt.append(values.get("src", "") or "(no src)")
        self.texts.extend(v for k, v in values.items() if k not in ("href", "src", "style"))
        if tag in _VERBATIM_TAGS:
            self._verbatim += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _VERBATIM_TAGS:
            self._verbatim -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _VERBATIM_TAGS and self._verbatim:
            self._verbatim -= 1

    def handle_data(self, data: str) -> None:
        if not self._verbatim:
            self.texts.append(data)


def _scan(html: str) -> _Scan:
    scan = _Scan()
    scan.feed(html)
    scan.close()
    return scan


def _absolute_http(url: str) -> bool:
    if url in _URL_MARKERS:
        return True
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_html(scan: _Scan, allowed_markers: Collection[str]) -> list[str]:
    problems: list[str] = []
    if not scan.saw_html:
        problems.append("no <html> element")
    elif scan.html_lang is None:
        problems.append("<html> has no lang attribute")
    for tag, attr, value in scan.links:
        if not _absolute_http(value):
            problems.append(f"<{tag} {attr}={value!r}> is not an absolute http(s) URL")
    for src in scan.images_without_alt:
        problems.append(f"<img src={src!r}> has no alt text")
    problems.extend(_leftovers(" ".join(scan.texts), allowed_markers))
    for _tag, _attr, value in scan.links:
        marker = _MARKER_RE.fullmatch(value)
        if marker and value not in allowed_markers:
            problems.append(f"link to marker {value}, which nothing fills in here")
    return problems


def _leftovers(text: str, allowed_markers: Collection[str]) -> list[str]:
    problems = [
        f"unknown placeholder {marker}"
        for marker in sorted(set(_MARKER_RE.findall(text)))
        if marker not in allowed_markers
    ]
    if _TEMPLATE_RE.search(text):
        problems.append("template syntax left in the output ('{{', '{%' or '{#')")
    return problems


def check_email(html: str, text: str) -> list[str]:
    """Problems with a mail's HTML and text parts (per-subscriber markers are allowed here)."""
    allowed = frozenset(PLACEHOLDERS.values())
    scan = _scan(html)
    problems = [f"html: {p}" for p in _check_html(scan, allowed)]
    size = len(html.encode("utf-8"))
    size += sum(html.count(m) for m in PLACEHOLDERS.values()) * _FILLED_MARKER_BYTES
    if size > GMAIL_CLIP_BYTES:
        problems.append(
            f"html: {size / 1024:.1f} KB once links are filled in; Gmail clips mail over "
            f"{GMAIL_CLIP_BYTES // 1024} KB"
        )
    if not any(value == PLACEHOLDERS["unsubscribe_url"] for _t, _a, value in scan.links):
        problems.append("html: no unsubscribe link")
    problems.extend(f"text: {p}" for p in _check_text(text, allowed))
    return problems


def _check_text(text: str, allowed_markers: Collection[str]) -> list[str]:
    words = len(text.split())
    if words < _MIN_TEXT_WORDS:
        return [f"plain-text part is missing or too short ({words} words)"]
    # Lines indented four spaces are code samples (see render.markdown_to_text): content.
    prose = "\n".join(line for line in text.splitlines() if not line.startswith("    "))
    problems = _leftovers(prose, allowed_markers)
    if PLACEHOLDERS["unsubscribe_url"] not in text:
        problems.append("no unsubscribe link")
    return problems


def check_page(html: str) -> list[str]:
    """Problems with a public web page (archive): no per-subscriber marker may appear at all."""
    return _check_html(_scan(html), allowed_markers=())
