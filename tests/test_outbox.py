"""The outbox transport: .eml files a mail client (and Python's email package) reads as sent mail."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import Engine

from digest.config import Settings
from digest.core.mails import Message, Recipient
from digest.delivery.outbox import OutboxTransport, mime_bytes
from digest.delivery.runner import send_issue
from digest.store.db import utcnow
from tests.sending import NOW, WEEK, build_issue, seed_subscribers


def _read(path: Path) -> EmailMessage:
    with open(path, "rb") as fh:
        parsed = email.message_from_binary_file(fh, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _message(recipients: list[Recipient], key: str | None = "2026-W10-1-000001") -> Message:
    return Message(
        subject="Attention, %%name%%",
        html="<p>Hi %%name_html%% <a href='%%unsubscribe_url%%'>unsubscribe</a></p>",
        text="Hi %%name%%\nUnsubscribe: %%unsubscribe_url%%\n",
        recipients=recipients,
        from_email="digest@example.org",
        from_name="AI Term of the Week",
        custom_args={"issue_week": "2026-W10"},
        batch_key=key,
    )


def _recipient(i: int, name: str = "Ann") -> Recipient:
    url = f"https://digest.example.org/unsubscribe/token{i}"
    return Recipient(
        email=f"reader{i}@example.org",
        name=name,
        substitutions={
            "%%unsubscribe_url%%": url,
            "%%name%%": name,
            "%%name_html%%": name.replace("&", "&amp;").replace("<", "&lt;"),
        },
        headers={
            "List-Unsubscribe": f"<{url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        custom_args={"subscriber_id": str(i)},
    )


def test_sent_issue_files_parse_as_multipart_alternative_with_list_unsubscribe(
    engine: Engine, settings_env: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings(unsubscribe_mailto="leave@digest.example.org")
    seed_subscribers(engine, 3, name="Zoë <& Co>")
    build_issue(engine)
    outbox = tmp_path / "outbox"

    send_issue(engine, settings, OutboxTransport(outbox, clock=utcnow), WEEK, now=NOW)

    files = sorted(outbox.glob("*.eml"))
    assert len(files) == 3
    addresses = set()
    for path in files:
        mail = _read(path)
        addresses.add(mail["To"].addresses[0].addr_spec)
        assert mail.get_content_type() == "multipart/alternative"
        text, html = mail.iter_parts()
        assert text.get_content_type() == "text/plain"
        assert html.get_content_type() == "text/html"
        assert mail["Subject"] == "Attention, Zoë <& Co>"
        assert mail["To"].addresses[0].display_name == "Zoë <& Co>"
        assert mail["From"].addresses[0].addr_spec == settings.sender_email
        unsubscribe = mail["List-Unsubscribe"]
        assert unsubscribe.startswith(f"<{settings.base_url}/unsubscribe/")
        assert unsubscribe.endswith(", <mailto:leave@digest.example.org?subject=unsubscribe>")
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = unsubscribe[1:].split(">", 1)[0]
        assert url in text.get_content()
        assert f'href="{url}"' in html.get_content() or f"href='{url}'" in html.get_content()
        assert "Hello Zoë &lt;&amp; Co&gt;," in html.get_content()
        assert "%%" not in text.get_content() + html.get_content()
        assert mail["X-Digest-Issue-Week"] == str(WEEK)
        assert mail["X-Digest-Batch-Key"].startswith(f"{WEEK}-")
    assert addresses == {f"reader{i}@example.org" for i in range(3)}


def test_writing_a_batch_again_replaces_its_files_instead_of_adding_copies(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path, clock=utcnow)
    message = _message([_recipient(i) for i in range(4)])

    outbox.send(message)
    outbox.send(message)

    assert len(list(tmp_path.glob("*.eml"))) == 4


def test_lookup_reports_a_batch_only_once_all_its_files_are_written(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path, clock=utcnow)
    key = "2026-W10-1-000007"
    assert outbox.lookup_batch(key) is False

    outbox.send(_message([_recipient(1)], key))

    assert outbox.lookup_batch(key) is True
    assert outbox.lookup_batch("2026-W10-1-000008") is False
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_one_off_mail_without_batch_key_gets_a_fresh_file_each_time(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path, clock=utcnow)
    message = _message([_recipient(1)], key=None)

    outbox.send(message)
    outbox.send(message)

    assert len(list(tmp_path.glob("*.eml"))) == 2
    assert not (tmp_path / ".batches").exists()


def test_batch_key_that_is_not_a_safe_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not safe as a file name"):
        OutboxTransport(tmp_path, clock=utcnow).send(_message([_recipient(1)], key="../escape"))


def test_header_injection_through_a_name_is_refused() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        _recipient(1, name="Ann\r\nBcc: victim@example.org")


def test_payload_size_is_what_the_files_weigh(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path, clock=utcnow)
    message = _message([_recipient(i) for i in range(3)])

    size = outbox.payload_size(message)
    outbox.send(message)

    written = sum(p.stat().st_size for p in tmp_path.glob("*.eml"))
    # Date and Message-ID differ from one rendering to the next by a few bytes at most.
    assert abs(size - written) < 3 * 10


def test_the_outbox_fills_markers_in_one_pass_like_the_checks_and_sendgrid():
    # A value is never scanned again, whatever order the substitutions come in: a name written
    # as a marker stays text, as SendGrid and `checks.check_message` (the same function) do it.
    recipient = Recipient(
        email="ann@example.org",
        substitutions={"%%name%%": "%%unsubscribe_url%%", "%%unsubscribe_url%%": "https://u"},
    )
    message = Message(
        subject="Hi %%name%%",
        html="<p>%%name%% <a href='%%unsubscribe_url%%'>u</a></p>",
        text="%%name%% %%unsubscribe_url%%",
        recipients=[recipient],
        from_email="digest@example.org",
    )
    mail = email.message_from_bytes(
        mime_bytes(message, recipient, now=utcnow()), policy=email.policy.default
    )
    text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert text.strip() == "%%unsubscribe_url%% https://u"
    assert str(mail["Subject"]) == "Hi %%unsubscribe_url%%"


BODIES = {
    "short ASCII lines": ("Hello,\nsee you.", "<p>Hello</p>"),
    "a long ASCII line": ("x " * 300, "<p>" + "y" * 500 + "</p>"),
    "some non-ASCII": ("Zoë «Z» =?q?= a=b\n.\nFrom here", "<p>Zoë &amp; co</p>\n\t trailing \n"),
    "mostly non-ASCII": ("中文" * 300, "<p>" + "中文" * 300 + "</p>"),
}


@pytest.mark.parametrize("body", BODIES.values(), ids=list(BODIES))
def test_each_part_is_encoded_as_the_email_package_would_and_reads_back_the_same(body):
    text, html = body
    recipient = Recipient(email="ann@example.org", name="Ann")
    message = Message(
        subject="Hi", html=html, text=text, recipients=[recipient], from_email="d@example.org"
    )
    mail = email.message_from_bytes(
        mime_bytes(message, recipient, now=NOW), policy=email.policy.default
    )
    assert isinstance(mail, EmailMessage) and not mail.defects
    plain, rich = mail.iter_parts()
    expected = EmailMessage(policy=email.policy.SMTP)
    expected.set_content(text, subtype="plain", charset="utf-8")
    expected.add_alternative(html, subtype="html", charset="utf-8")
    # As the email package writes it (CRLF lines, SMTP policy), read back the same way.
    written = email.message_from_bytes(bytes(expected), policy=email.policy.default)
    assert isinstance(written, EmailMessage)
    want_plain, want_rich = written.iter_parts()
    for got, want, source in ((plain, want_plain, text), (rich, want_rich, html)):
        assert got["Content-Transfer-Encoding"] == want["Content-Transfer-Encoding"]
        assert got.get_content() == want.get_content()
        assert got.get_content().replace("\r\n", "\n").rstrip("\n") == source.rstrip("\n")
        assert all(len(line) <= 78 for line in got.as_bytes().split(b"\n"))


def test_an_address_with_nothing_after_its_at_sign_is_refused_as_a_client_would_fail_on_it():
    recipient = Recipient(email="ann@")
    message = Message(
        subject="Hi", html="h", text="t", recipients=[recipient], from_email="d@example.org"
    )
    with pytest.raises(ValueError, match="no domain"):
        mime_bytes(message, recipient, now=NOW)
