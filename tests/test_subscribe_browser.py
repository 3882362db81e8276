"""A person in headless Chromium: subscribe, confirm from the mail, unsubscribe with the button.

The real app runs under uvicorn on 127.0.0.1 in a thread; the confirmation mail is read from the
outbox with Python's email package, and the database is checked after every step.
"""

from __future__ import annotations

import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright

from digest.config import get_settings
from digest.core.tokens import make_token
from digest.model.subscriber import Subscriber
from digest.store import db
from digest.store.subscribers import get_subscriber
from tests.browser import CHROMIUM, CHROMIUM_ARGS, PERSON, serving

pytestmark = pytest.mark.browser

ANN = "ann@example.org"


def wait_for_mail(outbox: Path, timeout: float = 10) -> bytes:
    """The one .eml in the outbox; the app sends it just after answering, so it may lag a bit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mails = sorted(outbox.glob("*.eml")) if outbox.exists() else []
        if mails:
            assert len(mails) == 1
            return mails[0].read_bytes()
        time.sleep(0.05)
    raise AssertionError(f"no confirmation mail appeared in {outbox}")


def stored(engine, email: str = ANN) -> Subscriber:  # type: ignore[no-untyped-def]
    found = get_subscriber(engine, email)
    assert found is not None
    return found


def test_a_person_subscribes_confirms_and_unsubscribes_in_chromium(settings_env, engine):
    csp_errors: list[str] = []

    def watch(page: Page) -> Page:
        def on_console(msg: ConsoleMessage) -> None:
            if "Content Security Policy" in msg.text:
                csp_errors.append(msg.text)

        page.on("console", on_console)
        return page

    with (
        serving(get_settings()) as settings,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            person = browser.new_context(timezone_id="Europe/Amsterdam")
            person.add_init_script(PERSON)
            page = watch(person.new_page())

            # 1. Subscribe with the form; the browser fills in its time zone.
            page.goto(f"{settings.base_url}/")
            page.get_by_label("Email address").fill("Ann@Example.org")
            page.get_by_label("Name").fill("Ann")
            page.get_by_role("button", name="Subscribe").click()
            expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
            ann = stored(engine)
            assert (ann.status, ann.name, ann.timezone) == ("pending", "Ann", "Europe/Amsterdam")

            # 2. The confirmation mail, as a mail client would read it.
            mail = message_from_bytes(
                wait_for_mail(Path(settings.outbox_dir)), policy=policy.default
            )
            assert mail["To"] == "Ann <ann@example.org>"
            text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
            (link,) = [w for w in text.split() if w.startswith(f"{settings.base_url}/confirm/")]

            # 3. A link scanner (an automated browser) opens it: nothing changes.
            scanner = watch(browser.new_context().new_page())
            scanner.goto(link)
            expect(scanner.get_by_role("button", name="Confirm my subscription")).to_be_visible()
            scanner.wait_for_timeout(300)
            assert stored(engine).status == "pending"

            # 4. The person opens it: the page confirms by itself, no second click.
            page.goto(link)
            expect(page.get_by_role("heading", name="You are subscribed")).to_be_visible()
            ann = stored(engine)
            assert ann.status == "active"
            assert ann.confirmed_at is not None

            # 5. Unsubscribe from a later issue's link: the page asks, the button does it.
            token = make_token(settings, "unsubscribe", ann.id, ann.email)
            page.goto(f"{settings.base_url}/unsubscribe/{token}")
            expect(page.get_by_text("a…@example.org")).to_be_visible()
            assert stored(engine).status == "active"
            page.get_by_role("button", name="Unsubscribe").click()
            expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
            gone = stored(engine)
            assert gone.status == "unsubscribed"
            assert gone.unsubscribed_at is not None
        finally:
            browser.close()
    assert csp_errors == []
    assert db.ping(engine)
