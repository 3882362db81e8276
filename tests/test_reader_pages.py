"""The reader's pages as a new reader meets them: a home page with a sample and the schedule in
words, a confirmed page that leads somewhere, "subscribe again" in one click (and when it is
refused), a time-zone picker of current zones, and test copies whose links all lead to a page.

The app runs in-process (Starlette's TestClient) on both backends; the layout and contrast are
checked in Chromium (test_reader_pages_browser.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from digest.campaign.build import build_issue
from digest.config import Settings
from digest.core.reader_times import schedule_words
from digest.core.tokens import make_token
from digest.core.urls import Urls
from digest.core.zones import browser_aliases, canonical_zone, canonical_zones, zone_groups
from digest.delivery.outbox import OutboxTransport
from digest.delivery.samples import send_test
from digest.model.glossary import Glossary
from digest.model.subscriber import Subscriber
from digest.model.weeks import IsoWeek
from digest.readers.signup import UNDO_WINDOW, subscribe
from digest.store import db
from digest.store.issues import transition
from digest.store.subscribers import (
    add_confirmed,
    erase,
    get_subscriber,
    mark_status,
    unsubscribe_subscriber,
)
from digest.web import create_app
from tests.desk_client import desk_client, log_in, make_editor

ANN = "ann@example.org"
SENT, BUILT = IsoWeek(2026, 18), IsoWeek(2026, 19)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(v for k, v in attrs if k in ("href", "action") and v)


def links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def words(html: str) -> str:
    """The page's text as a reader sees it: tags out, entities decoded, one space."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def outbox(settings: Settings) -> list[Path]:
    folder = Path(settings.outbox_dir)
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def token(settings: Settings, purpose: str, sub: Subscriber) -> str:
    return make_token(settings, purpose, sub.id, sub.email)  # type: ignore[arg-type]


@pytest.fixture
def sent_issue(engine: Engine, settings: Settings, starter_glossary: Glossary) -> str:
    """Week 18 was sent; week 19 is built but not sent. Returns week 18's term title."""
    now = db.utcnow()
    for week in (SENT, BUILT):
        build_issue(engine, settings, starter_glossary, week, now=now - timedelta(days=1), news=[])
    transition(engine, SENT, "sending", now=now)
    record = transition(engine, SENT, "sent", now=now)
    title: str = record.snapshot["term"]["title"]
    return title


def app_with(settings: Settings, **changes: object) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update=changes))) as c:
        yield c


# --------------------------------------------------------------------------- the home page


def test_the_home_page_shows_the_latest_sent_issue_as_a_sample(
    client, settings, engine, sent_issue
):
    page = client.get("/")
    assert page.status_code == 200
    sample = re.search(r'<section class="sample" id="sample".*?</section>', page.text, re.S)
    assert sample is not None
    said = words(sample.group(0))
    assert sent_issue in said
    assert "The latest issue · April 27, 2026" in said  # week 18's Monday, the schedule's day
    archive = Urls.from_settings(settings).archive_page(SENT)
    assert archive in links(sample.group(0))
    assert f"/issues/{BUILT}" not in page.text  # built, not sent: not public yet
    assert client.get(path(archive)).status_code == 200


def test_the_home_page_names_the_newsletter_once_and_has_no_sample_before_the_first_issue(
    client, settings
):
    page = client.get("/")
    assert 'id="sample"' not in page.text
    h1 = re.search(r"<h1>(.*?)</h1>", page.text, re.S)
    assert h1 is not None and settings.newsletter_name not in h1.group(1)
    main = re.search(r"<main>(.*?)</main>", page.text, re.S)
    assert main is not None and settings.newsletter_name not in main.group(1)


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({}, "A new issue arrives every Monday at 09:00 (UTC time)."),
        (
            {"timezone": "Europe/Amsterdam"},
            "A new issue arrives every Monday at 09:00 (Europe/Amsterdam time).",
        ),
        (
            {"timezone": "Europe/Amsterdam", "local_time_delivery": True},
            "A new issue arrives every Monday at 09:00 in your own time zone.",
        ),
        (
            {"schedule": "thu 18:30", "local_time_delivery": True},
            "A new issue arrives every Thursday at 18:30 in your own time zone.",
        ),
    ],
)
def test_the_home_page_says_what_arrives_when(settings, engine, changes, said):
    for client in app_with(settings, **changes):
        assert said in words(client.get("/").text)


