"""A new editor in headless Chromium does the issue's "Done when" journey at the desk alone:
logs in, queues and pins a term, previews the issue at phone width, sends a test to themselves,
fixes the subject and approves it. Screenshots of each page at 375 and 1280 px go to
$DIGEST_SHOTS_DIR when it is set, to be looked at by eye.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from digest.config import get_settings
from digest.model.weeks import current_week
from digest.store import audit, db
from digest.store.issues import get_issue
from digest.store.queue import list_queue
from tests.browser import CHROMIUM, CHROMIUM_ARGS, PERSON, serving
from tests.desk_client import PASSWORD, make_editor

pytestmark = pytest.mark.browser

PAGES = ("", "queue", "issues", "terms", "subscribers")


def _shoot(page: Page, name: str) -> None:
    folder = os.environ.get("DIGEST_SHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _fits(page: Page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, page.url


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_new_editor_queues_pins_previews_tests_fixes_the_subject_and_approves(
    settings_env, engine
):
    make_editor(engine, role="admin")
    zone = get_settings().zone
    week = current_week(db.utcnow(), zone) + 1
    problems: list[str] = []
    approving = get_settings().model_copy(update={"require_approval": True})
    with serving(approving) as settings, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 375, "height": 800})
            context.add_init_script(PERSON)
            page = context.new_page()
            page.on(
                "console",
                lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,  # type: ignore[func-returns-value]
            )
            # A logged-out visitor is sent to the login page, and back after it.
            page.goto(f"{settings.base_url}/admin/queue")
            expect(page.get_by_role("heading", name="Log in to the desk")).to_be_visible()
            assert "/admin/login?next=/admin/queue" in page.url
            _fits(page, 375)
            _shoot(page, "login-375")
            page.get_by_label("Email").fill("ann@example.org")
            page.get_by_label("Password").fill("wrong password here")
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#error")).to_contain_text("do not match")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Queue", exact=True)).to_be_visible()

            # Queue a term and pin it to next week.
            page.get_by_label("Term (slug, title or alias)").fill("transformer")
            page.get_by_role("button", name="Add to queue").click()
            expect(page.locator("#notice")).to_have_text("Queued transformer at position 1.")
            page.get_by_label("Week to pin transformer to").fill(str(week))
            page.get_by_role("button", name="Pin transformer").click()
            expect(page.locator("#notice")).to_have_text(f"Pinned transformer to {week}.")
            assert [(e.slug, e.week) for e in list_queue(engine)] == [("transformer", week)]
            _fits(page, 375)
            _shoot(page, "queue-pinned-375")

            # Build it and preview it at phone width.
            page.goto(f"{settings.base_url}/admin/issues/{week}")
            page.get_by_role("button", name="Build it now").click()
            expect(page.locator("#notice")).to_contain_text(f"Built {week} with transformer")
            page.get_by_role("link", name="Phone (375 px)").click()
            frame = page.frame_locator("#preview-frame")
            expect(frame.get_by_text("Transformer").first).to_be_visible()
            assert page.locator("#preview-frame").evaluate("f => f.clientWidth") <= 375
            _fits(page, 375)
            _shoot(page, "issue-375")
            if os.environ.get("DIGEST_SHOTS_DIR"):  # the mail itself, as the phone shows it
                # In view first: Chromium paints an out-of-process frame below the fold lazily.
                page.locator("#preview-frame").scroll_into_view_if_needed()
                expect(frame.get_by_role("heading", name="Transformer")).to_be_in_viewport()
                page.locator("#preview-frame").screenshot(
                    path=str(Path(os.environ["DIGEST_SHOTS_DIR"]) / "preview-375.png")
                )

            # A test copy to themselves: the outbox has it, the page lists it.
            page.get_by_role("button", name="Send a test to ann@example.org").click()
            expect(page.locator("#notice")).to_contain_text("A test copy")
            expect(page.locator("#tests")).to_contain_text("test copy to ann@example.org")
            assert len(list(Path(settings_env["DIGEST_OUTBOX_DIR"]).glob("*.eml"))) == 1

            # Fix the subject, then approve.
            page.get_by_label("Subject").fill("Transformers, plainly explained")
            page.get_by_role("button", name="Save subject").click()
            expect(page.locator("#notice")).to_have_text("Saved the subject and preheader.")
            page.get_by_role("button", name="Approve").click()
            expect(page.locator("#notice")).to_contain_text(f"Approved {week}")
            issue = get_issue(engine, week)
            assert issue.subject == "Transformers, plainly explained"
            assert issue.approved_by == "ann@example.org"
            actions = {e.action for e in audit.recent(engine, target=str(week), limit=50)}
            assert {"issue.test_send", "issue.subject", "issue.approve"} <= actions

            # Every page, at phone and desktop width, without sideways scrolling.
            for width in (375, 1280):
                page.set_viewport_size({"width": width, "height": 900})
                for name in PAGES:
                    page.goto(f"{settings.base_url}/admin/{name}")
                    expect(page.locator("main h1")).to_be_visible()
                    _fits(page, width)
                    _shoot(page, f"{name or 'dashboard'}-{width}")
                for view in ("desktop", "phone"):
                    page.goto(f"{settings.base_url}/admin/issues/{week}?view={view}")
                    _fits(page, width)
                    _shoot(page, f"issue-{view}-{width}")
        finally:
            browser.close()
    assert problems == []
