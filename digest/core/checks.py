"""Quality gates: what a rendered issue, its per-recipient messages and the feed must satisfy.

Pure functions returning every problem found (an empty list means fine), so a build reports all
of them at once. HTML is read with the stdlib's html.parser, never with regular expressions;
the feed with feedparser. `digest.campaign.preflight` gathers their inputs from the database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from email.parser import BytesParser
from email.policy import compat32
from email.policy import default as default_policy
from html.parser import HTMLParser
from urllib.parse import urlsplit

import feedparser

from digest.config import Settings
from digest.core.contrast import AA_LARGE_TEXT
from digest.core.headers import UnsupportedAddress, ascii_address
from digest.core.mail_contrast import shortfalls
from digest.core.mails import MARKER_RE, PLACEHOLDERS, Message, Recipient, fill_markers
from digest.core.tokens import BadToken, Purpose, verify_token
from digest.core.urls import Urls

__all__ = [
    "GMAIL_CLIP_BYTES",
    "QualityError",
    "check_email",
    "check_feed",
    "check_message",
    "check_page",
    "check_subject",
    "email_warnings",
]

# Gmail cuts messages larger than 102 KB behind a "[Message clipped]" link, which hides the
# footer — and the unsubscribe link with it.
GMAIL_CLIP_BYTES = 102 * 1024
# A marker becomes a signed-token URL at send time; count each one at this many bytes.
_FILLED_MARKER_BYTES = 300
# Past this share of the clip size a mail is one long term away from being clipped: a warning.
_NEAR_CLIP = 0.9
# An image that says it is decoration may have an empty alt; any other needs words.
_DECORATIVE_ROLES = frozenset({"presentation", "none"})
# Markers that stand for a URL, so an href holding one is as good as an absolute link.
_URL_MARKERS = frozenset({PLACEHOLDERS["unsubscribe_url"], PLACEHOLDERS["preferences_url"]})
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
        if tag == "img":
            self._check_alt(values)
        self.texts.extend(v for k, v in values.items() if k not in ("href", "src", "style"))
        if tag in _VERBATIM_TAGS:
            self._verbatim += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _VERBATIM_TAGS:
            self._verbatim -= 1

    def _check_alt(self, values: dict[str, str]) -> None:
        src = repr(values.get("src", "") or "(no src)")
        if "alt" not in values:
            self.images_without_alt.append(f"<img src={src}> has no alt text")
        elif not values["alt"].strip():
            decorative = values.get("role", "").strip().lower() in _DECORATIVE_ROLES
            if not decorative and values.get("aria-hidden", "").strip().lower() != "true":
                self.images_without_alt.append(
                    f"<img src={src}> has no alt text (its alt is empty; an image that is only "
                    'decoration says so with role="presentation")'
                )

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
    problems.extend(scan.images_without_alt)
    problems.extend(_leftovers(" ".join(scan.texts), allowed_markers))
    for _tag, _attr, value in scan.links:
        marker = MARKER_RE.fullmatch(value)
        if marker and value not in allowed_markers:
            problems.append(f"link to marker {value}, which nothing fills in here")
    return problems


def _leftovers(text: str, allowed_markers: Collection[str]) -> list[str]:
    problems = [
        f"unknown placeholder {marker}"
        for marker in sorted(set(MARKER_RE.findall(text)))
        if marker not in allowed_markers
    ]
    if _TEMPLATE_RE.search(text):
        problems.append("template syntax left in the output ('{{', '{%' or '{#')")
    return problems


def check_email(html: str, text: str) -> list[str]:
    """Problems with a mail's HTML and text parts (per-subscriber markers are allowed here).

    Among them any text under 3:1 contrast with its background, as the plainest client shows it
    (`mail_contrast`): below WCAG's minimum even for large text, unreadable to many readers —
    white on white hides the unsubscribe link. Texts between 3:1 and their WCAG AA minimum are
    `email_warnings`.
    """
    allowed = frozenset(PLACEHOLDERS.values())
    scan = _scan(html)
    problems = [f"html: {p}" for p in _check_html(scan, allowed)]
    problems.extend(f"html: {s}" for s in shortfalls(html) if s.ratio < AA_LARGE_TEXT)
    size = _filled_size(html)
    if size > GMAIL_CLIP_BYTES:
        problems.append(
            f"html: {size / 1024:.1f} KB once links are filled in; Gmail clips mail over "
            f"{GMAIL_CLIP_BYTES // 1024} KB"
        )
    if not any(value == PLACEHOLDERS["unsubscribe_url"] for _t, _a, value in scan.links):
        problems.append("html: no unsubscribe link")
    problems.extend(f"text: {p}" for p in _check_text(text, allowed))
    return problems


def email_warnings(html: str) -> list[str]:
    """What is wrong with a mail's HTML but should not stop it: texts under the contrast WCAG AA
    asks for their size (4.5:1, 3:1 for large text) yet at 3:1 or more, and a size within 10%
    of Gmail's clip. The issue still reads; the theme or the term should be fixed."""
    warnings = [f"html: {s}" for s in shortfalls(html) if s.ratio >= AA_LARGE_TEXT]
    size = _filled_size(html)
    if _NEAR_CLIP * GMAIL_CLIP_BYTES < size <= GMAIL_CLIP_BYTES:
        warnings.append(
            f"html: {size / 1024:.1f} KB once links are filled in, close to the "
            f"{GMAIL_CLIP_BYTES // 1024} KB past which Gmail clips it"
        )
    return warnings


