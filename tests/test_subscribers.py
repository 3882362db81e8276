"""Subscribers: double opt-in, signed links, provider statuses, erase, CSV import and export.

Every test runs on SQLite and on PostgreSQL, with confirmation mail written by the real outbox
transport and read back with Python's email package.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from itsdangerous import TimestampSigner
from sqlalchemy import func, insert, select

from digest.config import Settings
from digest.core.reader_links import confirm_url, preferences_url, unsubscribe_url
from digest.core.tokens import BadToken, make_token, read_token
from digest.delivery.transport import TransportError
from digest.model.subscriber import AlreadySuppressed, InvalidSubscriber
from digest.readers.signup import confirm, subscribe, unsubscribe
from digest.store import db
from digest.store.subscriber_csv import export_csv, import_csv
from digest.store.subscribers import (
    add_confirmed,
    count_by_status,
    erase,
    get_subscriber,
    list_subscribers,
    mark_status,
    search_subscribers,
)

NOW = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def outbox(settings: Settings) -> list[EmailMessage]:
    folder = Path(settings.outbox_dir)
    if not folder.exists():
        return []
    return [
        message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for p in sorted(folder.glob("*.eml"))
    ]


def link_in(mail: EmailMessage, settings: Settings, purpose: str) -> str:
    text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    prefix = f"{settings.base_url}/{purpose}/"
    (line,) = [w for w in text.split() if w.startswith(prefix)]
    return line


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


@contextmanager
def signed_ago(seconds: int) -> Iterator[None]:
    """Tokens made inside this block carry a timestamp `seconds` in the past."""
    original = TimestampSigner.get_timestamp
    TimestampSigner.get_timestamp = lambda self: int(time.time()) - seconds  # type: ignore[method-assign]
    try:
        yield
    finally:
        TimestampSigner.get_timestamp = original  # type: ignore[method-assign]


def pending(engine, settings, email="ann@example.org", **kw):  # type: ignore[no-untyped-def]
    return subscribe(engine, settings, email, now=NOW, **kw).subscriber


def active(engine, settings, email="ann@example.org", **kw):  # type: ignore[no-untyped-def]
    sub = pending(engine, settings, email, **kw)
    return confirm(engine, settings, make_token(settings, "confirm", sub.id, sub.email), now=NOW)


# --------------------------------------------------------------------------- subscribe


def test_subscribe_stores_a_pending_address_and_mails_it_a_confirm_link(engine, settings):
    result = subscribe(
        engine,
        settings,
        "  Ann.Lee@Example.ORG ",
        name="Ann Lee",
        timezone="Europe/Amsterdam",
        now=NOW,
    )
    sub = result.subscriber
    assert (sub.email, sub.name, sub.status, sub.source) == (
        "ann.lee@example.org",
        "Ann Lee",
        "pending",
        "web",
    )
    assert sub.timezone == "Europe/Amsterdam"
    assert sub.created_at == NOW
    assert sub.confirm_sent_at == NOW
    (mail,) = outbox(settings)
    assert mail["To"] == "Ann Lee <ann.lee@example.org>"
    assert mail["Subject"] == f"Confirm your subscription to {settings.newsletter_name}"
    data = read_token(settings, "confirm", token_of(link_in(mail, settings, "confirm")))
    assert data.subscriber_id == sub.id
    assert data.matches("ann.lee@example.org")
    html = mail.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert link_in(mail, settings, "confirm") in html


def test_an_address_is_unique_whatever_case_it_is_typed_in(engine, settings):
    first = pending(engine, settings, "ann@example.org")
    again = pending(engine, settings, "ANN@EXAMPLE.ORG")
    assert again.id == first.id
    assert count_by_status(engine)["pending"] == 1


def test_confirm_link_activates_the_subscriber(engine, settings):
    pending(engine, settings)
    link = link_in(outbox(settings)[0], settings, "confirm")
    later = NOW + timedelta(hours=2)
    sub = confirm(engine, settings, token_of(link), now=later)
    assert sub.status == "active"
    assert sub.confirmed_at == later
    assert get_subscriber(engine, sub.id) == sub


def test_confirming_twice_changes_nothing_the_second_time(engine, settings):
    sub = active(engine, settings)
    again = confirm(
        engine, settings, make_token(settings, "confirm", sub.id, sub.email), now=NOW + timedelta(1)
    )
    assert again == sub


def test_subscribing_an_active_address_sends_nothing_and_changes_nothing(engine, settings):
    sub = active(engine, settings, name="Ann")
    mails = len(outbox(settings))
    result = subscribe(
        engine, settings, "Ann@example.org", name="Mallory", timezone="Asia/Tokyo", now=NOW
    )
    assert result.mail is None
    assert get_subscriber(engine, sub.id) == sub
    assert len(outbox(settings)) == mails


def test_confirmation_is_resent_at_most_once_per_interval(engine, settings):
    interval = timedelta(seconds=settings.confirm_resend_interval)
    pending(engine, settings)
    assert subscribe(engine, settings, "ann@example.org", now=NOW + interval / 2).mail is None
    assert len(outbox(settings)) == 1
    again = subscribe(engine, settings, "ann@example.org", now=NOW + interval)
    assert again.mail is not None
    assert again.subscriber.confirm_sent_at == NOW + interval
    assert len(outbox(settings)) == 2


def test_a_failed_confirmation_send_frees_the_resend_slot(engine, settings, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the outbox folder should be")
    broken = settings.model_copy(update={"outbox_dir": blocked})
    # The outbox names the folder (a RetryableError since the outbox pauses a send on it).
    with pytest.raises(TransportError, match="cannot write to the outbox folder"):
        subscribe(engine, broken, "ann@example.org", now=NOW)
    assert get_subscriber(engine, "ann@example.org").confirm_sent_at is None
    retry = subscribe(engine, settings, "ann@example.org", now=NOW + timedelta(seconds=5))
    assert retry.mail is not None
    assert len(outbox(settings)) == 1


@pytest.mark.parametrize(
    "address",
    ["", "   ", "no-at-sign", "ann@", "@example.org", "ann@example..org", "Ann <ann@example.org>"],
)
def test_an_invalid_address_is_refused_with_the_reason_and_nothing_is_stored(
    engine, settings, address
):
    with pytest.raises(InvalidSubscriber) as caught:
        subscribe(engine, settings, address, now=NOW)
    assert caught.value.field == "email"
    assert caught.value.reason
    assert list_subscribers(engine) == []
    assert outbox(settings) == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Ann\r\nBcc: everyone@example.org", "line breaks"),
        ("Ann\x00", "control characters"),
        ("Ann\u2028Lee", "line breaks"),
        ("x" * 201, "at most 200 characters"),
    ],
)
def test_a_name_with_line_breaks_controls_or_too_long_is_refused(engine, settings, name, reason):
    with pytest.raises(InvalidSubscriber, match=reason) as caught:
        subscribe(engine, settings, "ann@example.org", name=name, now=NOW)
    assert caught.value.field == "name"
    assert list_subscribers(engine) == []


def test_a_name_of_200_characters_is_accepted_and_a_blank_name_is_none(engine, settings):
    assert pending(engine, settings, "a@example.org", name="é" * 200).name == "é" * 200
    assert pending(engine, settings, "b@example.org", name="   ").name is None


def test_an_unknown_browser_time_zone_is_dropped_not_fatal(engine, settings):
    assert pending(engine, settings, timezone="Mars/Olympus_Mons").timezone is None


# --------------------------------------------------------------------------- unsubscribe


def test_unsubscribe_link_unsubscribes(engine, settings):
    sub = active(engine, settings)
    later = NOW + timedelta(days=30)
    gone = unsubscribe(
        engine, settings, token_of(unsubscribe_url(settings, sub.id, sub.email)), now=later
    )
    assert gone is not None
    assert (gone.status, gone.unsubscribed_at) == ("unsubscribed", later)


def test_unsubscribe_link_never_expires(engine, settings):
    sub = active(engine, settings)
    with signed_ago(5 * 365 * 24 * 3600):
        token = make_token(settings, "unsubscribe", sub.id, sub.email)
    assert unsubscribe(engine, settings, token, now=NOW).status == "unsubscribed"


def test_unsubscribing_twice_is_harmless_and_keeps_the_first_date(engine, settings):
    sub = active(engine, settings)
    token = make_token(settings, "unsubscribe", sub.id, sub.email)
    first = unsubscribe(engine, settings, token, now=NOW)
    assert unsubscribe(engine, settings, token, now=NOW + timedelta(days=1)) == first


def test_unsubscribe_keeps_a_bounce_or_complaint(engine, settings):
    sub = active(engine, settings)
    mark_status(engine, sub.id, "complained", NOW)
    token = make_token(settings, "unsubscribe", sub.id, sub.email)
    assert unsubscribe(engine, settings, token, now=NOW).status == "complained"


def test_resubscribing_after_unsubscribe_goes_back_through_confirmation(engine, settings):
    sub = active(engine, settings, name="Ann")
    unsubscribe(engine, settings, make_token(settings, "unsubscribe", sub.id, sub.email), now=NOW)
    later = NOW + timedelta(days=10)
    result = subscribe(engine, settings, "ann@example.org", name="Ann B", now=later)
    again = result.subscriber
    assert (again.id, again.status, again.name) == (sub.id, "pending", "Ann B")
    assert again.confirmed_at is None
    mails = outbox(settings)
    assert len(mails) == 2
    back = confirm(engine, settings, token_of(link_in(mails[-1], settings, "confirm")), now=later)
    assert back.status == "active"


def test_an_old_confirm_link_cannot_undo_an_unsubscribe(engine, settings):
    sub = pending(engine, settings)
    old_link = link_in(outbox(settings)[0], settings, "confirm")
    unsubscribe(engine, settings, make_token(settings, "unsubscribe", sub.id, sub.email), now=NOW)
    with pytest.raises(BadToken, match="cancelled"):
        confirm(engine, settings, token_of(old_link), now=NOW)
    assert get_subscriber(engine, sub.id).status == "unsubscribed"


def test_unsubscribe_for_an_erased_subscriber_answers_none(engine, settings):
    sub = active(engine, settings)
    token = make_token(settings, "unsubscribe", sub.id, sub.email)
    assert erase(engine, "ann@example.org")
    assert unsubscribe(engine, settings, token, now=NOW) is None


# --------------------------------------------------------------------------- tokens


def test_an_expired_confirm_link_is_rejected_and_changes_nothing(engine, settings):
    sub = pending(engine, settings)
    with signed_ago(settings.confirm_max_age + 60):
        token = make_token(settings, "confirm", sub.id, sub.email)
    with pytest.raises(BadToken, match="expired"):
        confirm(engine, settings, token, now=NOW)
    assert get_subscriber(engine, sub.id).status == "pending"


def test_a_confirm_link_just_inside_its_lifetime_works(engine, settings):
    sub = pending(engine, settings)
    with signed_ago(settings.confirm_max_age - 60):
        token = make_token(settings, "confirm", sub.id, sub.email)
    assert confirm(engine, settings, token, now=NOW).status == "active"


def test_a_tampered_token_is_rejected(engine, settings):
    sub = pending(engine, settings)
    token = make_token(settings, "confirm", sub.id, sub.email)
    payload, _, signature = token.partition(".")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    for forged in (f"{flipped}.{signature}", token[:-2], "not-a-token", token + "x"):
        with pytest.raises(BadToken, match="not valid"):
            confirm(engine, settings, forged, now=NOW)
    assert get_subscriber(engine, sub.id).status == "pending"


def test_a_token_signed_with_another_key_is_rejected(engine, settings):
    sub = pending(engine, settings)
    from pydantic import SecretStr

    other = settings.model_copy(update={"secret_key": SecretStr("another-key-entirely")})
    with pytest.raises(BadToken):
        confirm(engine, settings, make_token(other, "confirm", sub.id, sub.email), now=NOW)


def test_a_token_for_one_purpose_is_rejected_for_another(engine, settings):
    sub = pending(engine, settings)
    with pytest.raises(BadToken):
        confirm(engine, settings, make_token(settings, "unsubscribe", sub.id, sub.email), now=NOW)
    with pytest.raises(BadToken):
        confirm(engine, settings, make_token(settings, "preferences", sub.id, sub.email), now=NOW)
    with pytest.raises(BadToken):
        unsubscribe(engine, settings, make_token(settings, "confirm", sub.id, sub.email), now=NOW)
    assert get_subscriber(engine, sub.id).status == "pending"


def test_a_token_must_match_the_subscribers_current_address(engine, settings):
    ann = pending(engine, settings, "ann@example.org")
    pending(engine, settings, "bob@example.org")
    # Ann's id with Bob's address: genuine signature, wrong person.
    with pytest.raises(BadToken):
        confirm(
            engine, settings, make_token(settings, "confirm", ann.id, "bob@example.org"), now=NOW
        )
    wrong = make_token(settings, "unsubscribe", ann.id, "bob@example.org")
    assert unsubscribe(engine, settings, wrong, now=NOW) is None
    assert get_subscriber(engine, ann.id).status == "pending"


def test_links_for_other_helpers_carry_a_token_for_their_purpose(settings):
    for build, purpose in (
        (confirm_url, "confirm"),
        (unsubscribe_url, "unsubscribe"),
        (preferences_url, "preferences"),
    ):
        link = build(settings, 7, "ann@example.org")
        assert link.startswith(f"{settings.base_url}/{purpose}/")
        data = read_token(settings, purpose, token_of(link))  # type: ignore[arg-type]
        assert data.subscriber_id == 7
        assert data.matches("Ann@Example.org")


# --------------------------------------------------------------------------- provider statuses


def test_mark_status_records_a_bounce_and_a_complaint_is_final(engine, settings):
    sub = active(engine, settings)
    assert mark_status(engine, sub.id, "bounced", NOW).status == "bounced"
    assert mark_status(engine, sub.id, "complained", NOW).status == "complained"
    assert mark_status(engine, sub.id, "unsubscribed", NOW).status == "complained"
    assert mark_status(engine, sub.id, "bounced", NOW).status == "complained"


def test_mark_status_unsubscribed_sets_the_date(engine, settings):
    sub = active(engine, settings)
    marked = mark_status(engine, sub.id, "unsubscribed", NOW + timedelta(hours=1))
    assert (marked.status, marked.unsubscribed_at) == ("unsubscribed", NOW + timedelta(hours=1))


def test_mark_status_for_an_unknown_id_answers_none_and_refuses_other_statuses(engine, settings):
    assert mark_status(engine, 999, "bounced", NOW) is None
    with pytest.raises(ValueError, match="unsubscribed, bounced or complained"):
        mark_status(engine, 1, "active", NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_a_bounced_or_complained_address_gets_no_mail_from_the_form(engine, settings, status):
    sub = active(engine, settings)
    mark_status(engine, sub.id, status, NOW)  # type: ignore[arg-type]
    mails = len(outbox(settings))
    result = subscribe(engine, settings, "ann@example.org", now=NOW + timedelta(days=3))
    assert result.mail is None
    assert get_subscriber(engine, sub.id).status == status
    assert len(outbox(settings)) == mails


# --------------------------------------------------------------------------- operator actions


def test_add_confirmed_adds_an_active_subscriber_without_mail(engine, settings):
    sub, changed = add_confirmed(engine, "Bob@Example.org", name="Bob", now=NOW)
    assert changed
    assert (sub.email, sub.status, sub.source, sub.confirmed_at) == (
        "bob@example.org",
        "active",
        "cli",
        NOW,
    )
    assert add_confirmed(engine, "bob@example.org", now=NOW) == (sub, False)
    assert outbox(settings) == []


def test_add_confirmed_refuses_an_unsubscribed_address(engine, settings):
    sub = active(engine, settings)
    mark_status(engine, sub.id, "unsubscribed", NOW)
    with pytest.raises(AlreadySuppressed, match="unsubscribed"):
        add_confirmed(engine, "ann@example.org", now=NOW)


def test_get_subscriber_finds_by_id_or_by_address_in_any_case(engine, settings):
    sub = pending(engine, settings)
    assert get_subscriber(engine, sub.id) == sub
    assert get_subscriber(engine, " ANN@example.ORG") == sub
    assert get_subscriber(engine, "bob@example.org") is None
    assert get_subscriber(engine, "not an address") is None


def test_list_and_count_by_status(engine, settings):
    active(engine, settings, "a@example.org")
    active(engine, settings, "b@example.org")
    pending(engine, settings, "c@example.org")
    assert [s.email for s in list_subscribers(engine, "active")] == [
        "a@example.org",
        "b@example.org",
    ]
    assert count_by_status(engine) == {
        "pending": 1,
        "active": 2,
        "unsubscribed": 0,
        "bounced": 0,
        "complained": 0,
    }


def test_erase_deletes_the_person_but_the_ledger_keeps_its_counts(engine, settings):
    sub = active(engine, settings)
    keep = active(engine, settings, "keep@example.org")
    with engine.begin() as conn:
        issue_id = conn.execute(
            insert(db.issues).values(
                week="2026-W19",
                featured_slug="token",
                related_slugs=[],
                pick_source="rotation",
                status="sent",
                created_at=NOW,
                updated_at=NOW,
            )
        ).inserted_primary_key[0]
        for who in (sub.id, keep.id):
            conn.execute(
                insert(db.deliveries).values(
                    issue_id=issue_id,
                    subscriber_id=who,
                    batch=0,
                    status="sent",
                    attempts=1,
                    claimed_at=NOW,
                )
            )
        conn.execute(
            insert(db.events).values(
                subscriber_id=sub.id,
                issue_id=issue_id,
                kind="open",
                occurred_at=NOW,
                received_at=NOW,
            )
        )
    assert erase(engine, "ANN@example.org") is True
    assert erase(engine, "ann@example.org") is False
    assert get_subscriber(engine, sub.id) is None
    with engine.connect() as conn:
        sent = conn.execute(select(func.count()).select_from(db.deliveries)).scalar()
        orphans = conn.execute(
            select(func.count())
            .select_from(db.deliveries)
            .where(db.deliveries.c.subscriber_id.is_(None))
        ).scalar()
        event_owner = conn.execute(select(db.events.c.subscriber_id)).scalar_one()
        emails = conn.execute(select(db.subscribers.c.email)).scalars().all()
    assert (sent, orphans, event_owner) == (2, 1, None)
    assert emails == ["keep@example.org"]


# --------------------------------------------------------------------------- CSV


def csv_lines(text: str) -> list[str]:
    return io.StringIO(text).readlines()


def test_import_reports_each_bad_row_with_its_line_number_and_imports_the_good_ones(
    engine, settings
):
    report = import_csv(
        engine,
        csv_lines(
            "email,name,status,timezone\n"
            "ann@example.org,Ann,,Europe/Amsterdam\n"
            "not-an-address,Bob,,\n"
            "cy@example.org,Cy,sleeping,\n"
            "\n"
            "di@example.org,Di,,Moon/Base\n"
            "ANN@example.org,Ann again,,\n"
            "ed@example.org,Ed\n"
            'fay@example.org,"Fay ""F"" Smith",unsubscribed,\n'
        ),
        confirmed=True,
        now=NOW,
    )
    assert [(e.line, e.message.split(":")[0]) for e in report.errors] == [
        (3, "email"),
        (4, "status"),
        (6, "timezone"),
        (7, "email"),
        (8, "expected 4 columns, found 2"),
    ]
    assert "already appears on line 2" in str(report.errors[3])
    assert str(report.errors[1]).startswith("line 4: status: must be one of pending, active")
    assert report.added == 2
    ann = get_subscriber(engine, "ann@example.org")
    assert (ann.status, ann.name, ann.timezone, ann.source) == (
        "active",
        "Ann",
        "Europe/Amsterdam",
        "import",
    )
    assert get_subscriber(engine, "fay@example.org").name == 'Fay "F" Smith'
    assert get_subscriber(engine, "fay@example.org").status == "unsubscribed"


def test_importing_the_same_file_twice_changes_nothing_the_second_time(engine, settings):
    text = "email,name\nann@example.org,Ann\nbob@example.org,\n"
    first = import_csv(engine, csv_lines(text), confirmed=True, now=NOW)
    before = list_subscribers(engine)
    second = import_csv(engine, csv_lines(text), confirmed=True, now=NOW + timedelta(days=1))
    assert (first.added, second.added, second.updated, second.unchanged) == (2, 0, 0, 2)
    assert list_subscribers(engine) == before


def test_import_never_brings_back_an_unsubscribed_or_complained_address(engine, settings):
    gone = active(engine, settings, "gone@example.org")
    angry = active(engine, settings, "angry@example.org")
    unsubscribe(engine, settings, make_token(settings, "unsubscribe", gone.id, gone.email), now=NOW)
    mark_status(engine, angry.id, "complained", NOW)
    report = import_csv(
        engine,
        csv_lines("email,status\ngone@example.org,active\nangry@example.org,\n"),
        confirmed=True,
        now=NOW,
    )
    assert report.kept_suppressed == 2
    assert get_subscriber(engine, gone.id).status == "unsubscribed"
    assert get_subscriber(engine, angry.id).status == "complained"


def test_import_moves_status_forward_only(engine, settings):
    active(engine, settings, "ann@example.org")
    pending(engine, settings, "bob@example.org")
    report = import_csv(
        engine,
        csv_lines(
            "email,status\nann@example.org,pending\nbob@example.org,active\n"
            "ann@example.org,unsubscribed\n"
        ),
        confirmed=True,
        now=NOW,
    )
    assert report.errors[0].line == 4  # Ann twice in one file
    assert get_subscriber(engine, "ann@example.org").status == "active"
    assert get_subscriber(engine, "bob@example.org").status == "active"


def test_importing_active_rows_needs_confirmed(engine, settings):
    report = import_csv(
        engine, csv_lines("email,status\nann@example.org,active\nbob@example.org,\n"), now=NOW
    )
    assert [(e.line, "--confirmed" in e.message) for e in report.errors] == [(2, True)]
    assert get_subscriber(engine, "bob@example.org").status == "pending"
    assert outbox(settings) == []  # an import never sends mail


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("name\nAnn\n", "the header must name the columns"),
        ("email,phone\na@example.org,1\n", "the header must name the columns"),
        ("email,email\na@example.org,b@example.org\n", "the header must name the columns"),
    ],
)
def test_a_file_without_a_usable_header_is_refused_whole(engine, settings, text, message):
    report = import_csv(engine, csv_lines(text), confirmed=True, now=NOW)
    assert report.errors[0].line == 1
    assert message in report.errors[0].message
    assert list_subscribers(engine) == []


def test_export_round_trips_through_import(engine, settings):
    active(engine, settings, "ann@example.org", name="Ann, the first", timezone="Europe/Berlin")
    pending(engine, settings, "bob@example.org")
    cy = active(engine, settings, "cy@example.org", name='=HYPERLINK("http://evil")')
    mark_status(engine, cy.id, "bounced", NOW)

    def rows() -> list[tuple[str, str | None, str, str | None]]:
        return [(s.email, s.name, s.status, s.timezone) for s in list_subscribers(engine)]

    original = rows()
    out = io.StringIO()
    assert export_csv(engine, out) == 3
    exported = out.getvalue()
    assert exported.splitlines()[0] == "email,name,status,timezone,language"
    assert "'=HYPERLINK" in exported  # a spreadsheet shows it as text, never runs it
    for sub in list_subscribers(engine):
        erase(engine, sub.id)
    report = import_csv(engine, csv_lines(exported), confirmed=True, now=NOW)
    assert (report.added, report.errors) == (3, [])
    assert sorted(rows()) == sorted(original)


def test_export_filters_by_status(engine, settings):
    active(engine, settings, "ann@example.org")
    pending(engine, settings, "bob@example.org")
    out = io.StringIO()
    export_csv(engine, out, status="pending")
    assert out.getvalue() == "email,name,status,timezone,language\nbob@example.org,,pending,,\n"


def test_searching_addresses_is_case_blind_bounded_and_takes_wildcards_literally(engine):
    for email in ("ann@example.org", "bob_x@example.org", "bobx@example.org", "100%@example.org"):
        add_confirmed(engine, email, now=NOW)
    assert [s.email for s in search_subscribers(engine, "  EXAMPLE.ORG ", limit=2)] == [
        "ann@example.org",
        "bob_x@example.org",
    ]
    # `_` and `%` are characters here, not LIKE's wildcards.
    assert [s.email for s in search_subscribers(engine, "bob_")] == ["bob_x@example.org"]
    assert [s.email for s in search_subscribers(engine, "0%@")] == ["100%@example.org"]
    assert search_subscribers(engine, "nobody") == []
