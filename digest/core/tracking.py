"""Click tracking, pure: which links of a mail are tracked, the compact signed click tokens, the
keyed reader hash that counts uniques without a history, and which User-Agents are machines.

Nothing here touches the database or the clock; the send marks links with `mark_links`, the
web's /r/<token> reads tokens with `read_click_token`, and both count with `reader_key`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from html import unescape

from digest.config import Settings
from digest.core.mails import MARKER_RE

__all__ = [
    "ClickToken",
    "MarkedBodies",
    "click_marker",
    "click_tokens",
    "is_scanner",
    "make_click_token",
    "mark_links",
    "read_click_token",
    "reader_key",
    "tracked_links",
    "tracking_key",
    "tracking_keys",
]

# --------------------------------------------------------------------------- keys


@lru_cache(maxsize=16)
def _derive(secret: str) -> bytes:
    # A key of its own for engagement, so a click token or reader hash can never stand in for
    # an unsubscribe token (itsdangerous derives its own keys from the same secret).
    return hmac.digest(secret.encode(), b"digest.engagement", "sha256")


def tracking_key(settings: Settings) -> bytes:
    """The key new click tokens and reader hashes are made with (from `signing_key`)."""
    return _derive(settings.signing_key())


def tracking_keys(settings: Settings) -> list[bytes]:
    """The current key first, then the retired secrets' keys: old mails' links still redirect
    after the secret is rotated (`DIGEST_OLD_SECRET_KEYS`)."""
    return [_derive(secret) for secret in settings.verification_keys()]


def reader_key(key: bytes, issue_id: int, subscriber_id: int) -> str:
    """A keyed hash of (issue, reader): counts a reader once per issue without storing who
    they are, and differs between issues, so two issues' rows cannot be joined to one reader."""
    return hmac.new(key, f"reader:{issue_id}:{subscriber_id}".encode(), "sha256").hexdigest()


# --------------------------------------------------------------------------- click tokens

# 96 bits of HMAC-SHA256: a forged token is one guess in 2**96 per request, and the URL stays
# short (a reader gets one token per link; a send makes millions).
_MAC_BYTES = 12
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{20,64}")