def _filled_size(html: str) -> int:
    """The HTML's size in bytes with every marker counted as the URL it becomes."""
    size = len(html.encode("utf-8"))
    return size + sum(html.count(m) for m in PLACEHOLDERS.values()) * _FILLED_MARKER_BYTES


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


def check_subject(subject: str, limit: int, week: str) -> list[str]:
    """Warnings, not problems, about a subject line: over `limit` characters (the settings'
    `subject_warn_length`) most inboxes cut it, phones sooner. It may still go out; the
    warning says how to shorten it for this issue."""
    if len(subject) <= limit:
        return []
    return [
        f"the subject is {len(subject)} characters; inboxes cut subjects over about {limit} "
        f'(shorten it: `digest issue subject {week} "…"`, or `subject:` in the term file)'
    ]


# --------------------------------------------------------------------------- per-recipient mail

_ANGLE_RE = re.compile(r"<([^<>]*)>")
_ONE_CLICK = "List-Unsubscribe=One-Click"
# RFC 8058 wants https for one-click; plain http is accepted only for a local trial run.
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def check_message(
    settings: Settings,
    message: Message,
    serialise: Callable[[Message, Recipient], bytes] | None = None,
    notes: list[str] | None = None,
) -> list[str]:
    """Problems with the mail each recipient of `message` would get, as the transport sends it.

    Per recipient: every marker the subject and bodies use has a value; the HTML stays under
    Gmail's clip size with their values filled in; List-Unsubscribe holds their own https
    unsubscribe URL (and nothing malformed) and List-Unsubscribe-Post asks for one-click; the
    unsubscribe and preferences URLs carry tokens that verify for them under `settings`'s
    existing keys (a check never creates a signing key).
    With `serialise` (the outbox's `mime_bytes`), each message is also written out and read
    back as a mail client reads it: exactly one `To` holding the recipient's address, no other
    recipient headers, and a List-Unsubscribe that still holds their `<https://…>` once
    decoded — the values before serialisation can look right while the wire form is broken.
    A reader whose address no transport can write (`UnsupportedAddress`) is no problem of the
    issue: the send records them `refused` and goes on, so they are added to `notes` instead.
    Recipients are named by subscriber id, never by address (this output ends up in logs).
    """
    if not message.recipients:
        return ["the message has no recipients to check"]
    bodies = {"subject": message.subject, "html": message.html, "text": message.text}
    used = {name: set(MARKER_RE.findall(body)) for name, body in bodies.items()}
    urls, keys = Urls.from_settings(settings), settings.existing_verification_keys()
    problems: list[str] = []
    for recipient in message.recipients:
        who = f"recipient {recipient.custom_args.get('subscriber_id', '?')}"
        subs = recipient.substitutions
        for name, markers in used.items():
            missing = sorted(markers - set(subs))
            if missing:
                problems.append(f"{who}: {name}: no value for {', '.join(missing)}")
        size = len(fill_markers(message.html, subs).encode("utf-8"))
        if size > GMAIL_CLIP_BYTES:
            problems.append(
                f"{who}: html is {size / 1024:.1f} KB with their links filled in; Gmail clips "
                f"mail over {GMAIL_CLIP_BYTES // 1024} KB"
            )
        problems.extend(f"{who}: {p}" for p in _check_unsubscribe_headers(recipient))
        if serialise is not None:
            try:
                found = _check_serialised(serialise, message, recipient)
            except UnsupportedAddress as exc:
                if notes is not None:
                    notes.append(f"{who}: {exc}; the send records them refused and goes on")
            else:
                problems.extend(f"{who}: {p}" for p in found)
        for purpose in ("unsubscribe", "preferences"):
            url = subs.get(PLACEHOLDERS[f"{purpose}_url"])
            if url is not None:
                wrong = _check_link(urls, keys, purpose, url, recipient)
                problems.extend(f"{who}: {p}" for p in wrong)
    return problems


