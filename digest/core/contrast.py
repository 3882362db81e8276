"""Colour contrast as WCAG 2.x defines it: CSS colours read, laid over their background, and the
ratio of the two relative luminances, with the minimum WCAG AA asks for a text of a given size.

CSS colour syntax (hex with or without alpha, `rgb()`/`rgba()` as Chromium's computed styles give
them, named colours, `hsl()`, `oklch()`…) and source-over compositing come from ColorAide, which
implements CSS Color 4 and Compositing Level 1 as written. The luminance and the ratio are the
WCAG formulas themselves, with WCAG's constants, so every number this module prints is the one a
WCAG checker (WebAIM's, axe's) shows for the same pair: black on white is exactly 21:1.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from coloraide import Color as _Color

from digest.model import colour as model_colour

__all__ = [
    "AA_LARGE_TEXT",
    "AA_NORMAL_TEXT",
    "WHITE",
    "Colour",
    "composite",
    "contrast_ratio",
    "format_ratio",
    "is_large_text",
    "parse_colour",
    "relative_luminance",
    "required_ratio",
]

# WCAG 2.x success criterion 1.4.3 (Contrast, Minimum), level AA.
AA_NORMAL_TEXT = 4.5
AA_LARGE_TEXT = 3.0
# "Large scale" text: at least 18 point, or 14 point bold (a CSS point is 4/3 px).
_LARGE_PX = 18 * 4 / 3
_LARGE_BOLD_PX = 14 * 4 / 3
_BOLD = 700


@dataclass(frozen=True, slots=True)
class Colour:
    """An sRGB colour, channels and alpha from 0 to 1."""

    red: float
    green: float
    blue: float
    alpha: float = 1.0

    @property
    def opaque(self) -> bool:
        return self.alpha >= 1.0

    @property
    def hex(self) -> str:
        """`#rrggbb`, or `#rrggbbaa` when not opaque: how messages name a colour."""
        channels = [self.red, self.green, self.blue] + ([] if self.opaque else [self.alpha])
        return "#" + "".join(f"{round(c * 255):02x}" for c in channels)

    def with_alpha(self, factor: float) -> Colour:
        """This colour seen through `factor` opacity (CSS `opacity` multiplies alpha)."""
        return Colour(self.red, self.green, self.blue, self.alpha * factor)

    def __str__(self) -> str:
        return self.hex


WHITE = Colour(1.0, 1.0, 1.0)


@functools.lru_cache(maxsize=1024)
def parse_colour(text: str) -> Colour:
    """A CSS colour value as sRGB; ValueError for anything that is not one (`inherit`,
    `currentcolor` and the like are the caller's to resolve). Colours outside sRGB (a wide
    `oklch()`, say) are mapped into it as a screen would show them."""
    value = text.strip()
    if not value:
        raise ValueError("an empty colour")
    try:
        parsed = _Color(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a CSS colour") from None
    srgb = parsed.convert("srgb")
    if not srgb.in_gamut():
        srgb = srgb.fit()
    red, green, blue = (_clamp(c) for c in srgb.coords(nans=False))
    return Colour(red, green, blue, _clamp(srgb.alpha(nans=False)))


def composite(top: Colour, backdrop: Colour) -> Colour:
    """`top` painted over `backdrop` (source-over, in sRGB as browsers blend)."""
    if top.opaque:
        return top
    layered = _Color.layer([_as_coloraide(top), _as_coloraide(backdrop)], space="srgb")
    red, green, blue = (_clamp(c) for c in layered.coords(nans=False))
    return Colour(red, green, blue, _clamp(layered.alpha(nans=False)))


def relative_luminance(colour: Colour) -> float:
    """WCAG 2.x relative luminance of an opaque colour: 0 for black, 1 for white."""
    return model_colour.relative_luminance(colour.red, colour.green, colour.blue)


def contrast_ratio(foreground: Colour, background: Colour) -> float:
    """WCAG contrast ratio, 1 to 21, of a text colour over its background.

    A semi-transparent foreground is first laid over the background, as it is drawn; the
    background itself must be opaque, already laid over whatever is behind it (`composite`).
    """
    if not background.opaque:
        raise ValueError(f"the background {background} is not opaque; composite it first")
    shown = composite(foreground, background)
    return model_colour.luminance_ratio(relative_luminance(shown), relative_luminance(background))


def is_large_text(font_px: float, weight: int) -> bool:
    """WCAG's "large scale" text: 18 pt and up, or 14 pt and up when bold."""
    return font_px >= _LARGE_PX - 0.01 or (weight >= _BOLD and font_px >= _LARGE_BOLD_PX - 0.01)


def required_ratio(font_px: float, weight: int = 400) -> float:
    """The least contrast WCAG AA allows for text of this size and weight."""
    return AA_LARGE_TEXT if is_large_text(font_px, weight) else AA_NORMAL_TEXT


def format_ratio(ratio: float) -> str:
    """`4.39:1`, cut rather than rounded: WCAG does not round, and a 4.497 shown as 4.50 would
    read as a pass in a failure message."""
    return f"{math.floor(ratio * 100) / 100:.2f}:1"


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


def _as_coloraide(colour: Colour) -> _Color:
    return _Color("srgb", [colour.red, colour.green, colour.blue], colour.alpha)
