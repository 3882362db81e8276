"""WCAG 2.x luminance and contrast: the one formula the settings (a brand colour) and the
checks (every text of the mail and pages, digest.core.contrast) both judge colours by.

Model-level, below the settings, because a brand colour is refused when settings are read.
"""

from __future__ import annotations

__all__ = ["luminance_ratio", "relative_luminance"]


def _linear(channel: float) -> float:
    """An sRGB channel (0–1) as linear light, with WCAG 2.x's own threshold (0.03928; sRGB's
    0.04045 gives the same result for 8-bit values)."""
    return channel / 12.92 if channel <= 0.03928 else ((channel + 0.055) / 1.055) ** 2.4


def relative_luminance(red: float, green: float, blue: float) -> float:
    """WCAG relative luminance of an opaque sRGB colour (channels 0–1): 0 black, 1 white."""
    return 0.2126 * _linear(red) + 0.7152 * _linear(green) + 0.0722 * _linear(blue)


def luminance_ratio(one: float, other: float) -> float:
    """The contrast ratio, 1 to 21, of two relative luminances, whichever is lighter."""
    return (max(one, other) + 0.05) / (min(one, other) + 0.05)