def test_schedule_words_for_a_schedule_that_skips_weeks(settings):
    monthly = settings.model_copy(
        update={"schedule": "0 9 1 * *", "local_time_delivery": True, "timezone": "UTC"}
    )
    words_ = schedule_words(monthly, datetime(2026, 5, 4, tzinfo=UTC))
    assert words_ == "next on Monday 1 June at 09:00 in your own time zone"


# --------------------------------------------------------------------------- confirmed


def test_the_confirmed_page_links_to_the_latest_issue_and_the_archive(
    client, settings, engine, sent_issue
):
    ann = subscribe(engine, settings, ANN, timezone="Asia/Tokyo", now=db.utcnow()).subscriber
    link = f"/confirm/{token(settings, 'confirm', ann)}"
    for answer in (client.post(link), client.get(link)):  # confirming, and the link afterwards
        assert answer.status_code == 200
        said = words(answer.text)
        assert "Your subscription is confirmed." in said
        assert "A new issue arrives every Monday at 18:00 (Asia/Tokyo time)." in said
        assert sent_issue in said
        urls = Urls.from_settings(settings)
        found = links(answer.text)
        assert urls.archive_page(SENT) in found and urls.archive_index() in found
        for url in (urls.archive_page(SENT), urls.archive_index()):
            assert client.get(path(url)).status_code == 200
    assert get_subscriber(engine, ANN).status == "active"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- subscribe again


@pytest.fixture
def ann(engine: Engine) -> Subscriber:
    sub, _ = add_confirmed(engine, ANN, name="Ann", timezone="Asia/Tokyo", now=db.utcnow())
    return sub


def resubscribe_action(html: str) -> str:
    found = re.search(r'<form method="post" action="([^"]+)" id="resubscribe-form">', html)
    assert found, html
    return found.group(1)


def test_subscribe_again_right_after_unsubscribing_restores_the_subscription_at_once(
    client, settings, engine, ann
):
    link = f"/unsubscribe/{token(settings, 'unsubscribe', ann)}"
    gone = client.post(link)
    assert gone.status_code == 200 and "You are unsubscribed" in gone.text
    assert get_subscriber(engine, ANN).status == "unsubscribed"  # type: ignore[union-attr]
    action = resubscribe_action(gone.text)
    assert action == f"{link}/resubscribe"
    assert "One click and your subscription is back as it was." in words(gone.text)
    mails = len(outbox(settings))

    back = client.post(action)
    assert back.status_code == 200
    assert "You are subscribed again" in back.text
    assert "A new issue arrives every Monday at 18:00 (Asia/Tokyo time)." in words(back.text)
    stored = get_subscriber(engine, ANN)
    assert stored is not None
    assert (stored.status, stored.name, stored.timezone) == ("active", "Ann", "Asia/Tokyo")
    assert stored.unsubscribed_at is None and stored.confirmed_at is not None
    assert len(outbox(settings)) == mails  # no confirmation, no second welcome
    again = client.post(action)  # a second press changes nothing
    assert again.status_code == 200 and get_subscriber(engine, ANN) == stored


def test_subscribe_again_long_after_unsubscribing_starts_a_new_double_opt_in(
    client, settings, engine, ann
):
    unsubscribe_subscriber(engine, ann.id, now=db.utcnow() - UNDO_WINDOW - timedelta(hours=1))
    link = f"/unsubscribe/{token(settings, 'unsubscribe', ann)}"
    page = client.get(link)  # the old mail's link, opened again: the page offers it
    assert "sends a confirmation link to a…@example.org" in words(page.text)
    assert get_subscriber(engine, ANN).status == "unsubscribed"  # type: ignore[union-attr]

    answer = client.post(resubscribe_action(page.text))
    assert answer.status_code == 200
    assert "We sent a confirmation link to a…@example.org" in words(answer.text)
    assert get_subscriber(engine, ANN).status == "pending"  # type: ignore[union-attr]
    (mail,) = [m for m in outbox(settings) if "Confirm" in m.read_text()]
    text = message_from_bytes(mail.read_bytes(), policy=policy.default).get_body(
        preferencelist=("plain",)
    )
    confirm = re.search(r"/confirm/(\S+)", text.get_content())  # type: ignore[union-attr]
    assert confirm is not None
    assert client.post(f"/confirm/{confirm.group(1)}").status_code == 200
    assert get_subscriber(engine, ANN).status == "active"  # type: ignore[union-attr]


