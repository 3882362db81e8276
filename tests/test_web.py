"""The web service over HTTP: subscribe, confirm, one-click unsubscribe, archive, feed, health.

The app runs in-process (Starlette's TestClient) against a real database on both backends and
the real outbox transport; no GET may change anything, and answers must not tell whether an
address is already subscribed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import feedparser
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from digest.campaign.build import build_issue
from digest.config import Settings
from digest.core.tokens import make_token
from digest.model.weeks import IsoWeek
from digest.readers.signup import subscribe
from digest.store import db
from digest.store.issues import transition
from digest.store.subscribers import get_subscriber, mark_status
from digest.web import create_app
from digest.web.webhooks import router as webhook_router
from tests.test_subscribers import signed_ago

ANN = "ann@example.org"


@pytest.fixture
def client(settings: Settings, engine: object) -> Iterator[TestClient]:
    # `engine`: migrated beforehand, as conftest's client is (see there).
    with TestClient(create_app(settings), client=("203.0.113.5", 40000)) as c:
        yield c


def outbox(settings: Settings) -> list[Path]:
    folder = Path(settings.outbox_dir)
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def confirm_token_from_outbox(settings: Settings) -> str:
    mail = message_from_bytes(outbox(settings)[-1].read_bytes(), policy=policy.default)
    text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    return re.search(rf"{re.escape(settings.base_url)}/confirm/(\S+)", text).group(1)  # type: ignore[union-attr]


def status_of(engine, email: str = ANN) -> str | None:  # type: ignore[no-untyped-def]
    found = get_subscriber(engine, email)
    return found.status if found else None


def csp_nonce(response) -> str:  # type: ignore[no-untyped-def]
    return re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"]).group(1)  # type: ignore[union-attr]


# --------------------------------------------------------------------------- pages and headers


def test_subscribe_page_has_a_form_for_email_name_and_the_browsers_time_zone(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert '<form method="post" action="subscribe"' in html
    assert 'type="email" id="email" name="email" required' in html
    assert 'name="name"' in html
    assert '<input type="hidden" id="timezone" name="timezone"' in html
    assert "Intl.DateTimeFormat().resolvedOptions().timeZone" in html
    assert f'<script nonce="{csp_nonce(page)}">' in html


@pytest.mark.parametrize("path", ["/", "/confirm/forged", "/unsubscribe/forged", "/issues/"])
def test_pages_carry_security_headers(client, path):
    page = client.get(path)
    headers = page.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"  # tokens in URLs never leak onward
    policy_ = headers["content-security-policy"]
    assert "default-src 'none'" in policy_
    script_src = re.search(r"script-src ([^;]+)", policy_).group(1)  # type: ignore[union-attr]
    assert script_src == f"'nonce-{csp_nonce(page)}'"
    assert "frame-ancestors 'none'" in policy_


def test_every_response_gets_a_fresh_nonce(client):
    assert csp_nonce(client.get("/")) != csp_nonce(client.get("/"))


def test_an_unknown_path_is_a_404_page(client):
    page = client.get("/nope")
    assert page.status_code == 404
    assert "There is no page at this address." in page.text


def test_healthz_is_up_and_readyz_checks_the_database(client):
    answer = client.get("/healthz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json()["checks"]["database"]) == (200, "ok")


def test_the_database_is_migrated_when_the_app_starts(settings):
    with TestClient(create_app(settings)) as c:
        assert db.current_revision(c.app.state.engine) is not None


# --------------------------------------------------------------------------- subscribe


def test_form_subscribe_answers_check_your_inbox_and_mails_a_confirm_link(client, engine, settings):
    answer = client.post(
        "/subscribe", data={"email": " Ann@Example.org", "name": "Ann", "timezone": "Asia/Tokyo"}
    )
    assert answer.status_code == 200
    assert "Check your inbox" in answer.text
    sub = get_subscriber(engine, ANN)
    assert (sub.status, sub.name, sub.timezone, sub.source) == (
        "pending",
        "Ann",
        "Asia/Tokyo",
        "web",
    )
    assert len(outbox(settings)) == 1


def test_json_subscribe_answers_json(client, engine):
    answer = client.post("/subscribe", json={"email": ANN, "timezone": "Europe/Paris"})
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert get_subscriber(engine, ANN).timezone == "Europe/Paris"


def test_subscribe_answers_the_same_whoever_the_address_belongs_to(client, engine, settings):
    """No enumeration: new, pending, active and suppressed addresses get one identical answer."""
    subscribe(engine, settings, "pending@example.org", now=db.utcnow())
    active = subscribe(engine, settings, "active@example.org", now=db.utcnow()).subscriber
    client.post(f"/confirm/{make_token(settings, 'confirm', active.id, active.email)}")
    gone = subscribe(engine, settings, "gone@example.org", now=db.utcnow()).subscriber
    mark_status(engine, gone.id, "complained", db.utcnow())
    assert status_of(engine, "active@example.org") == "active"

    forms, jsons = set(), set()
    for address in (
        "new@example.org",
        "pending@example.org",
        "active@example.org",
        "gone@example.org",
    ):
        form = client.post("/subscribe", data={"email": address})
        forms.add((form.status_code, form.text))
        as_json = client.post("/subscribe", json={"email": address})
        jsons.add((as_json.status_code, as_json.text))
    assert len(forms) == 1
    assert len(jsons) == 1


def test_an_invalid_address_re_renders_the_form_with_the_reason(client, engine):
    answer = client.post("/subscribe", data={"email": "<b>ann</b>", "name": "Ann <3"})
    assert answer.status_code == 422
    assert "That email address is not valid" in answer.text
    assert 'value="&lt;b&gt;ann&lt;/b&gt;"' in answer.text  # what was typed, kept and escaped
    assert 'value="Ann &lt;3"' in answer.text
    assert "<b>ann</b>" not in answer.text
    assert status_of(engine, "ann") is None


def test_an_invalid_address_in_json_answers_a_json_error(client):
    answer = client.post("/subscribe", json={"email": "ann@"})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("That email address is not valid")
    assert answer.json()["field"] == "email"


def test_a_name_with_a_line_break_is_refused(client, engine):
    answer = client.post("/subscribe", json={"email": ANN, "name": "Ann\r\nBcc: x@example.org"})
    assert answer.status_code == 422
    assert answer.json()["field"] == "name"
    assert status_of(engine) is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "the body is not valid JSON"),
        (b'["ann@example.org"]', "send a JSON object"),
        (b'{"email": 42}', "email must be a string"),
    ],
)
def test_a_malformed_json_body_is_a_clear_422(client, body, error):
    answer = client.post("/subscribe", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422
    assert error in answer.json()["error"]


def test_subscribe_is_rate_limited_per_address_of_the_client(settings):
    app = create_app(settings.model_copy(update={"subscribe_rate_limit": 3}))
    with TestClient(app, client=("203.0.113.5", 1)) as first:
        for i in range(3):
            assert first.post("/subscribe", data={"email": f"a{i}@example.org"}).status_code == 200
        refused = first.post("/subscribe", data={"email": "a9@example.org"})
        assert refused.status_code == 429
        assert "Too many subscribe requests" in refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        as_json = first.post("/subscribe", json={"email": "a9@example.org"})
        assert as_json.status_code == 429
        assert "Too many" in as_json.json()["error"]
        other = TestClient(app, client=("198.51.100.7", 1))
        assert other.post("/subscribe", data={"email": "b@example.org"}).status_code == 200
        assert get_subscriber(app.state.engine, "a9@example.org") is None


def test_a_failed_confirmation_send_still_gets_the_usual_answer(settings, engine, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    with TestClient(create_app(settings.model_copy(update={"outbox_dir": blocked}))) as c:
        answer = c.post("/subscribe", data={"email": ANN})
    assert answer.status_code == 200
    assert "Check your inbox" in answer.text
    assert get_subscriber(engine, ANN).confirm_sent_at is None  # so trying again sends at once


# --------------------------------------------------------------------------- confirm


def test_opening_a_confirm_link_changes_nothing_until_the_button_is_pressed(
    client, engine, settings
):
    client.post("/subscribe", data={"email": ANN})
    token = confirm_token_from_outbox(settings)
    for _ in range(2):  # a mail scanner may fetch a link more than once
        page = client.get(f"/confirm/{token}")
        assert page.status_code == 200
        assert status_of(engine) == "pending"
    assert '<form method="post" id="confirm-form">' in page.text
    assert "Confirm my subscription</button>" in page.text
    nonce = csp_nonce(page)
    script = re.search(rf'<script nonce="{nonce}">(.*?)</script>', page.text, re.S).group(1)  # type: ignore[union-attr]
    assert 'getElementById("confirm-form").submit()' in script
    assert page.headers["cache-control"] == "no-store"


def test_pressing_confirm_activates_the_subscription(client, engine, settings):
    client.post("/subscribe", data={"email": ANN})
    token = confirm_token_from_outbox(settings)
    done = client.post(f"/confirm/{token}")
    assert done.status_code == 200
    assert "Your subscription is confirmed" in done.text
    assert status_of(engine) == "active"
    assert "Your subscription is confirmed" in client.get(f"/confirm/{token}").text


def test_an_expired_confirm_link_is_a_400_page_with_a_clear_message(client, engine, settings):
    sub = subscribe(engine, settings, ANN, now=db.utcnow()).subscriber
    with signed_ago(settings.confirm_max_age + 1):
        token = make_token(settings, "confirm", sub.id, sub.email)
    for answer in (client.get(f"/confirm/{token}"), client.post(f"/confirm/{token}")):
        assert answer.status_code == 400
        assert "This link has expired." in answer.text
        assert "Traceback" not in answer.text
    assert status_of(engine) == "pending"


@pytest.mark.parametrize("method", ["get", "post"])
def test_forged_tampered_and_wrong_purpose_confirm_links_are_400(client, engine, settings, method):
    sub = subscribe(engine, settings, ANN, now=db.utcnow()).subscriber
    good = make_token(settings, "confirm", sub.id, sub.email)
    for token in (
        "forged",
        good[:-3] + ("abc" if not good.endswith("abc") else "xyz"),
        make_token(settings, "unsubscribe", sub.id, sub.email),
        make_token(settings, "confirm", sub.id, "mallory@example.org"),
    ):
        answer = getattr(client, method)(f"/confirm/{token}")
        assert answer.status_code == 400
        assert "This link is not valid." in answer.text
    assert status_of(engine) == "pending"


def test_a_confirm_link_after_unsubscribing_says_the_subscription_was_cancelled(
    client, engine, settings
):
    sub = subscribe(engine, settings, ANN, now=db.utcnow()).subscriber
    mark_status(engine, sub.id, "unsubscribed", db.utcnow())
    answer = client.post(f"/confirm/{make_token(settings, 'confirm', sub.id, sub.email)}")
    assert answer.status_code == 400
    assert "cancelled" in answer.text
    assert status_of(engine) == "unsubscribed"


# --------------------------------------------------------------------------- unsubscribe


@pytest.fixture
def active_ann(client, engine, settings):  # type: ignore[no-untyped-def]
    client.post("/subscribe", data={"email": ANN})
    client.post(f"/confirm/{confirm_token_from_outbox(settings)}")
    sub = get_subscriber(engine, ANN)
    assert sub.status == "active"
    return sub


def test_opening_an_unsubscribe_link_shows_a_button_and_changes_nothing(
    client, engine, settings, active_ann
):
    token = make_token(settings, "unsubscribe", active_ann.id, active_ann.email)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert "Unsubscribe</button>" in page.text
    assert "a…@example.org" in page.text
    assert ANN not in page.text  # a forwarded link does not hand out the address
    assert status_of(engine) == "active"


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"data": {"List-Unsubscribe": "One-Click"}},  # RFC 8058, form-encoded
        {"content": b""},  # some clients send nothing at all
        {"files": {"List-Unsubscribe": (None, "One-Click")}},  # multipart/form-data
    ],
    ids=["form-encoded", "empty", "multipart"],
)
def test_one_click_unsubscribe_answers_200_at_once(
    client, engine, settings, active_ann, request_kwargs
):
    token = make_token(settings, "unsubscribe", active_ann.id, active_ann.email)
    answer = client.post(f"/unsubscribe/{token}", follow_redirects=False, **request_kwargs)
    assert answer.status_code == 200
    assert "You are unsubscribed" in answer.text
    assert status_of(engine) == "unsubscribed"


def test_an_unsubscribe_link_from_years_ago_still_works(client, engine, settings, active_ann):
    with signed_ago(3 * 365 * 24 * 3600):
        token = make_token(settings, "unsubscribe", active_ann.id, active_ann.email)
    assert client.post(f"/unsubscribe/{token}").status_code == 200
    assert status_of(engine) == "unsubscribed"


def test_a_forged_or_confirm_token_cannot_unsubscribe(client, engine, settings, active_ann):
    for token in ("forged", make_token(settings, "confirm", active_ann.id, active_ann.email)):
        answer = client.post(f"/unsubscribe/{token}")
        assert answer.status_code == 400
        assert "This link is not valid." in answer.text
    assert status_of(engine) == "active"


def test_an_unsubscribe_link_of_an_erased_subscriber_still_answers_200(client, engine, settings):
    token = make_token(settings, "unsubscribe", 4242, "erased@example.org")
    assert "You are unsubscribed" in client.get(f"/unsubscribe/{token}").text
    assert client.post(f"/unsubscribe/{token}").status_code == 200


# --------------------------------------------------------------------------- archive and feed


@pytest.fixture
def sent_and_built(engine, settings, starter_glossary):  # type: ignore[no-untyped-def]
    """Week 18 was sent; week 19 is built but not sent, so it is not public yet."""
    now = db.utcnow()
    sent, built = IsoWeek(2026, 18), IsoWeek(2026, 19)
    for week in (sent, built):
        build_issue(engine, settings, starter_glossary, week, now=now - timedelta(days=1))
    transition(engine, sent, "sending", now=now)
    return transition(engine, sent, "sent", now=now)


def test_the_archive_lists_sent_issues_only(client, sent_and_built):
    record = sent_and_built
    index = client.get("/issues/")
    assert index.status_code == 200
    assert "/issues/2026-W18" in index.text
    assert "/issues/2026-W19" not in index.text
    assert record.snapshot["term"]["title"] in index.text


def test_an_archived_issue_page_shows_what_was_sent(client, sent_and_built):
    record = sent_and_built
    page = client.get("/issues/2026-W18")
    assert page.status_code == 200
    # Rendered from the frozen snapshot at each request (it links the issues on either side),
    # so it shows the sent content, not a copy of the stored page.
    title, definition = (str(escape(record.snapshot["term"][k])) for k in ("title", "definition"))
    assert title in page.text and definition in page.text
    assert record.archive_html is not None and definition in record.archive_html
    assert page.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("week", ["2026-W19", "2026-W30", "last-week", "2026-W99"])
def test_unsent_unknown_and_malformed_weeks_are_404(client, sent_and_built, week):
    assert client.get(f"/issues/{week}").status_code == 404


def test_the_feed_is_rss_of_sent_issues(client, settings, sent_and_built):
    answer = client.get("/feed.xml")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/rss+xml")
    parsed = feedparser.parse(answer.content)
    assert not parsed.bozo
    assert [e.link for e in parsed.entries] == [f"{settings.base_url}/issues/2026-W18"]


# --------------------------------------------------------------------------- webhook


def test_the_delivery_webhook_is_mounted(client):
    for route in webhook_router.routes:
        answer = client.post(route.path, json=[])  # type: ignore[attr-defined]
        assert answer.status_code != 404, route.path  # type: ignore[attr-defined]
    assert client.post("/webhooks/not-there", json=[]).status_code == 404
