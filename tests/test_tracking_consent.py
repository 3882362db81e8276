"""What readers are told about tracking, and their say in it: with DIGEST_TRACK_CLICKS and
DIGEST_TRACK_OPENS off the subscribe page, the welcome mail and the preference centre promise no
tracking; with either on they say what is counted, how it is kept and how to say no, and the
preference centre's "no tracking for me" is stored on the reader (docs/engagement.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from html import unescape

import pytest
from fastapi.testclient import TestClient

from digest.config import Settings
from digest.core.tokens import make_token
from digest.model.subscriber import InvalidSubscriber, Subscriber
from digest.readers.preferences import erase_data, export_data, set_tracking, welcome_mail
from digest.store.subscribers import add_confirmed, get_subscriber, set_tracking_opt_out
from digest.web import create_app
from tests.sending import NOW

ANN = "ann@example.org"
CLICKS = {"track_clicks": True}
OPENS = {"track_opens": True}
BOTH = {"track_clicks": True, "track_opens": True}
PER_READER = {"track_opens": True, "tracking_detail": "per-reader"}


@pytest.fixture
def ann(engine) -> Subscriber:  # type: ignore[no-untyped-def]
    return add_confirmed(engine, ANN, name="Ann", now=NOW - timedelta(days=3))[0]


def app_with(settings: Settings, **changes: object) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update=changes))) as c:
        yield c


def words(html: str) -> str:
    """The page's text as a reader sees it: tags out, entities decoded, whitespace as one space."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def page_of(settings: Settings, sub: Subscriber) -> str:
    return f"/preferences/{make_token(settings, 'preferences', sub.id, sub.email)}"


def welcome_words(engine, settings: Settings, sub: Subscriber) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    mail = welcome_mail(engine, settings, sub, NOW)
    return words(mail.html), " ".join(mail.text.split())


# --------------------------------------------------------------------------- what readers are told


def test_with_tracking_off_every_reader_page_and_the_welcome_promise_no_tracking(
    settings, engine, ann
):
    assert not (settings.track_clicks or settings.track_opens)  # the default
    for client in app_with(settings):
        subscribe = words(client.get("/").text)
        prefs = client.get(page_of(settings, ann)).text
    assert "Free, no tracking, unsubscribe with one click." in subscribe
    assert "/r/" not in subscribe and "We count" not in subscribe
    assert "No tracking: no counting pixel and no rewritten links." in words(prefs)
    assert 'id="tracking-form"' not in prefs  # nothing to say no to
    for part in welcome_words(engine, settings, ann):
        assert "No tracking: no counting pixel and no rewritten links." in part
        assert "We count how" not in part and "/r/" not in part


@pytest.mark.parametrize(
    ("changes", "counted", "not_said"),
    [
        (
            CLICKS,
            "We count which links of each issue readers follow: the links go through "
            "https://digest.example.org/r/ first. We do not count opens.",
            "tiny image",
        ),
        (
            OPENS,
            "We count how many readers open each issue, with a tiny image in the mail. "
            "We do not count clicks.",
            "/r/",
        ),
        (
            BOTH,
            "We count how many readers open each issue (a tiny image in the mail) and which of "
            "its links they follow (the links go through https://digest.example.org/r/ first).",
            "We do not count",
        ),
    ],
)
def test_with_tracking_on_the_pages_and_the_welcome_say_what_is_counted_and_how_to_say_no(
    settings, engine, ann, changes, counted, not_said
):
    aggregate = "These are totals per issue and per link: nothing about what you open or click"
    on = settings.model_copy(update=changes)
    for client in app_with(settings, **changes):
        subscribe = words(client.get("/").text)
        prefs = words(client.get(page_of(settings, ann)).text)
    html, text = welcome_words(engine, on, ann)
    for said in (subscribe, prefs, html, text):
        assert counted in said
        assert aggregate in said
        assert "Machines (mail scanners, image proxies) are counted apart" in said
        assert not_said not in said
        assert "no tracking," not in said  # the promise is gone when it no longer holds
    for said in (subscribe, html, text):
        assert "say no to this" in said and "your later mails then carry no tracking" in said
    assert "No tracking for me" in prefs