def test_an_address_that_never_confirmed_goes_through_confirmation_even_at_once(
    client, settings, engine
):
    sub = subscribe(engine, settings, ANN, now=db.utcnow()).subscriber
    unsubscribe_subscriber(engine, sub.id, now=db.utcnow())
    answer = client.post(f"/unsubscribe/{token(settings, 'unsubscribe', sub)}/resubscribe")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert get_subscriber(engine, ANN).status == "pending"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "why"),
    [("bounced", "mail to this address bounced"), ("complained", "reported as spam")],
)
def test_a_bounced_or_complained_address_is_not_subscribed_again(
    client, settings, engine, ann, status, why
):
    mark_status(engine, ann.id, status, db.utcnow())
    before = get_subscriber(engine, ANN)
    link = f"/unsubscribe/{token(settings, 'unsubscribe', ann)}"
    page = client.get(link)
    assert 'id="resubscribe-form"' not in page.text  # nothing to offer
    assert "subscribe page" not in page.text  # and the form would not help either
    answer = client.post(f"{link}/resubscribe")
    assert answer.status_code == 409
    said = words(answer.text)
    assert why in said.lower() and f"write to {settings.sender_email}" in said
    assert "subscribe page" not in said
    assert get_subscriber(engine, ANN) == before
    prefs = client.post(f"/preferences/{token(settings, 'preferences', ann)}/resubscribe")
    assert prefs.status_code == 422 and why in words(prefs.text).lower()
    assert get_subscriber(engine, ANN) == before


def test_an_erased_address_is_sent_to_the_subscribe_form(client, settings, engine, ann):
    link = f"/unsubscribe/{token(settings, 'unsubscribe', ann)}"
    erase(engine, ann.id)
    page = client.get(link)
    assert "You are unsubscribed" in page.text and 'id="resubscribe-form"' not in page.text
    assert "You can subscribe again any time on the subscribe page" in words(page.text)
    answer = client.post(f"{link}/resubscribe")
    assert answer.status_code == 409
    assert "no longer on our list" in words(answer.text)
    assert get_subscriber(engine, ANN) is None


def test_subscribe_again_takes_a_post_with_the_readers_own_unsubscribe_link(
    client, settings, engine, ann
):
    unsubscribe_subscriber(engine, ann.id, now=db.utcnow())
    before = get_subscriber(engine, ANN)
    good = token(settings, "unsubscribe", ann)
    # A scanner's GET and HEAD of the button's address (or of the page) change nothing.
    for method in ("GET", "HEAD"):
        assert client.request(method, f"/unsubscribe/{good}/resubscribe").status_code == 405
        assert client.request(method, f"/unsubscribe/{good}").status_code == 200
    # Another site cannot forge the link: a made-up, tampered or other-purpose token does
    # nothing, and a genuine one of an address this reader no longer has finds no one.
    for bad in (
        "forged",
        good[:-3] + ("abc" if not good.endswith("abc") else "xyz"),
        token(settings, "preferences", ann),
        token(settings, "confirm", ann),
    ):
        answer = client.post(f"/unsubscribe/{bad}/resubscribe")
        assert answer.status_code == 400 and "This link does not work" in answer.text
    moved = make_token(settings, "unsubscribe", ann.id, "mallory@example.org")
    assert client.post(f"/unsubscribe/{moved}/resubscribe").status_code == 409
    assert get_subscriber(engine, ANN) == before
    # The page's form posts only to this site.
    assert (
        "form-action 'self'"
        in client.get(f"/unsubscribe/{good}").headers["content-security-policy"]
    )


