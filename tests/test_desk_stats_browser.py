"""The desk's Numbers page in a real browser, at phone and desktop width: no sideways scroll,
both charts drawn (and sized), each with its table, and no CSP complaint about the inline SVG.
Screenshots go to $DIGEST_SHOTS_DIR when it is set, to be looked at by eye."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from digest.config import get_settings
from digest.store import db
from digest.store.subscribers import add_confirmed, unsubscribe_subscriber
from tests.browser import CHROMIUM, CHROMIUM_ARGS, PERSON, serving
from tests.desk_client import PASSWORD, make_editor

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_numbers_page_fits_a_phone_and_shows_each_chart_with_its_table(settings_env, engine):
    make_editor(engine)
    now = db.utcnow()
    for i in range(30):  # a list that grew over the weeks, with a few leaving
        sub, _ = add_confirmed(engine, f"r{i}@example.org", now=now - timedelta(days=3 * i + 1))
        if i % 7 == 3:
            unsubscribe_subscriber(engine, sub.id, now=now - timedelta(days=i))
    problems: list[str] = []
    with serving(get_settings()) as settings, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 375, "height": 800})
            context.add_init_script(PERSON)
            page = context.new_page()
            page.on("console", lambda m: problems.append(m.text))
            page.goto(f"{settings.base_url}/admin/stats")
            page.get_by_label("Email").fill("ann@example.org")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Numbers", exact=True)).to_be_visible()
            for width in (375, 1280):
                page.set_viewport_size({"width": width, "height": 900})
                page.goto(f"{settings.base_url}/admin/stats")
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                charts = page.locator("svg.chart")
                expect(charts).to_have_count(2)
                for i in range(2):
                    box = charts.nth(i).bounding_box()
                    assert box is not None and 200 <= box["width"] <= width
                    assert box["height"] > 60
                expect(page.locator("#list-table tbody tr")).to_have_count(12)
                expect(page.get_by_role("table")).to_be_visible()
                folder = os.environ.get("DIGEST_SHOTS_DIR")
                if folder:
                    Path(folder).mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(Path(folder) / f"stats-{width}.png"), full_page=True)
        finally:
            browser.close()
    assert not [m for m in problems if "Content Security Policy" in m], problems
