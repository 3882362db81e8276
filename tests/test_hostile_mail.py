"""Hostile names and addresses on their way into mail headers: refused at every door, and
written safely by the outbox whatever the database already holds.

The names are RFC 2047 encoded-words that decode to CR/LF (CVE-2024-6923's family: Python
3.11's `email` package writes the decoded break raw into `To:`), bidi overrides, and the
addresses a transport cannot write as they are (IDN domains, non-ASCII local parts).
"""

from __future__ import annotations

import re
from collections import Counter
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from digest.campaign.preflight import check_issue
from digest.config import Settings, get_settings
from digest.core.checks import check_message
from digest.core.headers import (
    HeaderError,
    UnsupportedAddress,
    address_header,
    ascii_address,
    list_unsubscribe_header,
    verify_header_block,
)
from digest.core.mails import Message, Recipient
from digest.core.reader_input import normalise_email
from digest.core.reader_links import confirm_url
from digest.core.reader_mails import confirmation_mail
from digest.delivery.outbox import OutboxTransport, build_mime, mime_bytes
from digest.delivery.runner import send_issue
from digest.delivery.samples import sample_message
from digest.delivery.sendgrid import build_payload
from digest.delivery.transport import PermanentError
from digest.model.subscriber import InvalidSubscriber
from digest.readers.signup import Subscription, send_confirmation, subscribe
from digest.store import db
from digest.store.subscriber_csv import import_csv
from digest.store.subscribers import add_confirmed, get_subscriber
from tests.sending import (
    JOINED,
    NOW,
    WEEK,
    build_issue,
    ledger,
    mails_per_address,
    seed_subscribers,
)
from tests.test_preferences import ANN, notice, page_of, row
from tests.test_subscribers_cli import digest

# Names that are harmless ASCII as typed and a header injection once decoded.
ENCODED_WORD_NAMES = [
    "=?utf-8?q?evil=0D=0ABcc:_x@example.org?=",  # adds a Bcc header
    "=?utf-8?q?x=0D=0A=0D=0AClaim_your_prize?=",  # replaces the body
    "Ann =?utf-8?b?DQpCY2M6IHhAZXhhbXBsZS5vcmc=?=",  # base64, after a plain word
    "=?UTF-8?Q?=0A?=",  # upper case, a lone LF
]
BIDI_NAMES = ["Ann \u202egnp.exe", "\u2066Bob\u2069", "Eve\u202d"]
HOSTILE_NAMES = ENCODED_WORD_NAMES + BIDI_NAMES


def outbox_files(settings: Settings) -> list[Path]:
    folder = Path(settings.outbox_dir)
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def header_block(raw: bytes) -> list[bytes]:
    """The top-level header lines, as written: continuation lines start with white space."""
    return raw.partition(b"\r\n\r\n")[0].split(b"\r\n")


def started_headers(raw: bytes) -> list[str]:
    return [line.split(b":", 1)[0].decode() for line in header_block(raw) if line[:1] not in b" \t"]


# --------------------------------------------------------------------------- at the door


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_subscribe_refuses_a_name_that_decodes_to_a_line_break_or_hides_text(
    engine, settings, name
):
    with pytest.raises(InvalidSubscriber) as refused:
        subscribe(engine, settings, "ann@example.org", name=name, now=db.utcnow())
    assert refused.value.field == "name"
    assert ("encoded-word" in refused.value.reason) or ("bidirectional" in refused.value.reason)
    assert get_subscriber(engine, "ann@example.org") is None
    assert outbox_files(settings) == []


@pytest.mark.parametrize("fmt", ["form", "json"])
@pytest.mark.parametrize("name", [ENCODED_WORD_NAMES[0], BIDI_NAMES[0]])
def test_the_subscribe_form_and_json_refuse_hostile_names_with_422(
    client, engine, settings, fmt, name
):
    body = {"email": "ann@example.org", "name": name}
    answer = client.post("/subscribe", **{"data" if fmt == "form" else "json": body})
    assert answer.status_code == 422
    assert get_subscriber(engine, "ann@example.org") is None
    assert outbox_files(settings) == []