def test_the_preference_centre_offers_subscribe_again_to_a_reader_who_left(
    client, settings, engine, ann
):
    link = f"/preferences/{token(settings, 'preferences', ann)}"
    gone = client.post(f"{link}/unsubscribe")
    assert 'id="resubscribe-form"' in gone.text
    assert client.get(f"{link}/resubscribe").status_code == 405
    assert get_subscriber(engine, ANN).status == "unsubscribed"  # type: ignore[union-attr]
    back = client.post(resubscribe_action(gone.text))
    assert back.status_code == 200
    assert "Welcome back: your subscription is on again, as it was." in words(back.text)
    assert 'id="unsubscribe-form"' in back.text and 'id="resubscribe-form"' not in back.text
    assert get_subscriber(engine, ANN).status == "active"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the zone picker


def options(html: str) -> list[tuple[str, str, str]]:
    """(group label, value, label) of every option of the time-zone select."""
    select = re.search(r'<select id="timezone".*?</select>', html, re.S)
    assert select is not None
    found, group = [], ""
    for match in re.finditer(
        r'<optgroup label="([^"]*)">|<option value="([^"]*)"[^>]*>([^<]*)</option>',
        select.group(0),
    ):
        if match.group(1) is not None:
            group = unescape(match.group(1))
        else:
            found.append((group, match.group(2), unescape(match.group(3))))
    return found


def selected(html: str) -> str:
    """The time-zone select's chosen value (the page has other selects: the language)."""
    picker = re.search(r'<select id="timezone".*?</select>', html, re.S)
    assert picker is not None
    found = re.findall(r'<option value="([^"]*)" selected>', picker.group(0))
    assert len(found) == 1, found
    return str(found[0])


def test_the_zone_picker_lists_current_zones_grouped_by_region_with_readable_labels(
    client, settings, ann
):
    page = client.get(f"/preferences/{token(settings, 'preferences', ann)}").text
    listed = options(page)
    values = [value for _, value, _ in listed]
    assert values[0] == ""  # the newsletter's own zone
    assert len(values) == len(set(values)) == len(canonical_zones()) + 1
    # No legacy duplicate: the current name only.
    assert "Asia/Kolkata" in values and "Asia/Calcutta" not in values
    assert "Europe/Kyiv" in values and "Europe/Kiev" not in values
    assert not set(values) & set(browser_aliases())
    assert not any(v.startswith(("Etc/", "US/", "posix")) for v in values)
    # Grouped: each zone under its own region, each group sorted by what it shows.
    groups = [g for g in dict.fromkeys(group for group, _, _ in listed[1:])]
    assert groups[:3] == ["Africa", "Americas", "Antarctica"]
    assert groups[-1] == "Coordinated Universal Time"
    regions = {"Americas": "America/", "Europe": "Europe/", "Asia": "Asia/"}
    for group, value, _ in listed[1:]:
        if group in regions:
            assert value.startswith(regions[group]), (group, value)
    assert ("Asia", "Asia/Kolkata", "Kolkata (India)") in listed
    assert ("Americas", "America/Indiana/Knox", "Knox, Indiana (United States)") in listed
    assert ("Europe", "Europe/Amsterdam", "Amsterdam (Netherlands)") in listed
    europe = [label.casefold() for group, _, label in listed if group == "Europe"]
    assert europe == sorted(europe)
    assert selected(page) == "Asia/Tokyo"


def test_zone_labels_follow_the_language_and_legacy_names_map_to_current_ones():
    dutch = {c.value: c.label for g in zone_groups("nl") for c in g.zones}
    assert dutch["Europe/Amsterdam"] == "Amsterdam (Nederland)"
    assert canonical_zone("Asia/Calcutta") == "Asia/Kolkata"
    assert canonical_zone("US/Pacific") == "America/Los_Angeles"
    assert canonical_zone("Etc/UTC") == canonical_zone("UTC") == "UTC"
    assert canonical_zone("EST5EDT") == "EST5EDT"  # no current name: kept as it is
    assert browser_aliases()["Asia/Calcutta"] == "Asia/Kolkata"
    assert set(browser_aliases().values()) <= set(canonical_zones())


def test_a_stored_legacy_zone_shows_selected_as_its_current_name(client, settings, engine):
    sub, _ = add_confirmed(engine, ANN, timezone="Asia/Calcutta", now=db.utcnow())
    page = client.get(f"/preferences/{token(settings, 'preferences', sub)}").text
    assert selected(page) == "Asia/Kolkata"
    assert "every Monday at 14:30 (Asia/Kolkata time)" in words(page)
    assert "Asia/Calcutta" not in words(page)
    odd, _ = add_confirmed(engine, "bob@example.org", timezone="EST5EDT", now=db.utcnow())
    page = client.get(f"/preferences/{token(settings, 'preferences', odd)}").text
    assert selected(page) == "EST5EDT"  # not offered, but theirs: shown as it is


