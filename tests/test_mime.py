"""The MIME skeleton (digest.delivery.mime): a reader's copy built from parts encoded once per
issue reads, in a mail client, exactly as a copy built whole would."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from digest.core.mails import Message
from digest.delivery.mime import Skeleton, mime_bytes
from tests.test_sendgrid import _message, _recipient

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _read(raw: bytes) -> email.message.EmailMessage:
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(mail, email.message.EmailMessage)
    return mail


def _parts(raw: bytes) -> tuple[str, str]:
    mail = _read(raw)
    plain, rich = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None and rich is not None
    # A body as a mail client shows it: its CRLF line ends read as newlines.
    return (
        plain.get_content().replace("\r\n", "\n"),
        rich.get_content().replace("\r\n", "\n"),
    )


def _issue(**changes: object) -> Message:
    long_line = "<p>" + "A line the markers are not on, " * 40 + "</p>"
    html = f"<html><body>\n{long_line}\n<p>Hello %%name_html%%</p>\n" + (
        "<a href='%%unsubscribe_url%%'>Unsubscribe</a>\n</body></html>\n"
    )
    text = "Hello %%name%%,\n\nShort lines only.\nUnsubscribe: %%unsubscribe_url%%\n"
    return replace(_message(1, key=None), html=html, text=text, **changes)


def test_every_readers_copy_holds_their_own_values_and_nothing_else() -> None:
    message = _issue()
    for i, name in enumerate(["Reader", "Zoë Ærøskøbing", "李雷 🚀", "x" * 150]):
        recipient = _recipient(i, name=name)
        plain, rich = _parts(mime_bytes(message, recipient, now=NOW))
        url = f"https://digest.example.org/unsubscribe/token-{i}"
        assert plain == f"Hello {name},\n\nShort lines only.\nUnsubscribe: {url}\n"
        assert f"<p>Hello {name}</p>" in rich and f"href='{url}'" in rich
        assert "%%" not in plain + rich
        assert "A line the markers are not on, " * 40 in rich


def test_a_long_or_non_ascii_value_changes_the_transfer_encoding_of_that_copy_only() -> None:
    message = _issue()
    short = _read(mime_bytes(message, _recipient(1, name="Ann"), now=NOW))
    long = _read(mime_bytes(message, _recipient(2, name="Ann " * 40), now=NOW))
    accented = _read(mime_bytes(message, _recipient(3, name="Zoë"), now=NOW))
    kinds = [m.get_body(("plain",))["Content-Transfer-Encoding"] for m in (short, long, accented)]  # type: ignore[index]
    assert kinds == ["7bit", "quoted-printable", "8bit"]
    for mail in (short, long, accented):
        assert all(len(line) <= 998 for line in mail.as_bytes().split(b"\n"))


def test_a_value_holding_a_line_break_is_encoded_as_the_whole_text_would_be() -> None:
    recipient = _recipient(1)
    recipient = replace(recipient, substitutions={**recipient.substitutions, "%%name%%": "a\nb"})
    raw = mime_bytes(_issue(subject="This week"), recipient, now=NOW)
    assert b"\n" not in raw.replace(b"\r\n", b"")  # no bare LF reaches the wire
    plain, _rich = _parts(raw)
    assert plain.startswith("Hello a\nb,\n")


def test_the_skeleton_is_built_once_for_an_issue_and_a_marked_subject_is_filled_per_reader() -> (
    None
):
    message = _issue(subject="For %%name%% — ✓")
    assert Skeleton.of(message) is Skeleton.of(replace(message, recipients=[_recipient(5)]))
    subject = _read(mime_bytes(message, _recipient(1, name="Zoë"), now=NOW))["Subject"]
    assert subject == "For Zoë — ✓"
    with pytest.raises(ValueError):
        mime_bytes(replace(message, from_email="no-domain@"), _recipient(1), now=NOW)