@pytest.mark.parametrize("name", [ENCODED_WORD_NAMES[0], BIDI_NAMES[0]])
def test_the_preference_centre_refuses_hostile_names_and_changes_nothing(
    settings, engine, client, name
):
    ann, _ = add_confirmed(engine, ANN, name="Ann", now=NOW)
    answer = client.post(page_of(settings, ann), data={"name": name, "timezone": ""})
    assert answer.status_code == 422
    assert notice(answer.text).startswith("The name is not valid: ")
    assert row(engine) == ann


def test_subscribers_add_refuses_an_encoded_word_name(settings_env, engine):
    result = digest("subscribers", "add", "ann@example.org", "--name", ENCODED_WORD_NAMES[0])
    assert result.exit_code != 0
    assert "encoded-word" in result.output
    assert get_subscriber(engine, "ann@example.org") is None


def test_an_import_refuses_hostile_names_by_line_and_keeps_the_good_rows(engine):
    lines = ["email,name", "good@example.org,Good Reader"]
    lines += [f"bad{i}@example.org,{name}" for i, name in enumerate(HOSTILE_NAMES)]
    lines += ["last@example.org,Last Reader"]
    report = import_csv(engine, [line + "\n" for line in lines], confirmed=True, now=NOW)
    assert sorted(e.line for e in report.errors) == list(range(3, 3 + len(HOSTILE_NAMES)))
    assert all("name:" in e.message for e in report.errors)
    assert get_subscriber(engine, "good@example.org") is not None
    assert get_subscriber(engine, "last@example.org") is not None
    assert all(get_subscriber(engine, f"bad{i}@example.org") is None for i in range(7))


def test_a_non_ascii_local_part_is_refused_at_the_door_with_the_reason(engine, settings):
    with pytest.raises(InvalidSubscriber) as refused:
        subscribe(engine, settings, "usér@example.com", now=db.utcnow())
    assert refused.value.field == "email"
    assert "non-ASCII characters before the @" in refused.value.reason
    assert "ASCII address" in refused.value.reason
    result = digest("subscribers", "add", "usér@example.com")
    assert result.exit_code != 0 and "non-ASCII" in result.output


def test_an_idn_domain_is_one_address_whichever_way_it_is_typed():
    assert normalise_email("Dave@Exämple.com") == "dave@exämple.com"
    assert normalise_email("dave@xn--exmple-cua.com") == "dave@exämple.com"


# --------------------------------------------------------------------------- on the wire


