"""The welcome mail: sent once on confirmation, says when issues arrive in the reader's own time
zone, shows the latest issue, and carries the weekly issue's links, headers and quality gates.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from digest.campaign.build import build_issue
from digest.config import Settings, get_settings
from digest.core.checks import QualityError, check_email
from digest.core.reader_times import delivery_time
from digest.core.tokens import make_token, read_token
from digest.delivery.outbox import build_mime
from digest.model.weeks import IsoWeek
from digest.packaged import default_theme_dir
from digest.readers.preferences import send_welcome, welcome_mail
from digest.readers.signup import subscribe
from digest.store.db import utcnow
from digest.store.issues import transition
from digest.store.subscribers import add_confirmed, get_subscriber, unsubscribe_subscriber

WINTER = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)  # a Wednesday, no DST anywhere relevant
SUMMER = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)


def mails(settings: Settings) -> list[EmailMessage]:
    folder = Path(settings.outbox_dir)
    files = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]  # type: ignore[misc]


def parts(mail: EmailMessage) -> tuple[str, str]:
    text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    html = mail.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    return text, html


def at(**changes: object) -> Settings:
    return get_settings().model_copy(update=changes)


def publish(engine, settings: Settings, glossary, week: IsoWeek):  # type: ignore[no-untyped-def]
    """A real built issue for `week`, moved to sent as the sender would."""
    build_issue(engine, settings, glossary, week, now=WINTER, news=[])
    transition(engine, week, "sending", now=WINTER)
    return transition(engine, week, "sent", now=WINTER)


# --------------------------------------------------------------------------- sent on confirmation


def test_confirming_sends_one_welcome_mail_with_the_weekly_issues_headers(settings, engine, client):
    pending = subscribe(
        engine, settings, "ann@example.org", name="Ann", timezone="Asia/Tokyo", now=WINTER
    ).subscriber
    token = make_token(settings, "confirm", pending.id, pending.email)
    assert len(mails(settings)) == 1  # the confirmation

    assert client.post(f"/confirm/{token}").status_code == 200
    assert client.post(f"/confirm/{token}").status_code == 200  # pressed twice: one welcome
    subjects = sorted(str(m["Subject"]) for m in mails(settings))
    assert subjects == [
        "Confirm your subscription to AI Term of the Week",
        "Welcome to AI Term of the Week",
    ]
    (welcome,) = [m for m in mails(settings) if m["Subject"].startswith("Welcome")]
    assert welcome["To"] == "Ann <ann@example.org>"

    ann = get_subscriber(engine, "ann@example.org")
    (unsubscribe_link,) = re.findall(r"<(https://[^>]+)>", welcome["List-Unsubscribe"])
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (
        read_token(settings, "unsubscribe", unsubscribe_link.rsplit("/", 1)[1]).subscriber_id
        == ann.id
    )

    text, html = parts(welcome)
    for body in (text, html):
        assert unsubscribe_link in body
        (preferences_link,) = set(re.findall(r"https://[^\s\"<]+/preferences/[^\s\"<]+", body))
        data = read_token(settings, "preferences", preferences_link.rsplit("/", 1)[1])
        assert data.subscriber_id == ann.id and data.matches(ann.email)
        assert "%%" not in body


def test_adding_a_confirmed_subscriber_by_hand_sends_no_welcome(settings, engine):
    add_confirmed(engine, "bob@example.org", now=WINTER)
    assert mails(settings) == []


def test_a_reader_who_left_before_the_welcome_went_out_gets_none(settings, engine):
    ann, _ = add_confirmed(engine, "ann@example.org", now=WINTER)
    unsubscribe_subscriber(engine, ann.id, now=WINTER)
    assert send_welcome(engine, settings, ann.id, WINTER) is False
    assert send_welcome(engine, settings, 9999, WINTER) is False
    assert mails(settings) == []


# --------------------------------------------------------------------------- what it says


def test_the_welcome_mail_says_when_issues_arrive_in_the_readers_time_zone(settings, engine):
    ams = at(schedule="mon 09:00", timezone="Europe/Amsterdam")
    ann, _ = add_confirmed(engine, "ann@example.org", timezone="Asia/Tokyo", now=WINTER)
    text, html = parts(
        build_mime(welcome_mail(engine, ams, ann, WINTER), _only(ams, ann), now=utcnow())
    )
    # 09:00 in Amsterdam is 08:00 UTC in winter: 17:00 in Tokyo.
    assert "every Monday at 17:00 (Asia/Tokyo time)" in text
    assert "every Monday at 17:00 (Asia/Tokyo time)" in html


@pytest.mark.parametrize(
    ("changes", "zone", "now", "expected"),
    [
        ({}, "Europe/Amsterdam", WINTER, "every Monday at 09:00 (Europe/Amsterdam time)"),
        ({}, None, WINTER, "every Monday at 09:00 (Europe/Amsterdam time)"),
        ({}, "Asia/Tokyo", SUMMER, "every Monday at 16:00 (Asia/Tokyo time)"),
        ({}, "America/Los_Angeles", WINTER, "every Monday at 00:00 (America/Los_Angeles time)"),
        ({"schedule": "mon 05:00"}, "America/New_York", WINTER, "every Sunday at 23:00"),
        ({"schedule": "mon,thu 07:30"}, "Europe/London", WINTER, "every Monday at 06:30"),
        ({"local_time_delivery": True}, "Asia/Tokyo", WINTER, "every Monday at 09:00 (Asia/"),
        ({"local_time_delivery": True}, "Asia/Kathmandu", SUMMER, "every Monday at 09:00"),
        ({"schedule": "30 6 1 * *"}, "Europe/Amsterdam", WINTER, "next on Sunday 1 February"),
        ({}, "Mars/Base", WINTER, "(Europe/Amsterdam time)"),
    ],
)
def test_delivery_time_in_a_readers_zone(changes, zone, now, expected, settings_env):
    conf = at(**{"schedule": "mon 09:00", "timezone": "Europe/Amsterdam", **changes})
    assert expected in delivery_time(conf, zone, now)


def test_the_welcome_mail_features_the_latest_sent_issue_with_its_archive_link(
    settings, engine, starter_glossary
):
    publish(engine, settings, starter_glossary, IsoWeek(2026, 1))
    latest = publish(engine, settings, starter_glossary, IsoWeek(2026, 2))
    build_issue(engine, settings, starter_glossary, IsoWeek(2026, 3), now=WINTER, news=[])
    ann, _ = add_confirmed(engine, "ann@example.org", now=WINTER)

    text, html = parts(
        build_mime(welcome_mail(engine, settings, ann, WINTER), _only(settings, ann), now=utcnow())
    )
    term = latest.snapshot["term"]
    archive = f"{settings.base_url}/issues/2026-W02"
    assert "The latest issue" in text
    assert term["title"] in text and archive in text.split()
    assert f'href="{archive}"' in html
    assert term["title"] in html


def test_before_the_first_issue_the_welcome_mail_leaves_the_latest_issue_out(
    settings, engine, starter_glossary
):
    build_issue(engine, settings, starter_glossary, IsoWeek(2026, 3), now=WINTER, news=[])
    ann, _ = add_confirmed(engine, "ann@example.org", name="Ann", now=WINTER)
    message = welcome_mail(engine, settings, ann, WINTER)
    text, html = parts(build_mime(message, message.recipients[0], now=utcnow()))
    assert "latest issue" not in text.lower() and "latest issue" not in html.lower()
    assert "/issues/2026-W03" not in text + html  # built is not sent: nothing to link to
    assert text.startswith("Hi Ann,")


def test_the_welcome_mail_passes_the_weekly_issues_quality_gates(settings, engine):
    ann, _ = add_confirmed(engine, "ann@example.org", name="<b>Ann</b> & co", now=WINTER)
    message = welcome_mail(engine, settings, ann, WINTER)
    assert check_email(message.html, message.text) == []
    assert "&lt;b&gt;Ann&lt;/b&gt; &amp; co" in message.html  # autoescaped, not markup
    assert message.categories == ["welcome"]


def test_a_welcome_template_that_breaks_a_gate_is_refused_not_sent(settings, engine, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(default_theme_dir(), templates)
    original = (templates / "welcome.txt.j2").read_text()
    broken = original.replace("url=unsubscribe_url", 'url=""')
    assert broken != original  # the link really went
    (templates / "welcome.txt.j2").write_text(broken)
    conf = settings.model_copy(update={"templates_dir": templates})
    ann, _ = add_confirmed(engine, "ann@example.org", now=WINTER)
    with pytest.raises(QualityError, match="text: no unsubscribe link"):
        send_welcome(engine, conf, ann.id, WINTER)
    assert mails(settings) == []


def _only(settings: Settings, subscriber):  # type: ignore[no-untyped-def]
    """The welcome mail's one recipient, with their links filled in."""
    from digest.delivery.personalise import subscriber_recipient

    return subscriber_recipient(settings, subscriber.id, subscriber.email, subscriber.name)
