"""The glossary site in headless Chromium: no sideways scrolling on a phone or a desktop, the
search filtering the list as one types (its script allowed by the page's CSP), and the whole
list without JavaScript.

The real app runs under uvicorn in a thread (tests/browser.py). The pages read no database, so
these run on SQLite only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from digest.config import Settings, get_settings
from tests.browser import CHROMIUM, CHROMIUM_ARGS, serving
from tests.conftest import term_text

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

WIDTHS = (320, 375, 1280)
LONG_WORD = "Supercalifragilisticexpialidociousneuralnetworkarchitecture" * 2
STRESS_BODY = f"""\
## Why it matters

{LONG_WORD} matters, see https://example.org/{LONG_WORD}/and/more/{LONG_WORD}.

## How it works

```
a_very_long_line_of_code = "{LONG_WORD}" + "{LONG_WORD}" + "and it goes on and on and on"
```

| column one | column two | column three | column four | column five | column six |
|---|---|---|---|---|---|
| {LONG_WORD} | {LONG_WORD} | {LONG_WORD} | c | d | e |

## Example

An example.
"""


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def own(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, engine: object) -> Settings:
    monkeypatch.delenv("DIGEST_SITE_URL")
    get_settings.cache_clear()
    return get_settings()


def watch(page: Page) -> list[str]:
    """What went wrong on `page`: a script or style the CSP blocked, a script's error, a
    failed request (but the favicon, which digest does not serve)."""
    problems: list[str] = []
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)  # type: ignore[func-returns-value]
            if "Content Security Policy" in msg.text
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} {r.url}")  # type: ignore[func-returns-value]
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    return problems


def scroll_width(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def test_no_page_scrolls_sideways_from_320_to_1280_px(own, browser):
    with serving(own) as settings:
        for width in WIDTHS:
            page = browser.new_page(viewport={"width": width, "height": 800})
            problems = watch(page)
            for path in (
                "/glossary/",
                "/glossary/foundation-model",
                "/glossary/large-language-model",
            ):
                page.goto(f"{settings.base_url}{path}")
                expect(page.locator("h1")).to_be_visible()
                assert scroll_width(page) <= width, (width, path)
            # The search box appeared: the script ran under the page's CSP.
            page.goto(f"{settings.base_url}/glossary/")
            expect(page.get_by_label("Search the glossary")).to_be_visible()
            assert scroll_width(page) <= width
            page.close()
            assert problems == [], (width, problems)


def test_long_words_code_and_tables_stay_inside_a_phone_screen(
    own, browser, make_terms, tmp_path: Path
):
    terms = make_terms(
        {
            "stress": term_text(
                LONG_WORD,
                related=["plain"],
                category=f"Category {LONG_WORD}",
                aliases=f"[{LONG_WORD}, {{name: {LONG_WORD}, lang: nl}}]",
                body=STRESS_BODY,
            ),
            "plain": term_text("Plain", related=["stress"]),
        }
    )
    with serving(own.model_copy(update={"terms_dir": terms})) as settings:
        for width in WIDTHS[:2]:
            page = browser.new_page(viewport={"width": width, "height": 800})
            for path in ("/glossary/", "/glossary/stress"):
                page.goto(f"{settings.base_url}{path}")
                expect(page.locator("h1")).to_be_visible()
                assert scroll_width(page) <= width, (width, path)
            page.close()


def test_the_search_filters_the_list_as_one_types(own, browser):
    with serving(own) as settings:
        page = browser.new_page(viewport={"width": 375, "height": 800})
        problems = watch(page)
        page.goto(f"{settings.base_url}/glossary/")
        terms = page.locator("li[data-term]")
        box = page.get_by_label("Search the glossary")
        status = page.locator("#glossary-status")
        expect(terms).to_have_count(66)
        assert terms.evaluate_all("items => items.filter(i => !i.hidden).length") == 66

        box.press_sequentially("basismodel")  # a Dutch alias, not shown on the index
        visible = page.locator("li[data-term]:visible")
        expect(visible).to_have_count(1)
        expect(visible.get_by_role("link")).to_have_text("Foundation Model")
        expect(status).to_have_text("1 of 66 terms matches.")
        # Only the category holding it keeps its heading and its navigation link.
        expect(page.locator("section[data-category]:visible h2")).to_have_text(
            ["Models & Architecture"]
        )
        expect(page.locator("[data-nav-for]:visible")).to_have_count(1)

        box.fill("")
        box.press_sequentially("gradientafdaling")  # without its ë
        expect(visible.get_by_role("link")).to_have_text(["Gradient Descent"])

        box.fill("")
        box.press_sequentially("LANGUAGE model")  # every word, any case
        titles = visible.get_by_role("link").all_inner_texts()
        assert "Large Language Model" in titles and "Small Language Model" in titles
        matched = visible.evaluate_all(
            "items => items.map(i => (i.textContent + ' ' + i.dataset.names).toLowerCase())"
        )
        assert matched and all("language" in m and "model" in m for m in matched)
        expect(status).to_contain_text(f"{len(titles)} of 66 terms match.")

        box.fill("zzzz no such term")
        expect(visible).to_have_count(0)
        expect(status).to_have_text("No term matches your search.")

        box.fill("")
        expect(visible).to_have_count(66)
        expect(status).to_have_text("")

        # Enter opens the first term that matches.
        box.fill("basismodel")
        box.press("Enter")
        page.wait_for_url(f"{settings.base_url}/glossary/foundation-model")
        expect(page.locator("h1")).to_have_text("Foundation Model")
        assert problems == []


def test_without_javascript_the_whole_list_shows_and_no_search_box(own, browser):
    with serving(own) as settings:
        context = browser.new_context(
            java_script_enabled=False, viewport={"width": 375, "height": 800}
        )
        page = context.new_page()
        page.goto(f"{settings.base_url}/glossary/")
        expect(page.locator("li[data-term]:visible")).to_have_count(66)
        expect(page.get_by_label("Search the glossary")).to_be_hidden()
        assert scroll_width(page) <= 375
        context.close()