def _mail(name: str | None, email: str = "ann@example.org", **extra: str) -> bytes:
    recipient = Recipient(
        email=email,
        name=name,
        substitutions={"%%name%%": name or ""},
        headers={
            "List-Unsubscribe": "<https://digest.example.org/unsubscribe/" + "t" * 140 + ">",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    message = Message(
        subject=extra.get("subject", "Attention, %%name%%"),
        html="<p>Hello</p>",
        text="Hello",
        recipients=[recipient],
        from_email="digest@example.org",
        from_name="Digest",
    )
    return mime_bytes(message, recipient, now=db.utcnow())


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_stored_hostile_name_can_never_start_a_header_or_reach_the_body(name):
    raw = _mail(name)  # as if it came from a row stored before the rules
    assert started_headers(raw) == [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "MIME-Version",
        "Content-Type",
    ]
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail["Bcc"] is None
    assert [a.addr_spec for a in mail["To"].addresses] == ["ann@example.org"]  # type: ignore[union-attr]
    assert "Claim" not in mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    # The subject holds the name as literal text: a client shows it, it never decodes it.
    assert "\r" not in str(mail["Subject"]) and "\n" not in str(mail["Subject"])


def test_what_pythons_own_header_registry_would_write_is_what_we_guard_against():
    # The defect itself, on this interpreter: if this ever stops reproducing, the guard is
    # still right, but this test says the old path was the hole.
    mime = EmailMessage(policy=SMTP)
    mime["To"] = Address(display_name=ENCODED_WORD_NAMES[0], addr_spec="ann@example.org")
    mime.set_content("x")
    if b"\r\nBcc:" not in bytes(mime):
        pytest.skip("this Python's email package already quotes decoded line breaks")
    with pytest.raises(HeaderError, match="expected"):
        verify_header_block(
            bytes(mime), ["To", "Content-Type", "Content-Transfer-Encoding", "MIME-Version"]
        )


def test_an_idn_domain_goes_out_in_punycode_in_the_outbox_and_to_sendgrid():
    raw = _mail("Dave", email="dave@exämple.com")
    to_line = next(line for line in header_block(raw) if line.startswith(b"To:"))
    assert to_line == b"To: Dave <dave@xn--exmple-cua.com>"
    recipient = Recipient(email="dave@exämple.com", name="Dave")
    payload = build_payload(
        Message(
            subject="Hi",
            html="<p>x</p>",
            text="x",
            recipients=[recipient],
            from_email="digest@exämple.org",
            reply_to="reply@exämple.org",
        )
    )
    assert payload["personalizations"][0]["to"] == [
        {"email": "dave@xn--exmple-cua.com", "name": "Dave"}
    ]
    assert payload["from"]["email"] == "digest@xn--exmple-cua.org"
    assert payload["reply_to"] == {"email": "reply@xn--exmple-cua.org"}


def test_a_non_ascii_local_part_cannot_be_written_and_says_why():
    with pytest.raises(UnsupportedAddress, match="before the @-sign"):
        ascii_address("usér@example.com")
    with pytest.raises(UnsupportedAddress):
        _mail("U", email="usér@example.com")
    with pytest.raises(UnsupportedAddress):
        build_payload(
            Message(
                subject="Hi",
                html="<p>x</p>",
                text="x",
                from_email="d@example.org",
                recipients=[Recipient(email="usér@example.com")],
            )
        )


def test_a_long_list_unsubscribe_is_folded_as_uris_and_never_encoded():
    raw = _mail("Ann")
    lines = header_block(raw)
    start = next(i for i, line in enumerate(lines) if line.startswith(b"List-Unsubscribe:"))
    assert lines[start] == b"List-Unsubscribe: <https://digest.example.org/unsubscribe/" + (
        b"t" * 140 + b">"
    )
    assert b"=?" not in lines[start]
    mail = message_from_bytes(raw, policy=policy.default)
    assert re.fullmatch(
        r"<https://digest\.example\.org/unsubscribe/t{140}>", str(mail["List-Unsubscribe"])
    )


def test_list_unsubscribe_with_mailto_folds_between_its_entries():
    folded = list_unsubscribe_header(
        "<https://d.example.org/u/T>, <mailto:u@example.org?subject=x>"
    )
    assert folded == "<https://d.example.org/u/T>,\r\n <mailto:u@example.org?subject=x>"
    for bad in ["https://no-angle.example.org", "<https://a b>", "<https://é.example>", "<>"]:
        with pytest.raises(HeaderError, match="List-Unsubscribe"):
            list_unsubscribe_header(bad)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Ann", "Ann <a@example.org>"),
        ('"Boss" <b@x>, eve', '"\\"Boss\\" <b@x>, eve" <a@example.org>'),
        ("Zoë", "=?utf-8?q?Zo=C3=AB?= <a@example.org>"),
        (ENCODED_WORD_NAMES[0], "a@example.org"),  # a stored hostile name is left out
        (None, "a@example.org"),
    ],
)
def test_address_headers_are_built_from_checked_parts(name, expected):
    assert address_header("a@example.org", name) == expected


# --------------------------------------------------------------------------- `digest check`


