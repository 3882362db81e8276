"""The archive's pages: dates, previous/next, the quiz answer read from the address (served, and
in the static build's files in Chromium), a GET that changes nothing, and the quiz in the mail."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markupsafe import escape
from sqlalchemy import Engine

from digest.campaign.build import build_issue, build_site
from digest.config import Settings
from digest.core.checks import check_email, check_page
from digest.core.tracking import mark_links, tracked_links
from digest.model.glossary import Glossary
from digest.model.issue import IssueRecord, IssueStatus
from digest.model.weeks import IsoWeek
from digest.store.issues import get_issue, transition
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_scanner_safety import snapshot as table_dump

W48, W49, W50 = IsoWeek(2026, 48), IsoWeek(2026, 49), IsoWeek(2026, 50)
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
ANSWER_LINK = re.compile(r"/issues/2026-W49\?answer=([0-9])#quiz")


def send(engine: Engine, week: IsoWeek, to: IssueStatus = "sent") -> None:
    """Start `week`'s send and move it on to `to` (left at sending when that is `to`)."""
    transition(engine, week, "sending", now=NOW)
    if to != "sending":
        transition(engine, week, to, now=NOW)


@pytest.fixture
def issues(
    engine: Engine, settings: Settings, starter_glossary: Glossary
) -> dict[IsoWeek, IssueRecord]:
    """W48 and W49 sent (W49's quiz recalls W48's term), W50 built and not sent."""
    for week in (W48, W49):
        build_issue(engine, settings, starter_glossary, week, now=NOW, news=[])
        send(engine, week)
    build_issue(engine, settings, starter_glossary, W50, now=NOW, news=[])
    found = {week: get_issue(engine, week) for week in (W48, W49, W50)}
    return {week: record for week, record in found.items() if record is not None}


def quiz_of(record: IssueRecord) -> dict:  # type: ignore[type-arg]
    assert record.snapshot is not None and "quiz" in record.snapshot
    return dict(record.snapshot["quiz"])


def wrong_number(quiz: dict) -> int:  # type: ignore[type-arg]
    return next(n for n in (1, 2, 3) if n != quiz["right"])


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def text_of(html: str) -> str:
    parsed = _Text()
    parsed.feed(html)
    return " ".join(" ".join(parsed.parts).split())


# --------------------------------------------------------------------------- the quiz in the mail


def test_the_quiz_recalls_the_last_issue_out_and_the_first_asks_a_related_concept(issues):
    first, second, third = quiz_of(issues[W48]), quiz_of(issues[W49]), quiz_of(issues[W50])
    assert first["kind"] == "related"
    assert first["term"]["slug"] == issues[W48].snapshot["related"][0]["slug"]  # type: ignore[index]
    assert (second["kind"], second["from_week"]) == ("last_week", "2026-W48")
    assert second["term"]["slug"] == issues[W48].featured_slug
    assert third["term"]["slug"] == issues[W49].featured_slug


def test_a_built_issue_that_never_went_out_is_not_last_weeks_term(
    engine, settings, starter_glossary
):
    build_issue(engine, settings, starter_glossary, W48, now=NOW, news=[])
    send(engine, W48)
    build_issue(engine, settings, starter_glossary, W49, now=NOW, news=[])  # held back, say
    record = build_issue(engine, settings, starter_glossary, W50, now=NOW, news=[])
    assert quiz_of(record)["from_week"] == "2026-W48"


def test_the_mail_carries_three_answer_links_in_html_and_text(issues, settings):
    record = issues[W49]
    html, text = record.html or "", record.text or ""
    assert sorted(ANSWER_LINK.findall(html)) == ["1", "2", "3"]
    base = f"{settings.base_url}/issues/2026-W49"
    for n in (1, 2, 3):
        assert f'href="{base}?answer={n}#quiz"' in html
        assert f"\n   {base}?answer={n}#quiz\n" in text
    quiz = quiz_of(record)
    for choice in quiz["choices"]:
        assert str(escape(choice["summary"])) in html
    assert "Last week's term was" in text and quiz["term"]["title"] in text
    assert check_email(html, text) == []


def test_click_tracking_keeps_the_answer_links_query_and_fragment(issues, settings):
    record = issues[W49]
    assert record.links is not None
    answers = [link for link in record.links if "?answer=" in link]
    assert answers == [f"{settings.base_url}/issues/2026-W49?answer={n}#quiz" for n in (1, 2, 3)]
    marked = mark_links(record.html or "", record.text or "", record.links)
    assert "?answer=" not in marked.html and "?answer=" not in marked.text
    assert tracked_links(record.html or "", record.text or "") == record.links


