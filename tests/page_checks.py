"""What a reader's page must be in a real browser, at any width and in light or dark: no sideways
scroll, a `lang`, alt text on every image, and every visible text at WCAG AA contrast against the
background it is drawn on.

Chromium computes the styles (every `<style>` rule, media queries, dark mode, inheritance); one
script per page reads, for each visible text node and each form control's text, its painted
colour, the backgrounds of its ancestors up to the first opaque one, the canvas, its size and
weight. The maths is digest.core.contrast's, so the browser and `digest check` agree on every
number. Used by tests/test_layout_browser.py; a new page is one `ReaderPage` there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from playwright.sync_api import Browser, Page

from digest.core.contrast import Colour, composite, contrast_ratio, format_ratio, parse_colour
from digest.core.contrast import required_ratio as wcag_minimum

__all__ = [
    "SCHEMES",
    "WIDTHS",
    "ReaderPage",
    "SeenText",
    "View",
    "alt_problems",
    "contrast_problems",
    "lang_problems",
    "look",
    "open_views",
    "overflow_problems",
    "with_widths",
]

# A small phone, a common phone, a mail client's column, a desktop.
WIDTHS = (320, 375, 600, 1280)
Scheme = Literal["light", "dark"]
SCHEMES: tuple[Scheme, ...] = ("light", "dark")

# One pass over the rendered page. Colours are sent back as the computed style gives them and
# read in Python (digest.core.contrast), so no colour maths lives in JavaScript.
_LOOK = r"""
() => {
  const root = document.documentElement;
  const label = (e) => {
    let s = e.tagName.toLowerCase();
    if (e.id) s += '#' + e.id;
    else if (e.classList && e.classList.length) s += '.' + e.classList[0];
    return s;
  };
  const path = (e) => {
    const parts = [];
    for (let a = e; a && a !== root && parts.length < 3; a = a.parentElement) parts.unshift(label(a));
    return parts.join(' > ') || label(e);
  };
  const alphaOf = (c) => {
    if (c === 'transparent') return 0;
    const legacy = c.match(/^rgba\([^)]*,\s*([\d.]+)\)$/);
    if (legacy) return parseFloat(legacy[1]);
    const modern = c.match(/\/\s*([\d.]+)(%?)\s*\)$/);
    if (modern) return parseFloat(modern[1]) / (modern[2] ? 100 : 1);
    return 1;
  };
  // The canvas behind the root, in the root's colour scheme.
  const probe = document.createElement('div');
  probe.style.cssText = 'position:absolute;width:0;height:0;background-color:Canvas';
  root.appendChild(probe);
  const canvas = getComputedStyle(probe).backgroundColor;
  probe.remove();

  const drawnOn = (el) => {
    const backgrounds = [];
    let opacity = 1;
    for (let a = el; a; a = a.parentElement) {
      const s = getComputedStyle(a);
      opacity *= parseFloat(s.opacity);
      const bg = s.backgroundColor;
      if (alphaOf(bg) > 0) backgrounds.push([bg, label(a)]);
      if (alphaOf(bg) >= 1) break;
    }
    return {backgrounds, opacity};
  };
  // Text a sighted reader cannot see: clipped to (almost) nothing by an ancestor.
  const clippedAway = (el, box) => {
    for (let a = el; a && a !== root; a = a.parentElement) {
      const s = getComputedStyle(a);
      const clips = ['hidden', 'clip'].includes(s.overflowX) || ['hidden', 'clip'].includes(s.overflowY)
        || (s.clip && s.clip !== 'auto') || s.clipPath !== 'none';
      if (!clips) continue;
      const r = a.getBoundingClientRect();
      const w = Math.min(box.right, r.right) - Math.max(box.left, r.left);
      const h = Math.min(box.bottom, r.bottom) - Math.max(box.top, r.top);
      if (w <= 1 || h <= 1 || (s.clip && s.clip.replace(/[\s,]/g, '') === 'rect(0px0px0px0px)')) return true;
    }
    return false;
  };
  const shown = (el) => el.checkVisibility({opacityProperty: true, visibilityProperty: true});
  const entry = (el, text, colour, kind) => {
    const s = getComputedStyle(el);
    return {text, colour, kind, path: path(el), font_px: parseFloat(s.fontSize),
            weight: parseInt(s.fontWeight, 10) || 400, canvas, ...drawnOn(el)};
  };

  const texts = [];
  const byElement = new Map();
  const skip = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'TITLE', 'OPTION', 'OPTGROUP',
                        'TEXTAREA', 'SELECT']);
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.nodeValue.replace(/\s+/g, ' ').trim();
    const el = node.parentElement;
    if (!text || !el || skip.has(el.tagName) || el instanceof SVGElement || !shown(el)) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    const rects = [...range.getClientRects()].filter((r) => r.width > 0 && r.height > 0);
    if (!rects.length) continue;
    const box = {left: Math.min(...rects.map((r) => r.left)), right: Math.max(...rects.map((r) => r.right)),
                 top: Math.min(...rects.map((r) => r.top)), bottom: Math.max(...rects.map((r) => r.bottom))};
    if (clippedAway(el, box)) continue;
    if (byElement.has(el)) { texts[byElement.get(el)].text += ' ' + text; continue; }
    byElement.set(el, texts.length);
    const s = getComputedStyle(el);
    texts.push(entry(el, text, s.webkitTextFillColor || s.color, 'text'));
  }
  const noText = new Set(['hidden', 'checkbox', 'radio', 'range', 'color', 'file', 'image']);
  for (const c of document.querySelectorAll('input, select, textarea')) {
    if ((c.type && noText.has(c.type)) || !shown(c)) continue;
    let text = c.tagName === 'SELECT' ? (c.selectedOptions[0] || {}).text : c.value;
    let colour = getComputedStyle(c).color, kind = 'control';
    if (!text && c.placeholder) {
      text = c.placeholder;
      colour = getComputedStyle(c, '::placeholder').color;
      kind = 'placeholder';
    }
    if (text && text.trim()) texts.push(entry(c, text.trim(), colour, kind));
  }

  const decorative = (img) => ['presentation', 'none'].includes((img.getAttribute('role') || '').trim().toLowerCase())
    || (img.getAttribute('aria-hidden') || '').trim().toLowerCase() === 'true';
  const withoutAlt = [...document.querySelectorAll('img, input[type=image]')]
    .filter((img) => !(img.getAttribute('alt') || '').trim() && !(img.hasAttribute('alt') && decorative(img)))
    .map((img) => `${path(img)} src=${JSON.stringify(img.getAttribute('src') || '')}`
                  + (img.hasAttribute('alt') ? ' (alt is empty)' : ' (no alt)'));

  const scroller = document.scrollingElement || root;
  const over = [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > innerWidth + 0.5);
  const sticking = over.filter((e) => ![...e.children].some((c) => over.includes(c)))
    .slice(0, 5).map((e) => `${path(e)} reaches ${Math.round(e.getBoundingClientRect().right)}px`);

  return {scroll_width: scroller.scrollWidth, inner_width: innerWidth, sticking_out: sticking,
          lang: (root.getAttribute('lang') || root.getAttribute('xml:lang') || '').trim(),
          images_without_alt: withoutAlt, texts};
}
"""


@dataclass(frozen=True, slots=True)
class ReaderPage:
    """A page readers see: a `path` on the served app (`{name}` parts are filled from the test's
    links, tokens and the like), or `content`, the key of an HTML document loaded as a page
    with the network off, as a mail client shows a mail."""

    name: str
    path: str | None = None
    content: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.content is None):
            raise ValueError(f"{self.name}: give a path or a content, not both or neither")


@dataclass(frozen=True, slots=True)
class SeenText:
    """A visible text as Chromium draws it."""

    text: str
    colour: str  # computed, as Chromium writes it
    opacity: float  # the element's and its ancestors' up to its background
    backgrounds: tuple[tuple[str, str], ...]  # (colour, element), innermost first
    canvas: str
    font_px: float
    weight: int
    path: str
    kind: str  # "text", "control" (a field's value) or "placeholder"

    def painted(self) -> tuple[Colour, Colour]:
        """(text colour, opaque background) as drawn: the backgrounds laid from the canvas up."""
        background = parse_colour(self.canvas)
        for colour, _where in reversed(self.backgrounds):
            background = composite(parse_colour(colour), background)
        return parse_colour(self.colour).with_alpha(self.opacity), background

    @property
    def background_from(self) -> str:
        return self.backgrounds[0][1] if self.backgrounds else "the canvas"


@dataclass(frozen=True, slots=True)
class View:
    """One page at one width in one colour scheme, as Chromium laid it out."""

    page: str
    width: int
    scheme: Scheme
    scroll_width: int
    inner_width: int
    sticking_out: tuple[str, ...]
    lang: str
    images_without_alt: tuple[str, ...]
    texts: tuple[SeenText, ...]

    @property
    def where(self) -> str:
        return f"{self.page} at {self.width}px, {self.scheme}"


def look(page: Page, name: str, width: int, scheme: Scheme) -> View:
    """What the page loaded in `page` shows."""
    seen: dict[str, Any] = page.evaluate(_LOOK)
    texts = tuple(
        SeenText(
            text=t["text"],
            colour=t["colour"],
            opacity=float(t["opacity"]),
            backgrounds=tuple((bg, where) for bg, where in t["backgrounds"]),
            canvas=t["canvas"],
            font_px=float(t["font_px"]),
            weight=int(t["weight"]),
            path=t["path"],
            kind=t["kind"],
        )
        for t in seen["texts"]
    )
    return View(
        page=name,
        width=width,
        scheme=scheme,
        scroll_width=int(seen["scroll_width"]),
        inner_width=int(seen["inner_width"]),
        sticking_out=tuple(seen["sticking_out"]),
        lang=seen["lang"],
        images_without_alt=tuple(seen["images_without_alt"]),
        texts=texts,
    )


def open_views(
    browser: Browser,
    reader_page: ReaderPage,
    scheme: Scheme,
    *,
    widths: Iterable[int] = WIDTHS,
    base_url: str,
    links: Mapping[str, str],
    contents: Mapping[str, str],
) -> list[View]:
    """`reader_page` opened once in `scheme` and looked at in a window of each of `widths`
    (resized, as a reader turns a phone or drags a window: CSS lays it out anew)."""
    widths = list(widths)
    context = browser.new_context(viewport={"width": widths[0], "height": 800})
    try:
        page = context.new_page()
        page.emulate_media(color_scheme=scheme)
        if reader_page.path is not None:
            response = page.goto(base_url + reader_page.path.format(**links))
            status = response.status if response is not None else 0
            if status != 200:
                raise AssertionError(f"{reader_page.name}: {reader_page.path} answered {status}")
        else:
            assert reader_page.content is not None
            page.route("**/*", lambda route: route.abort())  # a mail client loads nothing
            page.set_content(contents[reader_page.content], wait_until="load")
        views = []
        for width in widths:
            page.set_viewport_size({"width": width, "height": 800})
            views.append(look(page, reader_page.name, width, scheme))
        return views
    finally:
        context.close()


# --------------------------------------------------------------------------- what is wrong


def overflow_problems(view: View) -> list[str]:
    """The page scrolls sideways: wider than the window, with what sticks out."""
    if view.scroll_width <= view.inner_width:
        return []
    culprits = "; ".join(view.sticking_out) or "nothing found that sticks out"
    return [
        f"{view.where}: scrolls sideways: {view.scroll_width}px wide in a {view.inner_width}px "
        f"window ({culprits})"
    ]


def lang_problems(view: View) -> list[str]:
    return [] if view.lang else [f"{view.where}: <html> has no lang"]


def alt_problems(view: View) -> list[str]:
    return [f"{view.where}: image without alt text: {image}" for image in view.images_without_alt]


def contrast_problems(view: View) -> list[str]:
    """Every visible text under its WCAG AA minimum, one line per element."""
    problems: list[str] = []
    for seen in view.texts:
        colour, background = seen.painted()
        ratio = contrast_ratio(colour, background)
        needed = wcag_minimum(seen.font_px, seen.weight)
        if ratio < needed:
            what = {"text": "", "control": " (a field's text)", "placeholder": " (a placeholder)"}
            text = seen.text if len(seen.text) <= 48 else seen.text[:47].rstrip() + "…"
            problems.append(
                f'{view.where}: "{text}"{what[seen.kind]} is {colour} on {background}: '
                f"{format_ratio(ratio)}, under the {needed:g}:1 WCAG AA asks for "
                f"{seen.font_px:g}px{' bold' if seen.weight >= 700 else ''} text "
                f"(at {seen.path}; background from {seen.background_from})"
            )
    return problems


def with_widths(problems: Iterable[str]) -> list[str]:
    """The same problem at several widths said once, with the widths: `… (at 320, 375px)`.

    Each problem starts with `View.where`; lines equal but for the width merge."""
    merged: dict[str, list[str]] = {}
    for problem in problems:
        head, _, rest = problem.partition(": ")
        name, _, at = head.rpartition(" at ")
        width, _, scheme = at.partition(", ")
        merged.setdefault(f"{name}, {scheme}: {rest}", []).append(width)
    return [
        f"{key} (at {', '.join(w.removesuffix('px') for w in widths)}px)"
        for key, widths in merged.items()
    ]