def test_a_legacy_zone_is_stored_by_its_current_name(client, settings, engine, ann):
    client.post(
        f"/preferences/{token(settings, 'preferences', ann)}", data={"timezone": "Asia/Calcutta"}
    )
    assert get_subscriber(engine, ANN).timezone == "Asia/Kolkata"  # type: ignore[union-attr]
    client.post("/subscribe", data={"email": "bob@example.org", "timezone": "Europe/Kiev"})
    assert get_subscriber(engine, "bob@example.org").timezone == "Europe/Kyiv"  # type: ignore[union-attr]


def test_the_saved_notice_says_it_once(client, settings, ann):
    link = f"/preferences/{token(settings, 'preferences', ann)}"
    said = words(client.post(link, data={"name": "Ann", "timezone": "Europe/Amsterdam"}).text)
    assert said.count("Saved") == 1
    assert len(re.findall(r"arrives every Monday at \d\d:\d\d", said)) == 1


def test_with_no_zone_stored_the_page_offers_the_browsers_own(client, settings, engine):
    sub, _ = add_confirmed(engine, ANN, now=db.utcnow())
    page = client.get(f"/preferences/{token(settings, 'preferences', sub)}").text
    assert selected(page) == ""  # the server cannot know the browser's zone; the script can
    aliases = re.search(r'<script type="application/json" id="zone-aliases">(.*?)</script>', page)
    assert aliases is not None and '"Asia/Calcutta": "Asia/Kolkata"' in aliases.group(1)
    assert "resolvedOptions().timeZone" in page  # the browser test sees it chosen


# --------------------------------------------------------------------------- test copies


def own_links(mail: Path, base_url: str) -> list[str]:
    message = message_from_bytes(mail.read_bytes(), policy=policy.default)
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    found = set(links(html)) | set(re.findall(r"https?://[^\s<>\"]+", text))
    return sorted(u for u in found if u.startswith(base_url))


@pytest.mark.parametrize("tracked", [False, True], ids=["plain", "click-tracking"])
def test_a_test_copy_links_only_to_pages_that_exist(
    settings_env, engine, starter_glossary, tmp_path, tracked
):
    make_editor(engine, "editor@example.org")
    add_confirmed(engine, "editor@example.org", now=db.utcnow() - timedelta(days=1))
    with desk_client(track_clicks=tracked) as client:
        conf: Settings = client.app.state.settings  # type: ignore[attr-defined]
        week = IsoWeek(2026, 18)
        build_issue(engine, conf, starter_glossary, week, now=db.utcnow(), news=[])
        out = tmp_path / "tests"
        send_test(engine, conf, OutboxTransport(out, clock=db.utcnow), week, "editor@example.org")
        (mail,) = out.glob("*.eml")
        found = own_links(mail, conf.base_url)
        urls = Urls.from_settings(conf)
        # The issue is not public yet: "view in browser" leads to its preview in the desk.
        assert urls.desk_issue(week) in found
        assert not any(u.startswith(urls.archive_page(week)) for u in found)
        log_in(client, "editor@example.org")
        for url in found:
            answer = client.get(path(url))
            assert answer.status_code == 200, (url, answer.status_code)
        preview = client.get(path(urls.desk_issue(week)))
        assert 'id="preview"' in preview.text


def test_a_test_copy_of_a_sent_issue_keeps_its_archive_link(
    settings, engine, starter_glossary, tmp_path
):
    week = IsoWeek(2026, 18)
    build_issue(engine, settings, starter_glossary, week, now=db.utcnow(), news=[])
    transition(engine, week, "sending", now=db.utcnow())
    transition(engine, week, "sent", now=db.utcnow())
    out = tmp_path / "tests"
    send_test(engine, settings, OutboxTransport(out, clock=db.utcnow), week, "x@example.org")
    (mail,) = out.glob("*.eml")
    assert Urls.from_settings(settings).archive_page(week) in own_links(mail, settings.base_url)
