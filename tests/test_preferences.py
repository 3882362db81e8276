"""The preference centre at /preferences/{token}: a signed per-reader link that never expires,
a page that changes nothing, and one POST per change (name and time zone, pause, unsubscribe,
download my data, erase), each answered with what it did.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from html import unescape

import pytest
from sqlalchemy import select

from digest.campaign.build import build_issue as build_real_issue
from digest.config import Settings
from digest.core.tokens import make_token, read_token
from digest.core.zones import canonical_zones
from digest.delivery.outbox import OutboxTransport
from digest.delivery.runner import send_issue
from digest.model.subscriber import InvalidSubscriber, Subscriber
from digest.model.weeks import IsoWeek
from digest.readers.preferences import export_data, pause, resume, update_profile
from digest.store.db import deliveries, events, utcnow
from digest.store.events import handle_events
from digest.store.subscribers import add_confirmed, get_subscriber
from tests.sending import NOW, WEEK, build_issue, ledger

ANN = "ann@example.org"


@pytest.fixture
def ann(engine) -> Subscriber:  # type: ignore[no-untyped-def]
    sub, _ = add_confirmed(
        engine, ANN, name="Ann", timezone="Europe/Amsterdam", now=NOW - timedelta(days=30)
    )
    return sub


def page_of(settings: Settings, sub: Subscriber) -> str:
    return f"/preferences/{make_token(settings, 'preferences', sub.id, sub.email)}"


def notice(html: str) -> str:
    found = re.search(r'id="(?:notice|error)"[^>]*>([^<]*)<', html)
    assert found, html
    return unescape(found.group(1))


def summary(html: str) -> str:
    """What the page says about the subscription, after the masked address."""
    found = re.search(r'id="summary">.*?</strong>:(.*?)</p>', html, re.S)
    assert found, html
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", found.group(1))).split())


def row(engine, email: str = ANN) -> Subscriber | None:  # type: ignore[no-untyped-def]
    return get_subscriber(engine, email)


# --------------------------------------------------------------------------- the link


def test_every_weekly_mail_links_to_the_readers_own_preference_centre(
    settings, engine, starter_glossary, tmp_path
):
    issue = build_real_issue(engine, settings, starter_glossary, WEEK, now=NOW, news=[])
    assert "%%preferences_url%%" in issue.html and "%%preferences_url%%" in issue.text
    readers = [
        add_confirmed(engine, f"r{i}@example.org", now=NOW - timedelta(days=1))[0] for i in range(3)
    ]
    outbox = tmp_path / "weekly"
    assert (
        send_issue(engine, settings, OutboxTransport(outbox, clock=utcnow), WEEK, now=NOW).status
        == "sent"
    )

    seen: dict[str, int] = {}
    for path in sorted(outbox.glob("*.eml")):
        mail = message_from_bytes(path.read_bytes(), policy=policy.default)
        reader = next(r for r in readers if r.email == mail["To"].addresses[0].addr_spec)
        for part in ("plain", "html"):
            body = mail.get_body(preferencelist=(part,)).get_content()  # type: ignore[union-attr]
            links = set(re.findall(r"https://digest\.example\.org/preferences/([\w.-]+)", body))
            assert len(links) == 1, part
            data = read_token(settings, "preferences", links.pop())
            assert data.subscriber_id == reader.id and data.matches(reader.email)
        seen[reader.email] = seen.get(reader.email, 0) + 1
    assert seen == {r.email: 1 for r in readers}


def test_the_page_shows_the_readers_settings_and_changes_nothing(settings, engine, client, ann):
    before = row(engine)
    page = client.get(page_of(settings, ann))
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "a…@example.org" in page.text and ANN not in page.text
    assert 'value="Ann"' in page.text
    # Changed by issue 19: the picker labels zones readably, the IANA name is the value.
    assert '<option value="Europe/Amsterdam" selected>Amsterdam (Netherlands)</option>' in page.text
    # The schedule is Monday 09:00 UTC: 10:00 or 11:00 in Amsterdam, depending on the season.
    when = re.search(
        r"a new issue arrives every Monday at (\d\d:\d\d) \(Europe/Amsterdam time\)", page.text
    )
    assert when is not None and when.group(1) in ("10:00", "11:00")
    for form in ("profile-form", "pause-form", "unsubscribe-form", "export-form", "erase-form"):
        assert f'id="{form}"' in page.text
    for route in ("", "/pause", "/resume", "/unsubscribe", "/export", "/erase"):
        assert client.get(page_of(settings, ann) + route).status_code in (200, 405)
        assert client.head(page_of(settings, ann) + route).status_code in (200, 405)
    assert row(engine) == before


def test_the_time_zone_list_offers_iana_region_names():
    zones = canonical_zones()
    assert {"Europe/Amsterdam", "America/Los_Angeles", "Asia/Kathmandu", "UTC"} <= set(zones)
    assert list(zones) == sorted(zones)
    assert not any(z.startswith(("Etc/", "US/", "posix")) for z in zones)


@pytest.mark.parametrize(
    "make",
    [
        lambda s, sub: "forged",
        lambda s, sub: make_token(s, "unsubscribe", sub.id, sub.email),  # another purpose
        lambda s, sub: make_token(s, "preferences", sub.id, "other@example.org"),  # another address
        lambda s, sub: make_token(s, "preferences", sub.id + 1, sub.email),  # another reader
    ],
)
def test_only_the_readers_own_preferences_link_opens_the_page(settings, engine, client, ann, make):
    token = make(settings, ann)
    for method, route in [("get", ""), ("post", ""), ("post", "/pause"), ("post", "/erase")]:
        url = f"/preferences/{token}{route}"
        answer = client.get(url) if method == "get" else client.post(url, data={"confirm": "yes"})
        assert answer.status_code == 400
        assert "This link does not work" in answer.text
    assert row(engine) == ann


def test_a_preferences_link_from_years_ago_still_opens_the_page(
    settings, engine, client, ann, monkeypatch
):
    from itsdangerous.timed import TimestampSigner

    three_years = 3 * 365 * 24 * 3600
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) - three_years)
    link = page_of(settings, ann)
    monkeypatch.undo()
    assert client.get(link).status_code == 200


# --------------------------------------------------------------------------- name and time zone


def test_saving_a_new_name_and_time_zone(settings, engine, client, ann):
    answer = client.post(page_of(settings, ann), data={"name": " Ann B ", "timezone": "Asia/Tokyo"})
    assert answer.status_code == 200
    # Changed by issue 19: the notice says what was saved, and the summary above the form (not
    # the notice as well) when issues now arrive, so the page says it once.
    assert notice(answer.text) == "Saved: your name and time zone."
    assert summary(answer.text) == "a new issue arrives every Monday at 18:00 (Asia/Tokyo time)."
    stored = row(engine)
    assert (stored.name, stored.timezone) == ("Ann B", "Asia/Tokyo")
    assert '<option value="Asia/Tokyo" selected>Tokyo (Japan)</option>' in answer.text

    cleared = client.post(page_of(settings, ann), data={"name": "", "timezone": ""})
    assert cleared.status_code == 200
    stored = row(engine)
    assert (stored.name, stored.timezone) == (None, None)
    assert "(UTC time)" in summary(cleared.text)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"name": "Ann", "timezone": "Mars/Base"}, "unknown IANA time zone 'Mars/Base'"),
        ({"name": "Ann\nBcc: x@example.org", "timezone": ""}, "line breaks"),
        ({"name": "A" * 201, "timezone": ""}, "at most 200 characters"),
    ],
)
def test_a_bad_name_or_time_zone_is_refused_and_nothing_changes(
    settings, engine, client, ann, form, message
):
    answer = client.post(page_of(settings, ann), data=form)
    assert answer.status_code == 422
    assert message in notice(answer.text)
    assert row(engine) == ann


def test_update_profile_is_a_library_function_too(engine, ann):
    now = NOW + timedelta(days=1)
    saved = update_profile(engine, ann.id, name="Annie", timezone="Asia/Kathmandu", now=now)
    assert (saved.name, saved.timezone, saved.updated_at) == ("Annie", "Asia/Kathmandu", now)
    with pytest.raises(InvalidSubscriber, match="timezone: unknown IANA time zone"):
        update_profile(engine, ann.id, name="Annie", timezone="Nowhere/Near", now=now)


# --------------------------------------------------------------------------- pause


@pytest.mark.parametrize("weeks", [1, 12])
def test_pausing_sets_paused_until_that_many_weeks_ahead(settings, engine, client, ann, weeks):
    answer = client.post(page_of(settings, ann) + "/pause", data={"weeks": str(weeks)})
    assert answer.status_code == 200
    paused_until = row(engine).paused_until
    assert paused_until is not None
    expected = datetime.now(UTC) + timedelta(weeks=weeks)
    assert abs(paused_until - expected) < timedelta(minutes=1)
    local = paused_until.astimezone(ann_zone())
    assert notice(answer.text).startswith("Paused: no issues until ")
    assert f"{local.day} " in notice(answer.text) and str(local.year) in notice(answer.text)
    assert 'id="resume-form"' in answer.text and 'id="pause-form"' not in answer.text


@pytest.mark.parametrize("weeks", ["0", "13", "-1", "two", ""])
def test_a_pause_outside_one_to_twelve_weeks_is_refused(settings, engine, client, ann, weeks):
    answer = client.post(page_of(settings, ann) + "/pause", data={"weeks": weeks})
    assert answer.status_code == 422
    assert notice(answer.text).startswith("Pause for 1 to 12 weeks")
    assert row(engine) == ann


def test_only_an_active_subscription_can_be_paused(engine, ann):
    from digest.store.subscribers import unsubscribe_subscriber

    unsubscribe_subscriber(engine, ann.id, now=NOW)
    with pytest.raises(InvalidSubscriber, match="only an active subscription"):
        pause(engine, ann.id, 2, now=NOW)


def test_the_sender_skips_a_paused_reader_for_exactly_the_weeks_paused(
    settings, engine, ann, tmp_path
):
    bob, _ = add_confirmed(engine, "bob@example.org", now=NOW - timedelta(days=30))
    pause(engine, ann.id, 2, now=NOW - timedelta(days=1))
    transport = OutboxTransport(tmp_path / "out", clock=utcnow)
    got: dict[IsoWeek, dict[int, str]] = {}
    for n in range(3):
        week, at = WEEK + n, NOW + timedelta(weeks=n)
        build_issue(engine, week)
        assert send_issue(engine, settings, transport, week, now=at).status == "sent"
        with engine.connect() as conn:
            got[week] = dict(
                conn.execute(
                    select(deliveries.c.subscriber_id, deliveries.c.status)
                    .where(deliveries.c.sent_at.is_not(None) | (deliveries.c.status == "skipped"))
                    .where(deliveries.c.issue_id == _issue_id(engine, week))
                ).all()
            )
    assert got == {
        WEEK: {ann.id: "skipped", bob.id: "sent"},
        WEEK + 1: {ann.id: "skipped", bob.id: "sent"},
        WEEK + 2: {ann.id: "sent", bob.id: "sent"},
    }


def test_resume_ends_a_pause_at_once(settings, engine, client, ann, tmp_path):
    pause(engine, ann.id, 4, now=NOW - timedelta(days=1))
    answer = client.post(page_of(settings, ann) + "/resume")
    assert answer.status_code == 200
    assert notice(answer.text) == "Resumed: the next issue comes as usual."
    assert row(engine).paused_until is None
    build_issue(engine, WEEK)
    send_issue(engine, settings, OutboxTransport(tmp_path / "out", clock=utcnow), WEEK, now=NOW)
    assert ledger(engine) == {"sent": 1}
    assert resume(engine, ann.id, now=NOW).paused_until is None  # idempotent


# --------------------------------------------------------------------------- unsubscribe


def test_unsubscribing_from_the_preference_centre(settings, engine, client, ann):
    answer = client.post(page_of(settings, ann) + "/unsubscribe")
    assert answer.status_code == 200
    assert "will get no more issues" in notice(answer.text)
    stored = row(engine)
    assert stored.status == "unsubscribed" and stored.unsubscribed_at is not None
    # The page still opens: the data is theirs to download or erase.
    again = client.get(page_of(settings, ann))
    assert "unsubscribed; no more issues are sent" in again.text
    assert 'id="pause-form"' not in again.text and 'id="unsubscribe-form"' not in again.text
    assert 'id="export-form"' in again.text and 'id="erase-form"' in again.text
    assert client.post(page_of(settings, ann) + "/pause", data={"weeks": "2"}).status_code == 422


# --------------------------------------------------------------------------- my data


def test_download_my_data_is_a_json_attachment_with_deliveries_and_events(
    settings, engine, client, ann, tmp_path
):
    build_issue(engine, WEEK)
    send_issue(engine, settings, OutboxTransport(tmp_path / "out", clock=utcnow), WEEK, now=NOW)
    bounce = {
        "event": "bounce",
        "email": ANN,
        "type": "bounce",
        "reason": "550 mailbox full",
        "timestamp": int((NOW + timedelta(minutes=5)).timestamp()),
        "sg_event_id": "evt-1",
        "issue_week": str(WEEK),
        "subscriber_id": str(ann.id),
    }
    handle_events(engine, [bounce], NOW + timedelta(minutes=6))

    answer = client.post(page_of(settings, ann) + "/export")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["content-disposition"] == 'attachment; filename="my-digest-data.json"'
    assert answer.headers["cache-control"] == "no-store"
    data = answer.json()
    assert data["subscriber"]["email"] == ANN
    assert data["subscriber"]["status"] == "bounced"
    assert data["subscriber"]["timezone"] == "Europe/Amsterdam"
    (delivery,) = data["deliveries"]
    assert (delivery["week"], delivery["status"]) == (str(WEEK), "sent")
    assert delivery["sent_at"] == NOW.isoformat()
    (event,) = data["events"]
    assert (event["kind"], event["week"]) == ("bounce", str(WEEK))
    assert "550 mailbox full" in event["detail"]
    assert data == json.loads(json.dumps(export_data(engine, ann.id)))
    assert client.get(page_of(settings, ann) + "/export").status_code == 405


def test_erasing_asks_first_then_erases_like_subscribers_remove(
    settings, engine, client, ann, tmp_path
):
    build_issue(engine, WEEK)
    send_issue(engine, settings, OutboxTransport(tmp_path / "out", clock=utcnow), WEEK, now=NOW)
    link = page_of(settings, ann)

    asked = client.post(link + "/erase")
    assert asked.status_code == 200
    assert "Erase your data?" in asked.text and "Yes, erase my data" in asked.text
    assert row(engine) == ann  # the first press only asks
    assert client.post(link + "/erase", data={"confirm": "no"}).status_code == 200
    assert row(engine) == ann

    done = client.post(link + "/erase", data={"confirm": "yes"})
    assert done.status_code == 200
    assert "Your data is erased" in done.text
    assert row(engine) is None
    with engine.connect() as conn:
        kept = conn.execute(select(deliveries.c.subscriber_id, deliveries.c.status)).all()
        assert conn.execute(select(events)).all() == []
    assert [tuple(r) for r in kept] == [(None, "sent")]  # the count survives, the person not
    assert client.get(link).status_code == 400


# --------------------------------------------------------------------------- helpers


def ann_zone():  # type: ignore[no-untyped-def]
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Amsterdam")


def _issue_id(engine, week: IsoWeek) -> int:  # type: ignore[no-untyped-def]
    from digest.store.issues import get_issue

    issue = get_issue(engine, week)
    assert issue is not None
    return issue.id
