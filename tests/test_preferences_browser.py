"""A reader in headless Chromium uses the preference centre from their mail's link: changes their
time zone, pauses for three weeks, downloads their data, then unsubscribes.

The real app runs under uvicorn in a thread (tests/browser.py); the database is checked after
every step, and the page must not scroll sideways on a phone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect, sync_playwright

from digest.config import get_settings
from digest.core.reader_links import preferences_url
from digest.store.subscribers import add_confirmed, get_subscriber
from tests.browser import CHROMIUM, CHROMIUM_ARGS, PERSON, serving

pytestmark = pytest.mark.browser

ANN = "ann@example.org"


def test_a_reader_changes_time_zone_pauses_and_unsubscribes_in_chromium(settings_env, engine):
    ann, _ = add_confirmed(
        engine, ANN, name="Ann", timezone="Europe/Amsterdam", now=datetime(2026, 1, 5, tzinfo=UTC)
    )
    console_errors: list[str] = []

    with serving(get_settings()) as settings, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 375, "height": 800})
            context.add_init_script(PERSON)
            page = context.new_page()
            # Script or style blocked by the CSP, or a request that failed (but the favicon,
            # which digest does not serve).
            page.on(
                "console",
                lambda msg: (
                    console_errors.append(msg.text)  # type: ignore[func-returns-value]
                    if "Content Security Policy" in msg.text
                    else None
                ),
            )
            page.on(
                "response",
                lambda r: (
                    console_errors.append(f"{r.status} {r.url}")  # type: ignore[func-returns-value]
                    if r.status >= 400 and not r.url.endswith("/favicon.ico")
                    else None
                ),
            )
            page.goto(preferences_url(settings, ann.id, ann.email))
            expect(page.get_by_role("heading", name="Your preferences")).to_be_visible()
            expect(page.get_by_text("a…@example.org")).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= 375

            # 1. The time zone: Tokyo. The schedule is Monday 09:00 UTC, 18:00 in Tokyo.
            expect(page.get_by_label("Time zone")).to_have_value("Europe/Amsterdam")
            page.get_by_label("Time zone").select_option("Asia/Tokyo")
            page.get_by_role("button", name="Save").click()
            # Changed by issue 19: the notice says what was saved, the summary when issues come.
            expect(page.locator("#notice")).to_have_text("Saved: your name and time zone.")
            expect(page.locator("#summary")).to_contain_text(
                "a new issue arrives every Monday at 18:00 (Asia/Tokyo time)."
            )
            expect(page.get_by_label("Time zone")).to_have_value("Asia/Tokyo")
            assert get_subscriber(engine, ANN).timezone == "Asia/Tokyo"

            # 2. A break of three weeks.
            page.get_by_label("Pause for").select_option("3")
            page.get_by_role("button", name="Pause").click()
            expect(page.locator("#notice")).to_contain_text("Paused: no issues until")
            expect(page.get_by_role("button", name="Resume now")).to_be_visible()
            paused_until = get_subscriber(engine, ANN).paused_until
            assert paused_until is not None
            assert abs(paused_until - (datetime.now(UTC) + timedelta(weeks=3))) < timedelta(
                minutes=2
            )

            # 3. Their data, as a file.
            with page.expect_download() as download:
                page.get_by_role("button", name="Download my data").click()
            assert download.value.suggested_filename == "my-digest-data.json"
            data = json.loads(download.value.path().read_text())
            assert data["subscriber"]["email"] == ANN
            assert data["subscriber"]["timezone"] == "Asia/Tokyo"

            # 4. Unsubscribe: done, and said so; the page keeps only what still applies.
            page.get_by_role("button", name="Unsubscribe").click()
            expect(page.locator("#notice")).to_contain_text("will get no more issues")
            expect(page.get_by_role("button", name="Unsubscribe")).to_have_count(0)
            expect(page.get_by_role("button", name="Pause")).to_have_count(0)
            gone = get_subscriber(engine, ANN)
            assert gone.status == "unsubscribed" and gone.unsubscribed_at is not None
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
        finally:
            browser.close()
    assert console_errors == []