def _check_unsubscribe_headers(recipient: Recipient) -> list[str]:
    header = recipient.headers.get("List-Unsubscribe")
    if not header:
        return ["no List-Unsubscribe header"]
    problems: list[str] = []
    targets = _ANGLE_RE.findall(header)
    if not targets or ", ".join(f"<{t}>" for t in targets) != header.strip():
        problems.append(f"List-Unsubscribe is not a list of <URI>s: {header!r}")
    web = [t for t in targets if urlsplit(t).scheme in ("http", "https")]
    if not web:
        problems.append("List-Unsubscribe has no http(s) URL (one-click needs one)")
    else:
        parts = urlsplit(web[0])
        if parts.scheme != "https" and parts.hostname not in _LOCAL_HOSTS:
            problems.append(f"List-Unsubscribe URL is not https (RFC 8058): {parts.scheme}://…")
        if web[0] != recipient.substitutions.get(PLACEHOLDERS["unsubscribe_url"]):
            problems.append("List-Unsubscribe URL differs from the unsubscribe link in the mail")
    for target in targets:
        if target.startswith("mailto:") and "@" not in target:
            problems.append(f"List-Unsubscribe mailto has no address: {target!r}")
    if recipient.headers.get("List-Unsubscribe-Post") != _ONE_CLICK:
        problems.append(f"List-Unsubscribe-Post is not {_ONE_CLICK!r}")
    return problems


def _check_serialised(
    serialise: Callable[[Message, Recipient], bytes], message: Message, recipient: Recipient
) -> list[str]:
    try:
        raw = serialise(message, recipient)
    except UnsupportedAddress:
        raise
    except ValueError as exc:  # HeaderError: a value that could not be written
        return [f"the message cannot be written: {exc}"]
    parsed = BytesParser(policy=default_policy).parsebytes(raw, headersonly=True)
    problems: list[str] = []
    for extra in ("Cc", "Bcc", "Resent-To", "Resent-Bcc"):
        if parsed[extra] is not None:
            problems.append(f"the written message has a {extra} header")
    to = parsed.get_all("To") or []
    addresses = [a for header in to for a in getattr(header, "addresses", ())]
    if len(to) != 1 or len(addresses) != 1:
        problems.append(f"the written message has {len(addresses)} To address(es), not 1")
    elif addresses[0].addr_spec.lower() != ascii_address(recipient.email).lower():
        problems.append("the written To address is not the recipient's")
    # Raw, only unfolded: clients read List-Unsubscribe as RFC 2369 <URI>s and never decode
    # encoded-words there (Python's parser would, and hide the fault).
    raw_header = BytesParser(policy=compat32).parsebytes(raw, headersonly=True)["List-Unsubscribe"]
    expected = recipient.substitutions.get(PLACEHOLDERS["unsubscribe_url"])
    if raw_header is None:
        problems.append("the written message has no List-Unsubscribe header")
    else:
        unfolded = re.sub(r"\r?\n(?=[ \t])", "", str(raw_header))
        if expected is not None and expected not in _ANGLE_RE.findall(unfolded):
            problems.append(
                "the written List-Unsubscribe holds no <URL> a mail client can find "
                f"(it reads {unfolded[:60]!r})"
            )
    return problems


def _check_link(
    urls: Urls, keys: Sequence[str], purpose: Purpose, url: str, recipient: Recipient
) -> list[str]:
    prefix = urls.token_prefix(purpose)
    if not url.startswith(prefix):
        return [f"{purpose} link does not start with {prefix}"]
    try:
        token = verify_token(keys, purpose, url.removeprefix(prefix))
    except BadToken as exc:
        return [f"{purpose} link does not verify: {exc}"]
    problems: list[str] = []
    if str(token.subscriber_id) != recipient.custom_args.get("subscriber_id", "0"):
        problems.append(f"{purpose} link names subscriber {token.subscriber_id}")
    if not token.matches(recipient.email):
        problems.append(f"{purpose} link was signed for another address")
    return problems


# --------------------------------------------------------------------------- feed


def check_feed(xml: str) -> list[str]:
    """Problems with an RSS feed: it must parse cleanly (feedparser's bozo flag stays 0) and
    give every item a guid, no guid twice (readers would drop or repeat items)."""
    parsed = feedparser.parse(xml)
    problems: list[str] = []
    if parsed.bozo:
        problems.append(f"feed: not well-formed: {parsed.get('bozo_exception')}")
    seen: set[str] = set()
    for index, entry in enumerate(parsed.entries, 1):
        guid = entry.get("id")
        if not guid:
            problems.append(f"feed: item {index} has no guid")
        elif guid in seen:
            problems.append(f"feed: guid {guid} appears more than once")
        else:
            seen.add(guid)
    return problems
