"""The colour every text of an HTML mail is shown in, and on, and the texts under WCAG's minimum.

A mail is read as the plainest client shows it: inline `style` attributes and the old colour
attributes (`bgcolor`, `<font color>`) only, `<style>` blocks stripped (some clients strip
them; MJML puts what matters inline), images off (the default in many clients, so a background
image's fallback colour is what shows). Text colours are inherited down the tree, backgrounds are
those of the nearest ancestors, laid over each other when translucent. What the full CSS does —
`<style>` rules, dark mode — is checked in a real browser by the tests (tests/page_checks.py).
HTML is read with the stdlib's tokenizer into a small tree; CSS declarations with tinycss2.
"""

from __future__ import annotations

import functools
from collections.abc import Set
from dataclasses import dataclass, replace
from html.parser import HTMLParser

import tinycss2

from digest.core.contrast import (
    WHITE,
    Colour,
    composite,
    contrast_ratio,
    format_ratio,
    parse_colour,
    required_ratio,
)

__all__ = ["Shortfall", "ShownText", "shortfalls", "shown_texts"]

_BLACK = Colour(0.0, 0.0, 0.0)
# What a browser gives an unvisited link that sets no colour of its own (Chromium's -webkit-link).
_LINK = Colour(0.0, 0.0, 0xEE / 255)
_VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
    "source", "track", "wbr",
})  # fmt: skip
_NOT_SHOWN = frozenset({"head", "title", "style", "script", "template", "svg", "math"})
_BOLD_TAGS = frozenset({"b", "strong", "th", "h1", "h2", "h3", "h4", "h5", "h6"})
_EM_BY_TAG = {"h1": 2.0, "h2": 1.5, "h3": 1.17, "h5": 0.83, "h6": 0.67, "small": 0.83}
_SIZE_KEYWORDS = {
    "xx-small": 9.0, "x-small": 10.0, "small": 13.0, "medium": 16.0,
    "large": 18.0, "x-large": 24.0, "xx-large": 32.0, "xxx-large": 48.0,
}  # fmt: skip
_BGCOLOR_TAGS = frozenset({"body", "table", "tr", "td", "th"})
# HTML's implied end tags, as far as a mail needs them: a start tag closes the nearest open
# element of the first set, unless one of the second set (its scope) comes first.
_SCOPE = frozenset({"html", "table", "td", "th", "caption", "button", "template", "object"})
_IMPLIED_END: dict[str, tuple[Set[str], Set[str]]] = {
    "li": ({"li"}, _SCOPE | {"ul", "ol"}),
    "dt": ({"dt", "dd"}, _SCOPE | {"dl"}),
    "dd": ({"dt", "dd"}, _SCOPE | {"dl"}),
    "td": ({"td", "th"}, {"html", "table", "tr"}),
    "th": ({"td", "th"}, {"html", "table", "tr"}),
    "tr": ({"tr"}, {"html", "table", "thead", "tbody", "tfoot"}),
    "option": ({"option"}, {"html", "select"}),
}
_CLOSES_P = frozenset({
    "address", "article", "aside", "blockquote", "div", "dl", "fieldset", "footer", "form",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p", "pre",
    "section", "table", "ul",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Style:
    """What an element passes down to its text and children."""

    colour: Colour = _BLACK
    colour_from: str = "no colour set (the client's black)"
    background: Colour = WHITE
    background_from: str = "no background set (the client's white)"
    font_px: float = 16.0
    weight: int = 400
    opacity: float = 1.0
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class ShownText:
    """One run of text as the reader sees it."""

    text: str
    colour: Colour  # as painted: opacity applied, may be translucent
    background: Colour  # opaque
    font_px: float
    weight: int
    element: str  # a short CSS-like path to the element holding the text
    colour_from: str
    background_from: str

    @property
    def ratio(self) -> float:
        return contrast_ratio(self.colour, self.background)

    @property
    def required(self) -> float:
        return required_ratio(self.font_px, self.weight)


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Texts in one colour pair, at one size, under the contrast WCAG AA asks for them."""

    texts: tuple[ShownText, ...]

    @property
    def ratio(self) -> float:
        return self.texts[0].ratio

    @property
    def required(self) -> float:
        return self.texts[0].required

    def __str__(self) -> str:
        first = self.texts[0]
        shown = _quote(first.text)
        if len(self.texts) > 1:
            others = len(self.texts) - 1
            shown += f" and {others} other text{'s' * (others != 1)}"
        size = f"{first.font_px:g}px{' bold' if first.weight >= 700 else ''}"
        return (
            f"{first.colour} on {first.background} is {format_ratio(self.ratio)}, under the "
            f"{self.required:g}:1 WCAG AA asks for {size} text: {shown} (colour from "
            f"{first.colour_from}, background from {first.background_from}, in {first.element})"
        )


def shown_texts(html: str) -> list[ShownText]:
    """Every visible, non-blank run of text in `html`, with the colours it is shown in."""
    tree = _Tree()
    tree.feed(html)
    tree.close()
    return tree.texts


def shortfalls(html: str) -> list[Shortfall]:
    """The texts of `html` under WCAG AA's contrast minimum for their size, grouped by colour
    pair and size (one fix each), lowest contrast first."""
    groups: dict[tuple[str, str, float, int, str, str], list[ShownText]] = {}
    for shown in shown_texts(html):
        if shown.ratio < shown.required:
            key = (
                shown.colour.hex, shown.background.hex, shown.font_px, shown.weight,
                shown.colour_from, shown.background_from,
            )  # fmt: skip
            groups.setdefault(key, []).append(shown)
    found = [Shortfall(tuple(texts)) for texts in groups.values()]
    return sorted(found, key=lambda s: s.ratio)


# --------------------------------------------------------------------------- the tree


@dataclass(slots=True)
class _Open:
    tag: str
    label: str  # tag.class, for paths
    style: _Style
    serial: int  # which element this is, for joining its text


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[ShownText] = []
        self._stack: list[_Open] = []
        # Where each open element's text went: its pieces around child elements join up.
        self._text_of: dict[int, int] = {}
        self._serials = 0

    def _style(self) -> _Style:
        return self._stack[-1].style if self._stack else _Style()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._close_implied(tag)
        if tag in _VOID:
            return
        values = {name: (value or "") for name, value in attrs}
        classes = values.get("class", "").split()
        label = tag + "".join(f".{c}" for c in classes[:1])
        style = _element_style(tag, values, self._style())
        self._serials += 1
        self._stack.append(_Open(tag, label, style, self._serials))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._close_implied(tag)  # an empty element: nothing inside it to show

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._stack) - 1, -1, -1):
            if self._stack[depth].tag == tag:
                del self._stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        style = self._style()
        # MJML sets `font-size:0` on table cells to swallow the whitespace between them; their
        # children set a size again, so a size of 0 hides only the text directly inside.
        if not text or style.hidden or style.font_px <= 0:
            return
        holder = self._stack[-1].serial if self._stack else 0
        if holder in self._text_of:
            index = self._text_of[holder]
            self.texts[index] = replace(self.texts[index], text=f"{self.texts[index].text} {text}")
            return
        self._text_of[holder] = len(self.texts)
        self.texts.append(
            ShownText(
                text=text,
                colour=style.colour.with_alpha(style.opacity),
                background=style.background,
                font_px=style.font_px,
                weight=style.weight,
                element=" > ".join(o.label for o in self._stack[-3:]),
                colour_from=style.colour_from,
                background_from=style.background_from,
            )
        )

    def _close_implied(self, tag: str) -> None:
        if tag in _CLOSES_P:
            self._close_nearest({"p"}, _SCOPE)
        if tag in _IMPLIED_END:
            closes, scope = _IMPLIED_END[tag]
            self._close_nearest(closes, scope)

    def _close_nearest(self, closes: Set[str], scope: Set[str]) -> None:
        for depth in range(len(self._stack) - 1, -1, -1):
            tag = self._stack[depth].tag
            if tag in closes:
                del self._stack[depth:]
                return
            if tag in scope:
                return


# --------------------------------------------------------------------------- styles


def _element_style(tag: str, attrs: dict[str, str], parent: _Style) -> _Style:
    style = parent
    if tag in _NOT_SHOWN or "hidden" in attrs:
        return replace(style, hidden=True)
    if tag in _BOLD_TAGS:
        style = replace(style, weight=max(700, style.weight))
    if tag in _EM_BY_TAG:
        style = replace(style, font_px=parent.font_px * _EM_BY_TAG[tag])
    if tag == "a" and "href" in attrs:
        style = replace(style, colour=_LINK, colour_from="<a> with no colour (the link blue)")
    if tag == "mark":
        style = replace(style, colour=_BLACK, colour_from="<mark>")
        style = _over(style, parse_colour("yellow"), "<mark>")
    # Presentational attributes first: an inline style overrides them.
    if tag in _BGCOLOR_TAGS and (bg := _legacy_colour(attrs.get("bgcolor", ""))) is not None:
        style = _over(style, bg, f"<{tag} bgcolor>")
    if tag == "font" and (fg := _legacy_colour(attrs.get("color", ""))) is not None:
        style = replace(style, colour=fg, colour_from="<font color>")
    if tag == "body" and (fg := _legacy_colour(attrs.get("text", ""))) is not None:
        style = replace(style, colour=fg, colour_from="<body text>")
    declarations = dict(_declarations(attrs.get("style", "")))
    return _apply(tag, declarations, parent, style)


def _apply(tag: str, declared: dict[str, str], parent: _Style, style: _Style) -> _Style:
    where = f"<{tag} style>"
    if "font-size" in declared:
        size = _font_px(declared["font-size"], parent.font_px)
        if size is not None:
            style = replace(style, font_px=size)
    if "font-weight" in declared:
        style = replace(style, weight=_weight(declared["font-weight"], parent.weight))
    if "color" in declared:
        value = declared["color"].lower()
        if value in ("inherit", "currentcolor", "unset"):
            style = replace(style, colour=parent.colour, colour_from=parent.colour_from)
        elif (fg := _css_colour(value)) is not None:
            style = replace(style, colour=fg, colour_from=where)
    background = None
    if "background" in declared:
        background = _background_shorthand(declared["background"])
    if "background-color" in declared:
        background = _css_colour(declared["background-color"]) or background
    opacity = _opacity(declared.get("opacity"))
    style = replace(style, opacity=style.opacity * opacity)
    if background is not None:
        style = _over(style, background, where)
    if _hides(declared, style):
        style = replace(style, hidden=True)
    return style


def _over(style: _Style, background: Colour, where: str) -> _Style:
    """`style` with `background` laid over the one it had (at the element's opacity)."""
    if background.alpha <= 0:
        return style
    laid = composite(background.with_alpha(style.opacity), style.background)
    return replace(style, background=laid, background_from=where)


def _hides(declared: dict[str, str], style: _Style) -> bool:
    if declared.get("display", "").lower() == "none":
        return True
    if declared.get("visibility", "").lower() in ("hidden", "collapse"):
        return True
    if style.opacity <= 0:
        return True
    # The preheader trick: a box of no height that hides what overflows it.
    no_height = _font_px(declared.get("max-height", "none"), style.font_px) == 0
    return no_height and declared.get("overflow", "").lower() in ("hidden", "clip")


@functools.lru_cache(maxsize=1024)
def _declarations(style: str) -> tuple[tuple[str, str], ...]:
    """(property, value) of an inline style, in order, so the last one of a name wins. Cached:
    MJML writes the same few styles on hundreds of elements."""
    nodes = tinycss2.parse_blocks_contents(style, skip_comments=True, skip_whitespace=True)
    return tuple(
        (node.lower_name, tinycss2.serialize(node.value).strip())
        for node in nodes
        if node.type == "declaration"
    )


def _css_colour(value: str) -> Colour | None:
    try:
        return parse_colour(value)
    except ValueError:
        return None  # a browser drops a declaration it cannot read


def _legacy_colour(value: str) -> Colour | None:
    """An HTML colour attribute: a CSS colour, or hex digits without their `#`."""
    value = value.strip()
    if not value:
        return None
    colour = _css_colour(value)
    if (
        colour is None
        and len(value) in (3, 6)
        and all(c in "0123456789abcdefABCDEF" for c in value)
    ):
        colour = _css_colour(f"#{value}")
    return colour


def _background_shorthand(value: str) -> Colour | None:
    """The colour layer of `background: …`; a shorthand without one sets it transparent."""
    for token in tinycss2.parse_component_value_list(value, skip_comments=True):
        if token.type in ("whitespace", "literal"):
            continue
        colour = _css_colour(tinycss2.serialize([token]))
        if colour is not None:
            return colour
    return Colour(0.0, 0.0, 0.0, 0.0)


def _font_px(value: str, parent_px: float) -> float | None:
    value = value.strip().lower()
    if value in _SIZE_KEYWORDS:
        return _SIZE_KEYWORDS[value]
    if value == "smaller":
        return parent_px / 1.2
    if value == "larger":
        return parent_px * 1.2
    token = tinycss2.parse_one_component_value(value, skip_comments=True)
    if token.type == "number" and token.value == 0:
        return 0.0
    if token.type == "percentage":
        return parent_px * float(token.value) / 100
    if token.type == "dimension":
        factor = {"px": 1.0, "pt": 4 / 3, "em": parent_px, "rem": 16.0, "pc": 16.0}
        if token.lower_unit in factor:
            return float(token.value) * factor[token.lower_unit]
    return None


def _weight(value: str, parent: int) -> int:
    value = value.strip().lower()
    named = {"normal": 400, "bold": 700, "bolder": max(700, parent + 300), "lighter": 400}
    if value in named:
        return min(900, named[value])
    return int(float(value)) if value.replace(".", "", 1).isdigit() else parent


def _opacity(value: str | None) -> float:
    if value is None:
        return 1.0
    value = value.strip()
    try:
        amount = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        return 1.0
    return min(1.0, max(0.0, amount))


def _quote(text: str, limit: int = 48) -> str:
    return f'"{text if len(text) <= limit else text[: limit - 1].rstrip() + "…"}"'