def test_a_tracked_answer_link_redirects_with_its_query_and_fragment(
    engine, settings_env, starter_glossary, tmp_path
):
    from fastapi.testclient import TestClient

    from digest.delivery.outbox import OutboxTransport
    from digest.delivery.runner import send_issue
    from digest.store.db import utcnow
    from digest.web import create_app
    from tests.sending import seed_subscribers

    tracking = Settings(track_clicks=True)
    seed_subscribers(engine, 1)
    build_issue(engine, tracking, starter_glossary, W48, now=NOW, news=[])
    outbox = tmp_path / "outbox"
    send_issue(engine, tracking, OutboxTransport(outbox, clock=utcnow), W48, now=NOW)
    (mail,) = outbox.glob("*.eml")
    record = get_issue(engine, W48)
    assert record is not None and record.links is not None
    index = record.links.index(f"{tracking.base_url}/issues/2026-W48?answer=2#quiz")
    from digest.core.tracking import read_click_token, tracking_keys

    raw = mail.read_text()
    tokens = set(re.findall(r"/r/([A-Za-z0-9_-]{20,64})", raw))
    keys = tracking_keys(tracking)
    (token,) = [t for t in tokens if (c := read_click_token(keys, t)) and c.link_index == index]
    with TestClient(create_app(tracking)) as web:
        answer = web.get(f"/r/{token}", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{tracking.base_url}/issues/2026-W48?answer=2#quiz"


# --------------------------------------------------------------------------- served pages


def test_the_right_answer_says_right_and_explains(client, issues):
    quiz = quiz_of(issues[W49])
    page = client.get(f"/issues/2026-W49?answer={quiz['right']}")
    assert page.status_code == 200
    text = text_of(page.text)
    assert f"Right! That line describes {quiz['term']['title']}." in text
    assert quiz["term"]["definition"] in text
    assert (
        f'<a href="{quiz["term"]["url"]}">Read {escape(quiz["term"]["title"])} in the glossary</a>'
        in page.text
    )
    assert "✓ The right answer" in text and "Your answer" not in text


def test_a_wrong_answer_says_so_names_its_term_and_gives_the_right_one(client, issues):
    quiz = quiz_of(issues[W49])
    n = wrong_number(quiz)
    page = client.get(f"/issues/2026-W49?answer={n}")
    assert page.status_code == 200
    text = text_of(page.text)
    chosen = quiz["choices"][n - 1]["title"]
    assert (
        f"Not quite. That line describes {chosen}; the right answer is number {quiz['right']}."
        in text
    )
    assert quiz["term"]["definition"] in text
    assert "✗ Your answer" in text and "✓ The right answer" in text
    assert "Right!" not in text


@pytest.mark.parametrize("answer", ["", "0", "4", "02", "two", "%3Cscript%3E", "1%0A", "-1"])
def test_a_garbage_answer_shows_the_question_and_no_verdict(client, issues, answer):
    page = client.get(f"/issues/2026-W49?answer={answer}")
    assert page.status_code == 200
    text = text_of(page.text)
    assert "Last week's term was" in text
    assert "Right!" not in text and "Not quite." not in text
    assert "<script" not in page.text  # served: the server answers, no script needed
    assert "Show the answer" in text  # the question is still answerable


def test_answering_changes_nothing_and_sets_nothing(client, engine, issues):
    before = table_dump(engine)
    from digest.store.db import engagement

    for method in ("GET", "HEAD"):
        for answer in ("1", "2", "3", "junk"):
            response = client.request(method, f"/issues/2026-W49?answer={answer}")
            assert response.status_code == 200
            assert "set-cookie" not in response.headers
    assert table_dump(engine) == before
    with engine.connect() as conn:
        assert conn.execute(engagement.select()).all() == []


def test_served_pages_keep_the_nonce_csp(client, issues):
    page = client.get("/issues/2026-W49?answer=1")
    policy = page.headers["content-security-policy"]
    assert (
        "script-src 'nonce-" in policy
        and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )


def test_each_page_links_its_public_neighbours(client, engine, issues, settings):
    first = client.get("/issues/2026-W48").text
    second = client.get("/issues/2026-W49").text
    assert 'rel="prev"' not in first
    assert f'rel="next" href="{settings.base_url}/issues/2026-W49"' in first
    assert f'rel="prev" href="{settings.base_url}/issues/2026-W48"' in second
    assert 'rel="next"' not in second  # W50 is only built: not public
    assert issues[W48].snapshot["term"]["title"] in text_of(second)  # type: ignore[index]
    # From the moment its send starts an issue is public: its readers hold its links.
    send(engine, W50, to="sending")
    assert client.get("/issues/2026-W50").status_code == 200
    assert (
        f'rel="next" href="{settings.base_url}/issues/2026-W50"'
        in client.get("/issues/2026-W49").text
    )
    assert "2026-W50" in client.get("/issues/").text


def test_a_paused_send_is_public_and_a_failed_issue_is_not(client, engine, issues):
    send(engine, W50, to="paused")
    assert client.get("/issues/2026-W50").status_code == 200
    transition(engine, W50, "failed", now=NOW)
    assert client.get("/issues/2026-W50").status_code == 404
    assert "2026-W50" not in client.get("/issues/").text


def test_pages_and_index_show_calendar_dates(client, issues):
    page = client.get("/issues/2026-W49").text
    # The schedule sends on Mondays: W49 is November 30, W48 November 23.
    assert '<time datetime="2026-11-30">November 30, 2026</time>' in page
    assert "November 23, 2026" in page  # the previous issue's link
    assert "<title>" in page and "November 30, 2026</title>" in page
    index = client.get("/issues/").text
    assert index.index("November 30, 2026") < index.index("November 23, 2026")


def test_the_page_shows_the_frozen_quiz_not_the_current_glossary(client, engine, issues):
    quiz = quiz_of(issues[W49])
    page = client.get(f"/issues/2026-W49?answer={quiz['right']}").text
    for choice in quiz["choices"]:
        assert str(escape(choice["summary"])) in page
    assert check_page(page) == []


# --------------------------------------------------------------------------- the feed


def test_the_feed_has_the_question_but_not_the_answer(client, issues):
    quiz = quiz_of(issues[W49])
    xml = client.get("/feed.xml").text
    item = next(
        i for i in ET.fromstring(xml).iter("item") if i.findtext("link", "").endswith("W49")
    )
    content = item.findtext("{http://purl.org/rss/1.0/modules/content/}encoded") or ""
    assert "Last week's term was" in text_of(content)
    assert sorted(ANSWER_LINK.findall(content)) == ["1", "2", "3"]
    for spoiler in ("Show the answer", "Right!", "Not quite.", "The right answer"):
        assert spoiler not in content
    assert str(escape(quiz["term"]["definition"])) not in content
    assert "<script" not in content and "data-quiz-answer" not in content


# --------------------------------------------------------------------------- the static build


@pytest.fixture
def built(engine, settings, starter_glossary, issues, tmp_path) -> Path:
    out = tmp_path / "site"
    build_site(engine, settings, starter_glossary, W50, out, now=NOW)
    return out


def test_the_static_build_writes_every_public_page_with_its_neighbours(built, settings):
    pages = sorted(p.parent.name for p in (built / "issues").glob("*/index.html"))
    assert pages == ["2026-W48", "2026-W49", "2026-W50"]
    second = (built / "issues/2026-W49/index.html").read_text()
    # W50 is in this build, so W49's page, written before it existed, now links it.
    assert f'rel="next" href="{settings.base_url}/issues/2026-W50"' in second
    assert f'rel="prev" href="{settings.base_url}/issues/2026-W48"' in second
    for week in pages:
        assert check_page((built / f"issues/{week}/index.html").read_text()) == []


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _open(browser, url: str, *, script: bool = True):  # type: ignore[no-untyped-def]
    context = browser.new_context(
        java_script_enabled=script, viewport={"width": 375, "height": 800}
    )
    page = context.new_page()
    page.route("http*://**/*", lambda route: route.abort())  # offline: the file only
    page.goto(url)
    return context, page


@pytest.mark.browser
def test_static_answers_work_in_chromium(browser, built, issues):
    quiz = quiz_of(issues[W50])
    file = (built / "issues/2026-W50/index.html").as_uri()
    for n in (1, 2, 3):
        context, page = _open(browser, f"{file}?answer={n}#quiz")
        try:
            shown = page.locator("#quiz [data-quiz-answer]:visible")
            assert shown.count() == 1
            verdict = shown.inner_text()
            if n == quiz["right"]:
                assert verdict.startswith("Right!")
            else:
                assert verdict.startswith("Not quite.")
                assert quiz["choices"][n - 1]["title"] in verdict
            assert page.locator("#quiz-answer").evaluate("d => d.open")
            assert quiz["term"]["definition"] in page.locator("#quiz-answer").inner_text()
        finally:
            context.close()
    for junk in ("", "?answer=7", '?answer=1"]', "?answer=%3Cimg%20src%3Dx%3E"):
        context, page = _open(browser, f"{file}{junk}#quiz")
        try:
            assert page.locator("#quiz [data-quiz-answer]:visible").count() == 0
            assert not page.locator("#quiz-answer").evaluate("d => d.open")
        finally:
            context.close()


@pytest.mark.browser
def test_without_script_the_answer_is_one_click_away(browser, built, issues):
    quiz = quiz_of(issues[W50])
    file = (built / "issues/2026-W50/index.html").as_uri()
    context, page = _open(browser, f"{file}?answer=1#quiz", script=False)
    try:
        assert page.locator("#quiz [data-quiz-answer]:visible").count() == 0
        answer = page.locator("#quiz-answer")
        assert not answer.evaluate("d => d.open")
        page.locator("#quiz-answer summary").click()
        assert answer.evaluate("d => d.open")
        right = quiz["choices"][quiz["right"] - 1]["summary"]
        assert f"The right answer is number {quiz['right']}: {right}" in answer.inner_text()
    finally:
        context.close()