@dataclass(frozen=True, slots=True)
class ClickToken:
    issue_id: int
    link_index: int
    subscriber_id: int


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varints(data: bytes, count: int) -> list[int] | None:
    """`count` unsigned varints that make up all of `data` in their shortest form, or None."""
    values, pos = [], 0
    for _ in range(count):
        value = shift = 0
        while True:
            if pos >= len(data) or shift > 56:
                return None
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        values.append(value)
    if pos != len(data) or b"".join(_varint(v) for v in values) != data:
        return None  # trailing bytes or a padded varint: not what make_click_token wrote
    return values


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.digest(key, b"click:" + payload, "sha256")[:_MAC_BYTES]


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _encode(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


@lru_cache(maxsize=16)
def _heads(issue_id: int, links: int) -> tuple[bytes, ...]:
    # The issue's and each link's part of the payload, encoded once per issue, not per reader.
    if issue_id < 0 or links < 0:
        raise ValueError("click token numbers cannot be negative")
    return tuple(_varint(issue_id) + _varint(i) for i in range(links))


def click_tokens(key: bytes, issue_id: int, links: int, subscriber_id: int) -> list[str]:
    """`make_click_token` for each of an issue's `links` for one reader, in link order: the
    send's per-reader work (one HMAC per link; the rest is encoded once)."""
    if subscriber_id < 0:
        raise ValueError("click token numbers cannot be negative")
    reader = _varint(subscriber_id)
    tokens = []
    for head in _heads(issue_id, links):
        payload = head + reader
        tokens.append(_encode(payload + _mac(key, payload)))
    return tokens


def make_click_token(key: bytes, issue_id: int, link_index: int, subscriber_id: int) -> str:
    """The URL-safe token of /r/<token>: the three numbers as varints and their truncated MAC
    (about 20 characters)."""
    if issue_id < 0 or link_index < 0 or subscriber_id < 0:
        raise ValueError("click token numbers cannot be negative")
    payload = _varint(issue_id) + _varint(link_index) + _varint(subscriber_id)
    return _encode(payload + _mac(key, payload))


def read_click_token(keys: Sequence[bytes], token: str) -> ClickToken | None:
    """What `token` names when one of `keys` (current first) made it; None for anything else:
    tampered, truncated, padded, re-encoded, or made with a key that is no longer honoured."""
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        return None
    # Only the exact string written verifies (base64 ignores a last character's unused bits).
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        return None
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if len(payload) < 3 or not any(hmac.compare_digest(_mac(k, payload), mac) for k in keys):
        return None
    numbers = _read_varints(payload, 3)
    if numbers is None:
        return None
    return ClickToken(*numbers)


# --------------------------------------------------------------------------- tracked links

# An <a> tag's href, single- or double-quoted as the renderer (or a test) wrote it.
_HREF_RE = re.compile(r"""(<a\b[^>]*?\shref=)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
# A URL in the text part; a sentence's closing punctuation is not part of it.
_TEXT_URL_RE = re.compile(r"""https?://[^\s<>"']+""")
_TRAILING = ".,;:!?)]}"


def _text_url(match: re.Match[str]) -> tuple[int, int, str]:
    url = match[0].rstrip(_TRAILING)
    return match.start(), match.start() + len(url), url


def _trackable(url: str) -> bool:
    # The reader's own unsubscribe and preference links (markers until the send) and mailto:
    # are never tracked: they must work without digest's redirect, and List-Unsubscribe is a
    # header, never a body link. Only http(s) targets are redirects a browser can follow.
    return url.startswith(("http://", "https://")) and MARKER_RE.search(url) is None


def tracked_links(html: str, text: str) -> tuple[str, ...]:
    """The mail's tracked link targets, each once, in the order they first appear (the HTML
    part's hrefs, then the text part's URLs): stored with the issue as `issues.links`, the only
    places /r/<token> redirects to."""
    found: dict[str, None] = {}
    for match in _HREF_RE.finditer(html):
        target = unescape(match[3]).strip()
        if _trackable(target):
            found.setdefault(target, None)
    for match in _TEXT_URL_RE.finditer(text):
        url = _text_url(match)[2]
        if _trackable(url):
            found.setdefault(url, None)
    return tuple(found)


def click_marker(index: int, *, html: bool = False) -> str:
    """The marker a tracked link becomes until the send fills in the reader's value;
    `html`: the HTML part's form, for a link whose href is written escaped."""
    return f"%%click_{index}_html%%" if html else f"%%click_{index}%%"


@dataclass(frozen=True, slots=True)
class MarkedBodies:
    """A mail's parts with each tracked link replaced by its marker. `html_forms`: link index
    → the href exactly as the HTML part wrote it, where that differs from the target (`&amp;`),
    so a reader who is not tracked gets the part back byte for byte."""

    html: str
    text: str
    html_forms: dict[int, str]


def mark_links(html: str, text: str, links: Sequence[str]) -> MarkedBodies:
    """`html` and `text` with every link of `links` (an issue's `tracked_links`) replaced by its
    `click_marker`. A link not in `links` stays as it is: it was not tracked at build."""
    index = {target: i for i, target in enumerate(links)}
    forms: dict[int, str] = {}

    def href(match: re.Match[str]) -> str:
        written = match[3]
        i = index.get(unescape(written).strip())
        if i is None:
            return match[0]
        if written == links[i]:
            return f"{match[1]}{match[2]}{click_marker(i)}{match[2]}"
        forms.setdefault(i, written)
        if forms[i] != written:  # the same target written two ways: keep this one literal
            return match[0]
        return f"{match[1]}{match[2]}{click_marker(i, html=True)}{match[2]}"

    marked_html = _HREF_RE.sub(href, html)
    parts, last = [], 0
    for match in _TEXT_URL_RE.finditer(text):
        start, end, url = _text_url(match)
        i = index.get(url)
        if i is not None:
            parts += [text[last:start], click_marker(i)]
            last = end
    parts.append(text[last:])
    return MarkedBodies(marked_html, "".join(parts), forms)


# --------------------------------------------------------------------------- machines

# User-Agent fragments (lower case) of link scanners, previewers and scripts, which fetch links
# no reader followed. Sources: Mautic #16263 and resend-node #901 (Defender Safe Links,
# Mimecast, Proofpoint URL Defense and Barracuda pre-fetch every link at delivery),
# opencollective #3656 (Safe Links), the previewers' own documentation (Slack, Discord,
# Telegram, WhatsApp, Skype, Facebook, Google Read Aloud). Known blind spot: Safe Links and
# Proofpoint mostly send an ordinary desktop-Chrome User-Agent; the burst rule (several links
# of one reader within `click_burst_seconds`) catches them, a UA list never can.
SCANNER_AGENTS: tuple[str, ...] = (
    # mail security gateways that say who they are
    "safelinks",
    "microsoft defender",
    "msoffice",
    "ms-office",
    "microsoft office existence discovery",
    "proofpoint",
    "mimecast",
    "barracuda",
    "trendmicro",
    "forcepoint",
    "symantec",
    "sophos",
    "cisco",
    "fortiguard",
    # previewers, readers aloud, crawlers
    "google-read-aloud",
    "googleimageproxy",
    "yahoomailproxy",
    "bingpreview",
    "slackbot",
    "discordbot",
    "telegrambot",
    "whatsapp",
    "skypeuripreview",
    "facebookexternalhit",
    "twitterbot",
    "linkedinbot",
    "headlesschrome",
    "phantomjs",
    "bot/",
    "bot;",
    "bot)",
    "+http",
    "crawler",
    "spider",
    "preview",
    "scanner",
    # scripts and libraries
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww-perl",
    "httpclient",
)


def is_scanner(user_agent: str | None) -> bool:
    """Whether a request with this User-Agent is a machine, not a reader: no UA at all (no
    browser sends none), or one naming a known scanner, previewer, crawler or script."""
    if not user_agent or not user_agent.strip():
        return True
    agent = user_agent.lower()
    return any(fragment in agent for fragment in SCANNER_AGENTS)
