"""digest.core.contrast: CSS colours read as a browser reads them, and WCAG 2.x's contrast maths,
checked against values WCAG and WebAIM's checker publish."""

from __future__ import annotations

import pytest

from digest.core.contrast import (
    AA_LARGE_TEXT,
    AA_NORMAL_TEXT,
    WHITE,
    Colour,
    composite,
    contrast_ratio,
    format_ratio,
    is_large_text,
    parse_colour,
    relative_luminance,
    required_ratio,
)


def ratio(foreground: str, background: str) -> float:
    return contrast_ratio(parse_colour(foreground), parse_colour(background))


# --------------------------------------------------------------------------- the maths


@pytest.mark.parametrize(
    ("foreground", "background", "expected"),
    [
        ("#000", "#fff", 21.0),
        ("#fff", "#fff", 1.0),
        ("#777", "#fff", 4.48),  # the classic "just too light" grey
        ("#767676", "#fff", 4.54),  # the lightest grey that passes on white
        ("#6b7280", "#f3f4f6", 4.39),  # digest's old footer (issue 19)
        ("#6b7280", "#fff", 4.83),
        ("#1d4ed8", "#fff", 6.70),
        ("#fff", "#1d4ed8", 6.70),  # the ratio does not care which is which
        ("#f00", "#fff", 4.00),  # 3.998: WebAIM shows 3.99, cut
        ("#0000ee", "#fff", 9.40),  # a browser's default link blue
    ],
)
def test_contrast_ratios_match_wcag_checkers(foreground, background, expected):
    assert ratio(foreground, background) == pytest.approx(expected, abs=0.005)


def test_black_on_white_is_exactly_21():
    assert ratio("black", "white") == 21.0


def test_relative_luminance_uses_wcag_constants():
    assert relative_luminance(parse_colour("#000")) == 0.0
    assert relative_luminance(parse_colour("#fff")) == pytest.approx(1.0)
    assert relative_luminance(parse_colour("#f00")) == pytest.approx(0.2126)
    assert relative_luminance(parse_colour("#0f0")) == pytest.approx(0.7152)
    assert relative_luminance(parse_colour("#00f")) == pytest.approx(0.0722)
    # Below WCAG's 0.03928 a channel is linear: 10/255 / 12.92.
    assert relative_luminance(parse_colour("#0a0a0a")) == pytest.approx(10 / 255 / 12.92)


def test_a_ratio_is_cut_not_rounded_in_messages():
    assert format_ratio(4.4999) == "4.49:1"
    assert format_ratio(21.0) == "21.00:1"
    assert format_ratio(ratio("#6b7280", "#f3f4f6")) == "4.39:1"


# --------------------------------------------------------------------------- reading colours


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#fff", "#ffffff"),
        ("#6B7280", "#6b7280"),
        ("#1d4ed880", "#1d4ed880"),
        ("#0008", "#00000088"),
        ("rgb(31, 41, 51)", "#1f2933"),  # Chromium's computed style
        ("rgba(0, 0, 0, 0.5)", "#00000080"),
        ("rgba(0, 0, 0, 0)", "#00000000"),
        ("rgb(31 41 51 / 25%)", "#1f293340"),
        ("rebeccapurple", "#663399"),
        ("White", "#ffffff"),
        ("transparent", "#00000000"),
        ("hsl(0 100% 50%)", "#ff0000"),
        ("color(srgb 1 0 0)", "#ff0000"),
    ],
)
def test_css_colours_parse_as_browsers_give_them(text, expected):
    assert parse_colour(text).hex == expected


def test_a_colour_outside_srgb_is_mapped_into_it():
    wide = parse_colour("oklch(0.7 0.4 150)")
    assert all(0.0 <= c <= 1.0 for c in (wide.red, wide.green, wide.blue))


@pytest.mark.parametrize("text", ["", "inherit", "currentcolor", "#12", "rgb(1, 2)", "blurple"])
def test_what_is_not_a_colour_is_refused(text):
    with pytest.raises(ValueError):
        parse_colour(text)


# --------------------------------------------------------------------------- compositing


def test_a_translucent_colour_is_laid_over_its_background():
    assert composite(parse_colour("rgba(0, 0, 0, 0.5)"), WHITE).hex == "#808080"
    assert composite(parse_colour("rgba(255, 0, 0, 0.5)"), parse_colour("#00f")).hex == "#800080"
    assert composite(parse_colour("transparent"), parse_colour("#123456")).hex == "#123456"
    assert composite(parse_colour("#abcdef"), WHITE).hex == "#abcdef"  # opaque: unchanged


def test_a_translucent_background_is_laid_over_the_one_behind_it():
    laid = composite(parse_colour("rgba(255, 255, 255, 0.5)"), parse_colour("rgba(0, 0, 0, 0.5)"))
    assert laid.alpha == pytest.approx(0.75)


def test_a_translucent_text_colour_counts_as_painted():
    # Half-transparent black on white is painted mid grey: 3.98:1, not 21:1.
    grey = Colour(0.5, 0.5, 0.5)
    assert ratio("rgba(0, 0, 0, 0.5)", "#fff") == pytest.approx(contrast_ratio(grey, WHITE))
    assert ratio("rgba(0, 0, 0, 0.5)", "#fff") == pytest.approx(3.98, abs=0.005)


def test_opacity_fades_a_colour():
    faded = parse_colour("#000").with_alpha(0.5)
    assert faded == Colour(0.0, 0.0, 0.0, 0.5)
    assert contrast_ratio(faded, WHITE) == pytest.approx(ratio("rgba(0, 0, 0, 0.5)", "#fff"))


def test_a_translucent_background_must_be_laid_first():
    with pytest.raises(ValueError, match="not opaque"):
        contrast_ratio(parse_colour("#000"), parse_colour("rgba(255, 255, 255, 0.5)"))


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("px", "weight", "large"),
    [
        (16, 400, False),
        (23.9, 400, False),
        (24, 400, True),  # 18 pt
        (18.67, 700, True),  # 14 pt bold
        (18.67, 600, False),
        (18, 700, False),
        (28, 400, True),
    ],
)
def test_large_text_is_18pt_or_14pt_bold(px, weight, large):
    assert is_large_text(px, weight) is large
    assert required_ratio(px, weight) == (AA_LARGE_TEXT if large else AA_NORMAL_TEXT)