def test_digest_check_reads_the_serialised_message_as_a_mail_client_does(engine, settings):
    # A link longer than a header line, as a deep base URL makes it: the compact link tokens
    # alone no longer push List-Unsubscribe past 78 characters.
    settings = settings.model_copy(
        update={"base_url": "https://newsletter.example.org/weekly/term-of-the-week/readers"}
    )
    build_issue(engine)
    seed_subscribers(engine, 2)
    message = sample_message(engine, settings, WEEK, limit=2, now=NOW)

    def pythons_own(message: Message, recipient: Recipient) -> bytes:
        # The old outbox: values handed to the email package, which encodes a long
        # List-Unsubscribe into =?utf-8?q?=3Chttps…?= where no client finds the <URL>.
        mime = EmailMessage(policy=SMTP)
        mime["To"] = Address(display_name=recipient.name or "", addr_spec=recipient.email)
        for key, value in recipient.headers.items():
            mime[key] = value
        mime.set_content("x")
        return bytes(mime)

    problems = check_message(settings, message, serialise=pythons_own)
    assert any("List-Unsubscribe holds no <URL>" in p for p in problems)
    assert check_message(settings, message, serialise=partial(mime_bytes, now=NOW)) == []


def test_digest_check_names_a_reader_whose_stored_address_cannot_be_written_without_blocking(
    engine, settings
):
    build_issue(engine)
    [good, bad] = seed_subscribers(engine, 2)
    with engine.begin() as conn:  # stored before the door refused it
        conn.execute(
            update(db.subscribers)
            .where(db.subscribers.c.id == bad)
            .values(email="usér@example.com")
        )
    notes: list[str] = []
    assert check_issue(engine, settings, WEEK, now=NOW, notes=notes) == []  # it does not block
    assert notes == [
        f"recipient {bad}: cannot send to this address: Internationalized characters before "
        "the @-sign are not supported: 'é'.; the send records them refused and goes on"
    ]
    assert str(good) not in " ".join(notes)
    result = digest("check", "--week", str(WEEK))
    assert result.exit_code == 0, result.output
    assert f"note: recipient {bad}: cannot send to this address" in result.output


def test_the_weekly_send_writes_stored_hostile_names_as_safe_headers(engine, settings, tmp_path):
    build_issue(engine)
    ids = seed_subscribers(engine, len(HOSTILE_NAMES))
    with engine.begin() as conn:
        for sid, name in zip(ids, HOSTILE_NAMES, strict=True):
            conn.execute(update(db.subscribers).where(db.subscribers.c.id == sid).values(name=name))
    summary = send_issue(
        engine, settings, OutboxTransport(tmp_path / "weekly", clock=db.utcnow), WEEK, now=NOW
    )
    assert summary.status == "sent" and summary.sent == len(HOSTILE_NAMES)
    files = sorted((tmp_path / "weekly").glob("*.eml"))
    assert len(files) == len(HOSTILE_NAMES)
    for path in files:
        raw = path.read_bytes()
        assert "Bcc" not in started_headers(raw)
        mail = message_from_bytes(raw, policy=policy.default)
        [to] = mail["To"].addresses  # type: ignore[union-attr]
        assert to.display_name == ""  # neutralised: addressed by address alone
        text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert "=?" not in text and "\u202e" not in text and "Claim" not in text


def test_build_mime_takes_the_date_it_is_given():
    recipient = Recipient(email="a@example.org")
    message = Message(
        subject="Hi", html="<p>x</p>", text="x", recipients=[recipient], from_email="d@example.org"
    )
    assert build_mime(message, recipient, now=NOW)["Date"] == "Mon, 02 Mar 2026 09:00:00 +0000"


# --------------------------------------------------------------------------- the whole list

# Addresses already in the database that no header can carry as they are (the door refuses
# each of them today; an older version, a hand edit or a raw import may have stored them).
UNSENDABLE = [
    "usér@example.com",
    "x@example.org\r\nBcc: victim@evil.example",
    "y@example.org\nX-Evil: 1",
]
EXPECTED_HEADERS = [
    "From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post",
    "X-Digest-Issue-Week", "X-Digest-Batch-Key", "X-Digest-Subscriber-Id", "MIME-Version",
    "Content-Type",
]  # fmt: skip


