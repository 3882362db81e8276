"""The reader's pages in headless Chromium at a phone's 375 px and a desktop's 1280 px: no
sideways scroll, the header, content and footer on one left edge, every text at 4.5:1 contrast
or more, destructive buttons in red; the zone picker starts at the browser's own zone; and
"subscribe again" is one click.

The real app runs under uvicorn in a thread (tests/browser.py); the database is checked after
every step that should change it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from digest.campaign.build import build_issue
from digest.config import Settings, get_settings
from digest.core.tokens import make_token
from digest.model.weeks import IsoWeek
from digest.store import db
from digest.store.issues import transition
from digest.store.subscribers import add_confirmed, get_subscriber, unsubscribe_subscriber
from tests.browser import CHROMIUM, CHROMIUM_ARGS, PERSON, serving

pytestmark = pytest.mark.browser

WIDTHS = (375, 1280)

# Each element with text of its own: its colour against the first opaque background behind it,
# by WCAG 2's formula. Returns the pairs under 4.5:1.
LOW_CONTRAST = """() => {
  const rgb = (s) => {
    const m = s.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const behind = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    if (["SCRIPT", "STYLE", "OPTION", "OPTGROUP"].includes(el.tagName)) continue;
    const text = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!(text || ["INPUT", "SELECT"].includes(el.tagName)) || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden") continue;
    const [a, b] = [lum(rgb(style.color)), lum(behind(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(`${el.tagName} "${el.textContent.trim().slice(0, 40)}" ${ratio.toFixed(2)}:1`);
  }
  return low;
}"""

# The left edge of the header's name, of the content inside <main>, and of the footer's text.
EDGES = """() => {
  const main = document.querySelector("main");
  const style = getComputedStyle(main);
  return [
    document.querySelector("header .brand").getBoundingClientRect().left,
    main.getBoundingClientRect().left + parseFloat(style.paddingLeft) + parseFloat(style.borderLeftWidth),
    document.querySelector("footer p").getBoundingClientRect().left,
  ];
}"""


@pytest.fixture
def site(settings_env, engine, starter_glossary) -> Iterator[Settings]:  # type: ignore[no-untyped-def]
    """The app serving a sent issue (week 18), so the home page has its sample."""
    base = get_settings()
    now = db.utcnow()
    build_issue(
        engine, base, starter_glossary, IsoWeek(2026, 18), now=now - timedelta(days=1), news=[]
    )
    transition(engine, IsoWeek(2026, 18), "sending", now=now)
    transition(engine, IsoWeek(2026, 18), "sent", now=now)
    with serving(base) as settings:
        yield settings


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def watched(page: Page, problems: list[str]) -> Page:
    """Collect what the CSP blocked and every failed request (but the favicon digest lacks)."""
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
            if r.status >= 400 and not r.url.endswith("/favicon.ico") and "/nope" not in r.url
            else None
        ),
    )
    return page


def link(settings: Settings, purpose: str, sub) -> str:  # type: ignore[no-untyped-def]
    return f"{settings.base_url}/{purpose}/{make_token(settings, purpose, sub.id, sub.email)}"  # type: ignore[arg-type]


def test_every_reader_page_fits_lines_up_and_reads_at_both_widths(site, engine):
    now = db.utcnow()
    ann, _ = add_confirmed(engine, "ann@example.org", name="Ann", now=now)
    bob, _ = add_confirmed(engine, "bob@example.org", now=now)
    unsubscribe_subscriber(engine, bob.id, now=now)
    pages = {
        "home": f"{site.base_url}/",
        "confirmed": link(site, "confirm", ann),
        "unsubscribe": link(site, "unsubscribe", ann),
        "unsubscribed": link(site, "unsubscribe", bob),
        "preferences": link(site, "preferences", ann),
        "not found": f"{site.base_url}/nope",
    }
    problems: list[str] = []
    with chromium() as browser:
        for width in WIDTHS:
            context = browser.new_context(viewport={"width": width, "height": 900})
            context.add_init_script(PERSON)
            page = watched(context.new_page(), problems)
            for name, url in pages.items():
                page.goto(url)
                where = f"{name} at {width} px"
                assert page.evaluate("document.documentElement.scrollWidth") <= width, where
                brand, content, footer = page.evaluate(EDGES)
                assert abs(brand - content) <= 1 and abs(footer - content) <= 1, (
                    where,
                    brand,
                    content,
                    footer,
                )
                assert content == pytest.approx(
                    18 if width == 375 else (width - 680) / 2 + 28, abs=1
                ), where
                assert page.evaluate(LOW_CONTRAST) == [], where
            # The erase question is a POST's answer: reached as a reader reaches it.
            page.goto(pages["preferences"])
            page.get_by_role("button", name="Erase my data").click()
            expect(page.get_by_role("heading", name="Erase your data?")).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            assert page.evaluate(LOW_CONTRAST) == [], f"erase at {width} px"
            context.close()
    assert problems == []
    assert get_subscriber(engine, "ann@example.org").status == "active"  # type: ignore[union-attr]


def test_the_home_page_shows_a_sample_and_the_header_has_a_nav(site, engine):
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 375, "height": 800})
        page.goto(f"{site.base_url}/")
        expect(page.locator("#sample")).to_contain_text("The latest issue")
        expect(page.locator("#schedule")).to_have_text(
            "A new issue arrives every Monday at 09:00 (UTC time)."
        )
        nav = page.get_by_role("navigation", name="Site")
        for name in ("Glossary", "Archive", "Feed"):
            expect(nav.get_by_role("link", name=name)).to_be_visible()
        page.locator("#sample").get_by_role("link", name="Read the whole issue").click()
        assert page.url.endswith("/issues/2026-W18")


def test_destructive_buttons_are_red_and_apart_from_save(site, engine):
    ann, _ = add_confirmed(engine, "ann@example.org", now=db.utcnow())
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 375, "height": 800})
        page.goto(link(site, "preferences", ann))
        background = "(el) => getComputedStyle(el).backgroundColor"
        save = page.get_by_role("button", name="Save")
        assert save.evaluate(background) == "rgb(29, 78, 216)"
        for name in ("Unsubscribe", "Erase my data"):
            button = page.get_by_role("button", name=name)
            assert button.evaluate(background) == "rgb(185, 28, 28)", name
            # In their own section at the end, well below Save.
            assert button.evaluate("(el) => el.closest('section').id") == "leave"
            assert button.bounding_box()["y"] > save.bounding_box()["y"] + 200  # type: ignore[index]


@pytest.mark.parametrize("browser_zone", ["Asia/Kolkata", "Asia/Calcutta"])
def test_with_no_zone_stored_the_picker_starts_at_the_browsers_zone(site, engine, browser_zone):
    ann, _ = add_confirmed(engine, "ann@example.org", now=db.utcnow())
    bob, _ = add_confirmed(engine, "bob@example.org", timezone="Europe/Amsterdam", now=db.utcnow())
    with chromium() as browser:
        context = browser.new_context(
            timezone_id=browser_zone, viewport={"width": 375, "height": 800}
        )
        page = context.new_page()
        page.goto(link(site, "preferences", ann))
        zone = page.get_by_label("Time zone")
        expect(zone).to_have_value("Asia/Kolkata")  # the current name, whatever ICU calls it
        expect(page.locator("#timezone-hint")).to_be_visible()
        assert get_subscriber(engine, "ann@example.org").timezone is None  # type: ignore[union-attr]
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#notice")).to_have_text("Saved: your name and time zone.")
        assert get_subscriber(engine, "ann@example.org").timezone == "Asia/Kolkata"  # type: ignore[union-attr]

        # A zone the reader chose stays theirs, whatever the browser says.
        page.goto(link(site, "preferences", bob))
        expect(page.get_by_label("Time zone")).to_have_value("Europe/Amsterdam")
        expect(page.locator("#timezone-hint")).to_be_hidden()


def test_unsubscribe_then_subscribe_again_with_one_click(site, engine):
    ann, _ = add_confirmed(engine, "ann@example.org", timezone="Asia/Tokyo", now=db.utcnow())
    problems: list[str] = []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 375, "height": 800})
        context.add_init_script(PERSON)
        page = watched(context.new_page(), problems)
        page.goto(link(site, "unsubscribe", ann))
        page.get_by_role("button", name="Unsubscribe").click()
        expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
        assert get_subscriber(engine, "ann@example.org").status == "unsubscribed"  # type: ignore[union-attr]
        page.get_by_role("button", name="Subscribe again").click()
        expect(page.get_by_role("heading", name="You are subscribed again")).to_be_visible()
        expect(page.locator("#schedule")).to_contain_text("18:00 (Asia/Tokyo time)")
        assert get_subscriber(engine, "ann@example.org").status == "active"  # type: ignore[union-attr]
        page.locator("#archive-link").click()
        expect(page.get_by_role("heading", name="Archive")).to_be_visible()
    assert problems == []
