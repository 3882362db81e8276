"""The rendered mail and archive page in headless Chromium: no sideways scrolling on a phone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from digest.core.render import render_issue
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_render import settings_for, snapshot_of, tricky_glossary

pytestmark = pytest.mark.browser

WIDTHS = [375, 600]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def overflow(browser, html: str, width: int) -> tuple[int, int]:
    """(document scroll width, viewport width) with `html` loaded offline at `width` pixels."""
    page = browser.new_page(viewport={"width": width, "height": 800})
    try:
        # Mail clients load nothing remote by default; neither does this test.
        page.route("**/*", lambda route: route.abort())
        page.set_content(html, wait_until="load")
        return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    finally:
        page.close()


@pytest.fixture(scope="module")
def issues(tmp_path_factory):
    """The starter glossary's first issues, and the tricky term (long URL, code, table)."""
    from digest.store.terms import load_glossary
    from tests.conftest import STARTER_TERMS, term_text

    settings = settings_for()
    starter = load_glossary(STARTER_TERMS)
    rendered = [
        render_issue(snapshot_of(starter, slug, settings), settings) for slug in starter.slugs[:3]
    ]

    folder = tmp_path_factory.mktemp("terms")
    wide = (
        "## Why it matters\n\nA long unbreakable word: "
        + "Donaudampfschifffahrtsgesellschaftskapitän" * 3
        + "\n\n## How it works\n\n| column one | column two | column three | column four |\n"
        "|---|---|---|---|\n| a rather long cell | another long cell | and more text | end |\n\n"
        "## Example\n\n```\n"
        + "x = some_function_with_a_very_long_name(argument_one, argument_two)\n"
        "```\n"
    )
    (folder / "wide.md").write_text(term_text("Wide", related=["other"], body=wide))
    (folder / "other.md").write_text(term_text("Other", related=["wide"]))
    from digest.store.terms import load_glossary as load

    tricky = load(folder)
    rendered.append(render_issue(snapshot_of(tricky, "wide", settings), settings))
    return rendered


@pytest.mark.parametrize("width", WIDTHS)
def test_mail_has_no_horizontal_overflow(browser, issues, width):
    for rendered in issues:
        scroll_width, inner_width = overflow(browser, rendered.html, width)
        assert scroll_width <= inner_width, (rendered.subject, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_archive_page_has_no_horizontal_overflow(browser, issues, width):
    for rendered in issues:
        scroll_width, inner_width = overflow(browser, rendered.archive_html, width)
        assert scroll_width <= inner_width, (rendered.subject, width)


def test_tricky_content_renders_as_text_in_the_browser(browser, make_terms):
    settings = settings_for()
    rendered = render_issue(snapshot_of(tricky_glossary(make_terms), "cafe", settings), settings)
    page = browser.new_page(viewport={"width": 600, "height": 800})
    try:
        page.route("**/*", lambda route: route.abort())
        page.set_content(rendered.html, wait_until="load")
        assert page.evaluate("document.scripts.length") == 0
        heading = page.locator("h1").inner_text()
        assert heading == 'Café <script>alert("t")</script> & Co'
        assert page.evaluate("document.documentElement.lang") == "en"
    finally:
        page.close()