def test_per_reader_detail_is_said_as_such(settings, engine, ann):
    on = settings.model_copy(update=PER_READER)
    kept = "We keep which issues you opened and which links you followed with your subscription"
    for client in app_with(settings, **PER_READER):
        subscribe = words(client.get("/").text)
        prefs = words(client.get(page_of(settings, ann)).text)
    for said in (subscribe, prefs, *welcome_words(engine, on, ann)):
        assert kept in said and "until you erase your data" in said
        assert "totals per issue" not in said


# --------------------------------------------------------------------------- saying no


def test_a_reader_says_no_in_the_preference_centre_and_may_say_yes_again(settings, engine, ann):
    link = page_of(settings, ann)
    for client in app_with(settings, **BOTH):
        refused = client.post(f"{link}/tracking", data={"tracking": "refuse"})
        assert refused.status_code == 200
        assert "Saved: your mails from now on carry no tracking." in words(refused.text)
        assert get_subscriber(engine, ANN).tracking_opt_out is True  # type: ignore[union-attr]
        shown = words(client.get(link).text)
        assert "You said no: your mails carry no tracking." in shown
        assert "Allow counting again" in shown and "No tracking for me" not in shown

        allowed = client.post(f"{link}/tracking", data={"tracking": "allow"})
        assert allowed.status_code == 200
        assert get_subscriber(engine, ANN).tracking_opt_out is False  # type: ignore[union-attr]
        assert "No tracking for me" in words(allowed.text)


@pytest.mark.parametrize("value", ["", "no", "REFUSE", "refuse "])
def test_an_unknown_choice_is_refused_and_nothing_changes(settings, engine, ann, value):
    for client in app_with(settings, **CLICKS):
        answer = client.post(f"{page_of(settings, ann)}/tracking", data={"tracking": value})
    assert answer.status_code == 422
    assert "Choose whether your mails may be counted" in words(answer.text)
    assert get_subscriber(engine, ANN) == ann


@pytest.mark.parametrize(
    "token",
    [
        lambda s, sub: "forged",
        lambda s, sub: make_token(s, "unsubscribe", sub.id, sub.email),  # another purpose
        lambda s, sub: make_token(s, "preferences", sub.id + 1, sub.email),  # another reader
    ],
)
def test_only_the_readers_own_link_can_say_no(settings, engine, ann, token):
    for client in app_with(settings, **CLICKS):
        url = f"/preferences/{token(settings, ann)}/tracking"
        answer = client.post(url, data={"tracking": "refuse"})
        assert answer.status_code == 400
        # Opening the address (a mail scanner following it) changes nothing either.
        assert client.get(f"{page_of(settings, ann)}/tracking").status_code == 405
    assert get_subscriber(engine, ANN) == ann


def test_the_choice_is_the_readers_data_and_holds_while_tracking_is_off(settings, engine, ann):
    said_no = set_tracking(engine, ann.id, allow=False, now=NOW)
    assert said_no.tracking_opt_out and said_no.updated_at == NOW
    assert export_data(engine, ann.id)["subscriber"]["tracking_opt_out"] is True  # type: ignore[index]
    for client in app_with(settings):  # both off: no form, but the choice is shown as kept
        shown = words(client.get(page_of(settings, ann)).text)
    assert "You also said no to tracking, and that holds if it is ever switched on." in shown
    assert erase_data(engine, ann.id)
    with pytest.raises(InvalidSubscriber, match="no longer exists"):
        set_tracking(engine, ann.id, allow=False, now=NOW)
    assert set_tracking_opt_out(engine, ann.id, True, now=NOW) is None
