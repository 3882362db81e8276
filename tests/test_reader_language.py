"""A reader's own language: chosen in the preference centre, taken from the browser at sign-up,
and the weekly issue delivered to each reader in theirs, once, across crashes and shared sends.
"""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest

from digest.config import Settings
from digest.core.i18n import accepted_locale
from digest.core.tokens import make_token
from digest.model.subscriber import InvalidSubscriber, Subscriber
from digest.readers.preferences import choose_language
from digest.store.reader_language import adopt_language, languages_in_use
from digest.store.subscribers import add_confirmed, get_subscriber
from tests.sending import NOW

ANN = "ann@example.org"


@pytest.fixture
def ann(engine) -> Subscriber:  # type: ignore[no-untyped-def]
    sub, _ = add_confirmed(engine, ANN, name="Ann", now=NOW - timedelta(days=30))
    return sub


def page_of(settings: Settings, sub: Subscriber) -> str:
    return f"/preferences/{make_token(settings, 'preferences', sub.id, sub.email)}"


def notice(html: str) -> str:
    found = re.search(r'id="(?:notice|error)"[^>]*>([^<]*)<', html)
    assert found, html
    return unescape(found.group(1))


# --------------------------------------------------------------------------- choosing


def test_a_reader_chooses_dutch_in_the_preference_centre(client, settings, engine, ann):
    page = client.get(page_of(settings, ann)).text
    assert '<option value="nl" lang="nl">Nederlands</option>' in page
    assert "The newsletter's own (English)</option>" in page

    saved = client.post(f"{page_of(settings, ann)}/language", data={"language": "nl"})
    assert saved.status_code == 200
    assert notice(saved.text) == "Saved: the next issues come in Nederlands."
    assert '<option value="nl" lang="nl" selected>Nederlands</option>' in saved.text
    assert get_subscriber(engine, ANN).language == "nl"  # type: ignore[union-attr]


def test_the_newsletters_own_language_is_stored_as_no_choice(client, settings, engine, ann):
    choose_language(engine, ann.id, "nl", now=NOW)
    saved = client.post(f"{page_of(settings, ann)}/language", data={"language": ""})
    assert notice(saved.text) == "Saved: the next issues come in English."
    assert get_subscriber(engine, ANN).language is None  # type: ignore[union-attr]


def test_a_language_digest_has_no_catalogue_for_is_refused(client, settings, engine, ann):
    refused = client.post(f"{page_of(settings, ann)}/language", data={"language": "fr"})
    assert refused.status_code == 422
    assert "en, nl" in notice(refused.text)
    assert get_subscriber(engine, ANN).language is None  # type: ignore[union-attr]
    with pytest.raises(InvalidSubscriber, match="language"):
        choose_language(engine, ann.id, "klingon", now=NOW)


def test_the_languages_in_use_are_those_readers_chose(engine, ann):
    assert languages_in_use(engine) == set()
    choose_language(engine, ann.id, "nl", now=NOW)
    assert languages_in_use(engine) == {"nl"}


# --------------------------------------------------------------------------- signing up


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7", "nl"),
        ("en-GB,en;q=0.9,nl;q=0.8", "en"),
        ("fr-FR, de;q=0.8, nl;q=0.1", "nl"),
        ("fr-FR, de;q=0.8", None),
        ("nl;q=0, en;q=0.5", "en"),
        ("", None),
        ("nl;q=nonsense, *", None),
    ],
)
def test_the_browsers_language_is_taken_when_digest_has_it(header, expected):
    assert accepted_locale(header) == expected


def test_a_sign_up_keeps_the_browsers_dutch(client, engine):
    answer = client.post(
        "/subscribe", data={"email": ANN}, headers={"Accept-Language": "nl-BE,nl;q=0.9,en;q=0.5"}
    )
    assert answer.status_code in (200, 303)
    assert get_subscriber(engine, ANN).language == "nl"  # type: ignore[union-attr]


def test_a_sign_up_in_the_newsletters_own_language_stores_no_choice(client, engine):
    client.post("/subscribe", data={"email": ANN}, headers={"Accept-Language": "en-US,en"})
    assert get_subscriber(engine, ANN).language is None  # type: ignore[union-attr]


def test_a_browser_header_never_overwrites_a_readers_choice(client, engine, ann):
    choose_language(engine, ann.id, "en", now=NOW)
    client.post("/subscribe", data={"email": ANN}, headers={"Accept-Language": "nl"})
    assert get_subscriber(engine, ANN).language == "en"  # type: ignore[union-attr]
    assert adopt_language(engine, ann.id, "nl") is False
