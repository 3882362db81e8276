"""Every page a reader sees, in headless Chromium at 320, 375, 600 and 1280 px, light and dark: no
sideways scroll, `lang` set, images with alt text, every visible text at WCAG AA contrast.

The real app serves real data (two sent issues, a pending, an active and an unsubscribed reader)
under uvicorn; the weekly mail is loaded as a page with the network off, as a mail client shows
it. Each page is opened once per width and scheme and what it shows is kept (`views`), so the
three tests below read the same views. A new page is one line in `PAGES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from digest.config import Settings
from digest.core.tokens import make_token
from digest.model.weeks import IsoWeek
from digest.store import db
from digest.store.issues import get_issue
from digest.store.subscribers import add_confirmed, start_opt_in, unsubscribe_subscriber
from digest.store.terms import load_glossary
from tests.browser import CHROMIUM, CHROMIUM_ARGS, serving
from tests.conftest import STARTER_TERMS
from tests.page_checks import (
    SCHEMES,
    ReaderPage,
    View,
    alt_problems,
    contrast_problems,
    lang_problems,
    open_views,
    overflow_problems,
    with_widths,
)
from tests.test_feed_http import send

pytestmark = pytest.mark.browser

SENT = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
LATEST = IsoWeek(2026, 19)

PAGES = [
    ReaderPage("home", "/"),
    ReaderPage("confirm", "/confirm/{pending_confirm}"),
    ReaderPage("confirmed", "/confirm/{active_confirm}"),
    ReaderPage("unsubscribe", "/unsubscribe/{active_unsubscribe}"),
    ReaderPage("unsubscribed", "/unsubscribe/{gone_unsubscribe}"),
    ReaderPage("preferences", "/preferences/{active_preferences}"),
    ReaderPage("archive index", "/issues/"),
    ReaderPage("archive issue", f"/issues/{LATEST}"),
    ReaderPage("feed in a browser", "/feed.xml"),
    ReaderPage("glossary index", "/glossary/"),
    ReaderPage("glossary term", "/glossary/foundation-model"),
    ReaderPage("weekly mail", content="weekly_mail"),
]
NAMES = [p.name for p in PAGES]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict[str, str]]]:
    """The app served on SQLite with two sent issues and three readers; (settings, links)."""
    folder = tmp_path_factory.mktemp("layout")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DIGEST_CONFIG", str(folder / "absent.toml"))
        base = Settings(
            database_url=f"sqlite:///{folder / 'digest.db'}",
            terms_dir=STARTER_TERMS,
            outbox_dir=folder / "outbox",
            secret_key="test-secret-key-not-for-production",
            base_url="https://digest.example.org",
            transport="outbox",
        )
        engine = db.make_engine(base.database_url)
        db.upgrade(engine)
        glossary = load_glossary(STARTER_TERMS)
        try:
            with serving(base) as settings:
                send(engine, settings, glossary, IsoWeek(2026, 18), SENT - timedelta(weeks=1))
                send(engine, settings, glossary, LATEST, SENT)
                now = datetime.now(UTC)
                pending = start_opt_in(
                    engine, settings, "pat@example.org", name="Pat", timezone=None,
                    source="web", now=now,
                ).subscriber  # fmt: skip
                ann, _ = add_confirmed(engine, "ann@example.org", name="Ann", now=now)
                gone, _ = add_confirmed(engine, "bob@example.org", name="Bob", now=now)
                unsubscribe_subscriber(engine, gone.id, now=now)
                links = {
                    "pending_confirm": make_token(settings, "confirm", pending.id, pending.email),
                    "active_confirm": make_token(settings, "confirm", ann.id, ann.email),
                    "active_unsubscribe": make_token(settings, "unsubscribe", ann.id, ann.email),
                    "gone_unsubscribe": make_token(settings, "unsubscribe", gone.id, gone.email),
                    "active_preferences": make_token(settings, "preferences", ann.id, ann.email),
                }
                yield settings, links
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def contents(site: tuple[Settings, dict[str, str]]) -> dict[str, str]:
    settings, _links = site
    engine = db.make_engine(settings.database_url)
    try:
        issue = get_issue(engine, LATEST)
    finally:
        engine.dispose()
    assert issue is not None and issue.html is not None
    return {"weekly_mail": issue.html}


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def views(site, contents, browser) -> dict[str, list[View]]:  # type: ignore[no-untyped-def]
    """Every page at every width in both schemes, opened on first use and kept."""
    settings, links = site

    class Views(dict[str, list[View]]):
        def __missing__(self, name: str) -> list[View]:
            [page] = [p for p in PAGES if p.name == name]
            found = [
                view
                for scheme in SCHEMES
                for view in open_views(
                    browser,
                    page,
                    scheme,
                    base_url=settings.base_url,
                    links=links,
                    contents=contents,
                )
            ]
            self[name] = found
            return found

    return Views()


def light(views: list[View]) -> list[View]:
    return [v for v in views if v.scheme == "light"]


@pytest.mark.parametrize("name", NAMES)
def test_no_page_scrolls_sideways_at_any_width(views, name):
    problems = [p for view in light(views[name]) for p in overflow_problems(view)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_every_page_has_lang_and_alt_text(views, name):
    problems = [p for view in views[name] for p in lang_problems(view) + alt_problems(view)]
    assert not problems, "\n".join(with_widths(problems))


@pytest.mark.parametrize("name", NAMES)
def test_every_visible_text_meets_wcag_aa_contrast_in_light_and_dark(views, name):
    every = [view for view in views[name]]
    assert all(view.texts for view in every), f"{name}: no text found to check"
    problems = [p for view in every for p in contrast_problems(view)]
    assert not problems, "\n".join(with_widths(problems))


# --------------------------------------------------------------------------- the checks catch faults


def test_no_dutch_page_scrolls_sideways_at_the_narrowest_widths(site, browser):  # type: ignore[no-untyped-def]
    """Dutch words are longer ("Mijn gegevens wissen…", "Bevestig mijn abonnement"): the same
    pages served in nl, on the same data, at the phone widths where a long word pushes out."""
    settings, links = site
    served = [p for p in PAGES if p.path is not None]
    with serving(settings.for_locale("nl")) as dutch:
        views = [
            view
            for page in served
            for view in open_views(
                browser, page, "light", widths=(320, 375), base_url=dutch.base_url,
                links=links, contents={},
            )
        ]  # fmt: skip
    assert len(views) == 2 * len(served)
    problems = [p for view in views for p in overflow_problems(view)]
    problems += [f"{v.where}: lang is {v.lang!r}" for v in views if v.lang != "nl"]
    assert not problems, "\n".join(problems)


BAD_PAGE = """<!doctype html><html><head><meta name="viewport" content="width=device-width">
<style>
  body { margin: 0; background: #fff; color: #1f2933; font: 16px sans-serif; }
  .wide { width: 700px; }
  .footer { color: #6b7280; background: #f3f4f6; font-size: 12px; }
  .ghost { color: rgba(0, 0, 0, 0.3); }
  input::placeholder { color: #aaa; }
  .big { font-size: 24px; color: #e8590c; }
  .sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
             color: #fff; }
  @media (prefers-color-scheme: dark) { .night { color: #333; background: #111; } }
</style></head><body>
<p>Readable text.</p>
<div class="wide">A box too wide for a phone.</div>
<p class="ghost">Faint text</p>
<p class="big">A large orange line</p>
<span class="sr-only">Only for screen readers</span>
<p class="night">Fine by day, dark grey on black by night</p>
<p style="display:none">Hidden</p>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="" role="presentation">
<input type="email" placeholder="you@example.org" style="color:#000">
<div class="footer">Small grey print</div>
</body></html>"""


def test_the_checks_catch_each_fault_of_a_bad_page(browser) -> None:  # type: ignore[no-untyped-def]
    page = ReaderPage("bad page", content="bad")
    found = [
        view
        for scheme in SCHEMES
        for view in open_views(
            browser,
            page,
            scheme,
            widths=(1280, 375),  # 375 after a resize: the views of a page are resized
            base_url="",
            links={},
            contents={"bad": BAD_PAGE},
        )
    ]
    by = {(v.width, v.scheme): v for v in found}
    narrow, wide, dark = by[375, "light"], by[1280, "light"], by[375, "dark"]

    [overflow] = overflow_problems(narrow)
    assert overflow.startswith("bad page at 375px, light: scrolls sideways: 700px wide in a 375px")
    assert "div.wide reaches 700px" in overflow
    assert overflow_problems(wide) == []
    assert lang_problems(narrow) == ["bad page at 375px, light: <html> has no lang"]
    assert alt_problems(narrow) == [
        'bad page at 375px, light: image without alt text: body > img src="data:image/gif;base64,'
        'R0lGODlhAQABAAAAACw=" (no alt)'
    ]

    light_contrast = contrast_problems(narrow)
    texts = {p.split('"')[1]: p for p in light_contrast}
    assert set(texts) == {"Faint text", "you@example.org", "Small grey print"}
    assert (
        "is #0000004c on #ffffff: 2.10:1, under the 4.5:1 WCAG AA asks for 16px"
        in (texts["Faint text"])
    )
    assert texts["you@example.org"].startswith(
        'bad page at 375px, light: "you@example.org" (a placeholder) is '
    )
    assert texts["Small grey print"] == (
        'bad page at 375px, light: "Small grey print" is #6b7280 on #f3f4f6: 4.39:1, under the '
        "4.5:1 WCAG AA asks for 12px text (at body > div.footer; background from div.footer)"
    )
    # Large text needs 3:1 (3.58:1 passes); clipped and hidden text is not looked at.
    shown = {t.text for t in narrow.texts}
    assert "A large orange line" in shown
    assert not shown & {"Only for screen readers", "Hidden"}
    # Dark mode is its own check: the night rule fails only there.
    dark_only = set(contrast_problems(dark)) - {
        p.replace(", light:", ", dark:") for p in light_contrast
    }
    assert [p.split('"')[1] for p in dark_only] == ["Fine by day, dark grey on black by night"]
    assert "is #333333 on #111111: 1.49:1" in next(iter(dark_only))

    merged = with_widths(contrast_problems(narrow) + contrast_problems(wide))
    assert merged[-1].endswith("(at 375, 1280px)") and merged[-1].startswith("bad page, light: ")
