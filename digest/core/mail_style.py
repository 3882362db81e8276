"""The mail's colours, light and dark, and the inline styles of a term's Markdown HTML in it.

Some mail clients drop a message's `<head>` styles, so whatever keeps the mail readable (every
colour, code that wraps, tables and images that fit) is written on each element itself; the
head keeps only what cannot be inline (dark mode) and progressive extras. One palette, so the
templates and the styles given to the Markdown agree; every text colour in it reaches WCAG AA's
4.5:1 on each background it is used on (tests/test_mail_anatomy.py measures them in Chromium).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

__all__ = ["DARK", "LIGHT", "MailPalette", "mail_palette", "styled_prose"]


@dataclass(frozen=True, slots=True)
class MailPalette:
    """The colours of one scheme. `text` and `muted` are used on `card`, `code` and `page`;
    `link` on `card`, and on `page` only in dark mode: the light page's footer links take
    `text`, as a brand colour that passes on white need not pass on the page's grey. `rule` is
    for borders, never text."""

    page: str  # around the card: the preheader line and the footer
    card: str  # the content
    text: str
    muted: str  # dates, categories, quotes, the footer
    link: str  # links and the kicker on the card
    code: str  # the background of code blocks and the "Did you know?" note
    rule: str  # dividers, table borders, the quote bar


# The light scheme's link is the brand colour (settings.brand_color, checked against white).
LIGHT = MailPalette(
    page="#f3f4f6",
    card="#ffffff",
    text="#1f2933",
    muted="#4b5563",
    link="#1d4ed8",
    code="#f3f4f6",
    rule="#d1d5db",
)
# A brand colour dark enough for white is too dark for a dark card: dark mode uses its own.
DARK = MailPalette(
    page="#111827",
    card="#1f2937",
    text="#f3f4f6",
    muted="#d1d5db",
    link="#93c5fd",
    code="#111827",
    rule="#4b5563",
)


def mail_palette(brand_color: str) -> MailPalette:
    """The light palette with the newsletter's brand colour for its links and kicker."""
    return replace(LIGHT, link=brand_color)


# The tags markdown-it writes for a term's body (raw HTML is off, so there are no others).
_TAG_RE = re.compile(
    r"<(a|p|ul|ol|li|pre|code|blockquote|table|th|td|img|h3|h4|h5|h6|hr)(?=[\s/>])([^>]*)>"
)
_STYLE_RE = re.compile(r'\sstyle="([^"]*)"')


@lru_cache(maxsize=8)
def _prose_styles(palette: MailPalette) -> dict[str, str]:
    heading = "margin:16px 0 8px 0;line-height:1.3;font-weight:700;"
    return {
        "a": f"color:{palette.link};text-decoration:underline;",
        "p": "margin:0 0 12px 0;",
        "ul": "margin:0 0 12px 0;padding:0 0 0 24px;",
        "ol": "margin:0 0 12px 0;padding:0 0 0 24px;",
        "li": "margin:0 0 4px 0;",
        # Wrapped, never wider than the mail: a long line of code must not scroll the page.
        "pre": (
            f"margin:0 0 12px 0;padding:10px 12px;background-color:{palette.code};"
            "border-radius:6px;white-space:pre-wrap;word-break:break-word;"
        ),
        "code": "font-family:Menlo,Consolas,monospace;font-size:14px;",
        "blockquote": (
            f"margin:0 0 12px 0;padding:0 0 0 12px;border-left:3px solid {palette.rule};"
            f"color:{palette.muted};"
        ),
        "table": (
            "display:block;max-width:100%;overflow-x:auto;border-collapse:collapse;"
            "margin:0 0 12px 0;"
        ),
        "th": f"border:1px solid {palette.rule};padding:4px 8px;text-align:left;",
        "td": f"border:1px solid {palette.rule};padding:4px 8px;text-align:left;",
        "img": "max-width:100%;height:auto;",
        "h3": f"font-size:17px;{heading}",
        "h4": f"font-size:16px;{heading}",
        "h5": f"font-size:16px;{heading}",
        "h6": f"font-size:16px;{heading}",
        "hr": f"border:0;border-top:1px solid {palette.rule};margin:16px 0;",
    }


def styled_prose(html: str, palette: MailPalette) -> str:
    """A term section's HTML (markdown-it's, with raw HTML off) with the mail's styles on each
    element. A style markdown-it wrote itself (a table column's alignment) comes after ours,
    so it still wins. Safe on that HTML alone: markdown-it escapes `<`, `>` and `"` in text
    and attribute values, so every `<tag …>` found is a real tag."""
    styles = _prose_styles(palette)

    def add_style(match: re.Match[str]) -> str:
        tag, attrs = match[1], match[2]
        end = " />" if attrs.endswith("/") else ">"  # `<img … />`, `<hr />` (XHTML output)
        attrs = attrs.removesuffix("/").rstrip()
        own = _STYLE_RE.search(attrs)
        if own is None:
            return f'<{tag}{attrs} style="{styles[tag]}"{end}'
        merged = f' style="{styles[tag]}{own[1]}"'
        return f"<{tag}{attrs[: own.start()]}{merged}{attrs[own.end() :]}{end}"

    return _TAG_RE.sub(add_style, html)