def test_an_outbox_send_to_a_list_of_every_hostile_name_and_address_sends_each_good_reader_one_clean_mail(
    engine, settings_env
):
    build_issue(engine)
    good = {"plain@example.org": "Plain Reader", "zoe@example.org": "Zoë «Z»"}
    good |= {"dave@exämple.com": "Dave"}  # an IDN domain: delivered, in punycode
    good |= {f"hostile{i}@example.org": name for i, name in enumerate(HOSTILE_NAMES)}
    rows = [{"email": e, "name": n} for e, n in good.items()]
    rows += [{"email": e, "name": "Bad Address"} for e in UNSENDABLE]
    with engine.begin() as conn:
        conn.execute(
            insert(db.subscribers),
            [{**row, "status": "active", "source": "import", "created_at": JOINED,
              "confirmed_at": JOINED, "updated_at": JOINED} for row in rows],
        )  # fmt: skip
    get_settings.cache_clear()

    first = digest("send", "--week", str(WEEK))
    again = digest("send", "--week", str(WEEK))
    shown = digest("deliveries", "--week", str(WEEK))

    assert first.exit_code == 0, first.output
    assert f"sent {len(good)}," in first.output and "refused 3" in first.output
    assert again.exit_code == 0 and "already sent" in again.output
    assert re.search(r"refused\s+3", shown.output), shown.output
    assert ledger(engine) == {"sent": len(good), "refused": 3}
    with engine.connect() as conn:
        reasons = conn.execute(
            select(db.subscribers.c.email, db.deliveries.c.error)
            .select_from(db.deliveries.join(db.subscribers))
            .where(db.deliveries.c.status == "refused")
        ).all()
    assert sorted(email for email, _ in reasons) == sorted(UNSENDABLE)
    assert all(error for _, error in reasons)

    folder = Path(settings_env["DIGEST_OUTBOX_DIR"])
    for path in folder.glob("*.eml"):
        raw = path.read_bytes()
        assert started_headers(raw) == EXPECTED_HEADERS, path.name
        mail = message_from_bytes(raw, policy=policy.default)
        body = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert "Claim your prize" not in body and "Bcc" not in body
    received = mails_per_address(folder)
    assert received == Counter(dict.fromkeys({ascii_address(e) for e in good}, 1))
    assert "dave@xn--exmple-cua.com" in received


def test_a_confirmation_the_transport_refuses_is_an_error_and_frees_the_resend_slot(
    engine, settings
):
    # Stored before the door refused such addresses: the mail cannot be written, and that
    # must not look sent.
    seed_subscribers(engine, 1, status="pending", confirmed_at=None)
    with engine.begin() as conn:
        conn.execute(update(db.subscribers).values(email="usér@example.com"))
    pending = get_subscriber(engine, 1)
    assert pending is not None
    link = confirm_url(settings, pending.id, pending.email)
    subscription = Subscription(pending, confirmation_mail(settings, pending, link))
    with pytest.raises(PermanentError, match="not sent: the outbox cannot write a mail"):
        send_confirmation(engine, settings, subscription)
    assert outbox_files(settings) == []


@pytest.mark.parametrize(
    "name", [None, "Ann", "Zoë <&> 'O'Brien' \"x\"", "%%name%%", "{{ 7 * 7 }}", "李" * 120]
)
def test_the_confirmation_skeleton_fills_in_exactly_what_a_whole_render_writes(
    engine, settings, name
):
    from dataclasses import replace as with_values

    from digest.core.reader_mails import render_confirmation

    sub = subscribe(engine, settings, "ann@example.org", now=db.utcnow(), send=False).subscriber
    reader = with_values(sub, name=name)
    link = confirm_url(settings, reader.id, reader.email)
    mail = confirmation_mail(settings, reader, link)
    assert (mail.html, mail.text) == render_confirmation(settings, name, link)
