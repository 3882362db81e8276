"""The SMTP transport against a real SMTP server (tests/smtp_server.py, aiosmtpd) with faults.

A weekly send through DIGEST_TRANSPORT=smtp on SQLite and PostgreSQL: one message a reader with
valid one-click headers (and a DKIM signature that verifies when configured), the ledger holding
each reader's result; the faults a relay has — 421 mid-session, 451 and 550 per recipient, a
connection dropped after DATA, TLS and logins — each ending as a reader would want.
"""

from __future__ import annotations

import email
import email.policy
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from digest.cli import app
from digest.config import Settings, get_settings
from digest.delivery import make_transport, send_one_off
from digest.delivery.dkim import DkimSigner
from digest.delivery.runner import retry_failed, send_issue
from digest.delivery.smtp import SmtpTransport
from digest.delivery.transport import PermanentError
from digest.model.relay import parse_relay_url
from digest.store.db import deliveries, smtp_journal, utcnow
from digest.store.issues import get_issue, transition
from digest.store.smtp_journal import SmtpJournal
from tests.sending import WEEK, FakeSleep, build_issue, reader_rows, seed_subscribers
from tests.smtp_server import SmtpServer
from tests.test_sendgrid import _message

READERS = 30


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with SmtpServer(auth=("digest", "p@ss:word")) as smtp:
        yield smtp


def _settings(server: SmtpServer, **extra: object) -> Settings:
    return Settings(
        transport="smtp",
        smtp_url=server.url,
        smtp_ca_file=server.ca_file,
        smtp_connections=2,
        smtp_timeout=5,
        batches_in_flight=2,
        batch_size=10,
        max_retries=2,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        **extra,  # type: ignore[arg-type]
    )


def _send(engine: Engine, settings: Settings) -> tuple[str, str | None]:
    """Send the week's issue: the issue's status and the run's reason (as `digest send` says)."""
    transport = make_transport(settings, engine)
    try:
        summary = send_issue(engine, settings, transport, WEEK, now=utcnow)
    finally:
        transport.close()  # type: ignore[attr-defined]
    issue = get_issue(engine, WEEK)
    assert issue is not None
    return issue.status, summary.reason


def _everyone(count: int = READERS) -> set[str]:
    return {f"reader{i}@example.org" for i in range(count)}


# --------------------------------------------------------------------------- the weekly send


def test_a_weekly_send_delivers_one_message_per_reader_with_one_click_headers(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    settings = _settings(server)

    assert _send(engine, settings) == ("sent", None)

    assert server.deliveries() == dict.fromkeys(_everyone(), 1)
    assert {row[0] for row in reader_rows(engine).values()} == {"sent"}
    tokens = set()
    for received in server.received:
        mail = email.message_from_bytes(received.data, policy=email.policy.default)
        assert [mail["To"].addresses[0].addr_spec] == list(received.rcpt_tos)
        assert received.mail_from == settings.sender_email
        unsubscribe = str(mail["List-Unsubscribe"])
        assert unsubscribe.startswith("<https://digest.example.org/unsubscribe/")
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert mail["Message-ID"] and mail["Date"]
        assert mail["Subject"] == "Attention, Reader"
        body = mail.get_body(("plain",))
        assert body is not None
        url = unsubscribe.strip("<>").split(">")[0]
        assert url in body.get_content()  # the reader's own link, in the body as in the header
        tokens.add(url)
    assert len(tokens) == READERS  # a skeleton filled per reader: every link their own
    # Sessions are kept open and reused (RSET before reuse), not one a message.
    assert server.connections <= 2 * 2
    assert server.count >= 10 * server.connections / 2


def test_a_dkim_signed_send_verifies_with_the_published_record(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer, tmp_path: Path
) -> None:
    key = tmp_path / "dkim.pem"
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    seed_subscribers(engine, 5)
    build_issue(engine)
    settings = _settings(server, dkim_key_file=key, dkim_selector="digest1")
    assert _send(engine, settings)[0] == "sent"

    signer = DkimSigner.from_settings(settings)
    assert signer is not None
    name, value = signer.dns_record()

    def txt(qname: bytes, timeout: int = 5) -> bytes | None:
        return value.encode() if qname.decode().rstrip(".") == name else None

    assert server.count == 5
    for received in server.received:
        assert received.data.startswith(b"DKIM-Signature:")
        assert dkim.verify(received.data, dnsfunc=txt)
        assert not dkim.verify(received.data.replace(b"Attention", b"Atention", 1), dnsfunc=txt)


# --------------------------------------------------------------------------- faults per reader


def test_a_550_refuses_that_reader_with_the_relays_words_and_the_rest_go_on(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    server.fail_rcpt("reader7@example.org", 550, "5.1.1 <reader7@example.org>: no such user")

    status, reason = _send(engine, _settings(server))

    assert status == "sent"
    assert reason is not None and "1 reader refused" in reason
    assert server.deliveries() == dict.fromkeys(_everyone() - {"reader7@example.org"}, 1)
    rows = reader_rows(engine)
    assert rows["reader7@example.org"] == (
        "refused",
        "RCPT TO: 550 5.1.1 <reader7@example.org>: no such user",
    )
    assert sum(1 for s, _e in rows.values() if s == "sent") == READERS - 1


def test_a_451_is_tried_again_and_delivered_once(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    server.fail_rcpt("reader3@example.org", 451, "4.7.1 greylisted, try again", times=2)
    server.fail_data("reader4@example.org", 451, "4.3.0 try again", times=1)

    assert _send(engine, _settings(server)) == ("sent", None)

    assert server.deliveries() == dict.fromkeys(_everyone(), 1)
    assert server.stats()["refused_rcpts"] == 2


def test_a_reader_the_relay_keeps_deferring_fails_alone_and_retry_failed_sends_it_later(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    server.fail_data("reader5@example.org", 452, "4.2.2 mailbox full")
    settings = _settings(server)

    status, reason = _send(engine, settings)

    assert status == "paused"
    assert reason is not None and "1 reader could not be sent to yet" in reason
    assert "--retry-failed" in reason
    assert server.deliveries() == dict.fromkeys(_everyone() - {"reader5@example.org"}, 1)
    state, error = reader_rows(engine)["reader5@example.org"]
    assert state == "failed"
    assert error is not None and "452 4.2.2 mailbox full" in error

    server.reset_faults()
    transport = make_transport(settings, engine)
    retry_failed(engine, settings, transport, WEEK, now=utcnow)
    assert server.deliveries() == dict.fromkeys(_everyone(), 1)
    assert reader_rows(engine)["reader5@example.org"][0] == "sent"


def test_a_421_mid_session_reconnects_and_nobody_is_missed_or_doubled(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    server.reply_421_after(4)  # every session is shut down after its fourth message

    assert _send(engine, _settings(server)) == ("sent", None)

    assert server.deliveries() == dict.fromkeys(_everyone(), 1)
    assert server.connections >= READERS // 4
    assert max(server.messages_per_connection().values()) == 4


@pytest.mark.parametrize("kept", [True, False], ids=["relay kept it", "relay lost it"])
def test_a_connection_dropped_after_data_is_reported_not_resent_by_default(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer, kept: bool
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    server.drop_after_data(times=1, keep=kept, address="reader9@example.org")

    status, _reason = _send(engine, _settings(server))

    assert status == "sent"
    expected = _everyone() - ({"reader9@example.org"} if not kept else set())
    assert server.deliveries() == dict.fromkeys(expected, 1)  # never twice
    state, error = reader_rows(engine)["reader9@example.org"]
    assert state == "skipped"
    assert error is not None and error.startswith("uncertain: ")
    assert "DIGEST_AMBIGUOUS_BATCHES=skip" in error


def test_with_resend_a_message_lost_after_data_is_sent_again(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    server.drop_after_data(times=1, keep=False, address="reader9@example.org")

    assert _send(engine, _settings(server, ambiguous_batches="resend")) == ("sent", None)

    assert server.deliveries() == dict.fromkeys(_everyone(), 1)
    assert reader_rows(engine)["reader9@example.org"][0] == "sent"


def test_a_transport_called_again_for_a_batch_never_sends_anyone_twice(
    engine: Engine, server: SmtpServer
) -> None:
    transport = SmtpTransport(
        parse_relay_url(server.url),
        journal=SmtpJournal(engine),
        clock=utcnow,
        ca_file=server.ca_file,
        retries=0,
        sleep=FakeSleep(),
    )
    message = _message(20)
    server.fail_data("reader6@example.org", 451, "4.3.0 later")
    server.fail_rcpt("reader2@example.org", 550, "5.1.1 unknown")
    first = transport.send(message)
    assert set(first.failed) == {"reader6@example.org"}
    assert set(first.refused) == {"reader2@example.org"}
    assert server.count == 18

    server.reset_faults()
    again = transport.send(message)  # a retry of the whole batch, as a resumed run makes
    assert not again.failed and set(again.refused) == {"reader2@example.org"}
    assert server.count == 19
    assert server.deliveries()["reader6@example.org"] == 1
    transport.close()


# --------------------------------------------------------------------------- TLS and logins


def test_implicit_tls_and_a_server_requiring_tls_both_deliver(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    with SmtpServer(tls="implicit", auth=("digest", "secret")) as implicit:
        assert implicit.url.startswith("smtps://")
        assert _send(engine, _settings(implicit))[0] == "sent"
        assert implicit.count == 5
    with SmtpServer(tls="starttls", require_tls=True) as required:
        send_one_off(_settings(required), _message(1, key=None))  # a confirmation, say
        assert required.count == 1


def test_a_relay_without_starttls_is_refused_rather_than_spoken_to_in_clear(
    settings_env: dict[str, str],
) -> None:
    with SmtpServer(tls="none") as plain:
        transport = SmtpTransport(
            parse_relay_url(f"smtp://{plain.host}:{plain.port}"), journal=None, clock=utcnow
        )
        with pytest.raises(PermanentError, match="offers no STARTTLS"):
            transport.send(_message(1, key=None))
        assert plain.count == 0


def test_an_unverifiable_certificate_and_a_wrong_password_fail_clearly_without_secrets(
    server: SmtpServer,
) -> None:
    unverified = SmtpTransport(parse_relay_url(server.url), journal=None, clock=utcnow)
    with pytest.raises(PermanentError, match="certificate does not verify") as caught:
        unverified.send(_message(1, key=None))
    assert "p@ss" not in str(caught.value)

    wrong = server.url.replace("p%40ss%3Aword", "wrong-password")
    assert wrong != server.url
    refused = SmtpTransport(
        parse_relay_url(wrong), journal=None, clock=utcnow, ca_file=server.ca_file
    )
    with pytest.raises(PermanentError, match="refused the login") as caught:
        refused.send(_message(1, key=None))
    assert "wrong-password" not in str(caught.value) and "535" in str(caught.value)
    assert server.count == 0


def test_a_relay_that_cannot_be_reached_pauses_the_issue_and_a_later_run_finishes_it(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    settings = _settings(server)
    down = settings.model_copy(update={"smtp_url": SecretStr(f"smtp://127.0.0.1:{_free_port()}")})

    status, reason = _send(engine, down)
    assert status == "paused"
    assert reason is not None and "cannot reach the SMTP relay 127.0.0.1" in reason
    assert server.count == 0

    transition(engine, WEEK, "sending", None, now=utcnow())
    assert _send(engine, settings) == ("sent", None)
    assert server.deliveries() == dict.fromkeys(_everyone(), 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- pacing


def test_the_rate_limit_spaces_messages_over_all_connections(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer
) -> None:
    seed_subscribers(engine, 8)
    build_issue(engine)
    started = time.monotonic()
    assert _send(engine, _settings(server, smtp_rate=20.0))[0] == "sent"
    took = time.monotonic() - started
    assert server.count == 8
    assert took >= 7 / 20 - 0.01  # eight messages at 20/s: seven gaps of 50 ms at least


def test_the_journal_holds_no_address(engine: Engine, server: SmtpServer) -> None:
    transport = SmtpTransport(
        parse_relay_url(server.url), journal=SmtpJournal(engine), clock=utcnow,
        ca_file=server.ca_file,
    )  # fmt: skip
    transport.send(_message(3))
    transport.close()

    with engine.connect() as conn:
        rows = conn.execute(select(smtp_journal)).all()
    assert len(rows) == 3
    assert not any("@" in str(value) for row in rows for value in row if value is not None)
    assert {row.state for row in rows} == {"accepted"}
    assert all(row.at <= datetime.now(UTC) for row in rows)


# --------------------------------------------------------------------------- the CLI


def test_digest_send_over_smtp_and_the_delivery_log_names_each_reader_not_sent(
    engine: Engine,
    settings_env: dict[str, str],
    server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    for key, value in {
        "DIGEST_TRANSPORT": "smtp",
        "DIGEST_SMTP_URL": server.url,
        "DIGEST_SMTP_CA_FILE": str(server.ca_file),
        "DIGEST_RETRY_BASE_DELAY": "0.01",
        "DIGEST_RETRY_MAX_DELAY": "0.02",
        "DIGEST_MAX_RETRIES": "1",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    server.fail_rcpt("reader7@example.org", 550, "5.1.1 no such user")
    server.fail_data("reader8@example.org", 452, "4.2.2 mailbox full")
    server.drop_after_data(times=1, keep=True, address="reader9@example.org")

    sent = CliRunner().invoke(app, ["send", "--week", str(WEEK)])
    assert sent.exit_code == 2, sent.output  # paused: one reader still deferred
    assert "1 reader could not be sent to yet" in sent.output

    log = CliRunner().invoke(app, ["deliveries", "--week", str(WEEK)])
    assert log.exit_code == 0, log.output
    lines = log.output.splitlines()
    assert any(line.split() == ["sent", str(READERS - 3)] for line in lines), log.output
    assert "  reader7@example.org  refused  (RCPT TO: 550 5.1.1 no such user)" in lines
    assert any(
        line.startswith("  reader8@example.org  failed  (the relay deferred it 2 times")
        and "452 4.2.2 mailbox full" in line
        for line in lines
    ), log.output
    assert any(line.startswith("  reader9@example.org  skipped  (uncertain: ") for line in lines), (
        log.output
    )
    assert server.deliveries()["reader9@example.org"] == 1  # the relay kept it: not resent


def test_an_answer_that_times_out_after_data_is_uncertain_and_the_session_is_replaced(
    engine: Engine, server: SmtpServer
) -> None:
    transport = SmtpTransport(
        parse_relay_url(server.url), journal=SmtpJournal(engine), clock=utcnow,
        ca_file=server.ca_file, timeout=0.3, retries=0, sleep=FakeSleep(),
    )  # fmt: skip
    server.delay(0.6)  # the relay stores each message, then answers too late
    result = transport.send(_message(3))
    assert set(result.uncertain) == {f"reader{i}@example.org" for i in range(3)}
    assert not result.refused and not result.failed
    server.reset_faults()
    assert transport.send(_message(3)).uncertain  # a resend still never sends them again
    assert server.deliveries() == {f"reader{i}@example.org": 1 for i in range(3)}
    assert transport.sessions_opened == 3  # a new session after each lost one
    transport.close()


def test_digest_check_opens_a_session_with_the_relay_and_names_what_fails(
    engine: Engine,
    settings_env: dict[str, str],
    server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_subscribers(engine, 3)
    build_issue(engine)
    monkeypatch.setenv("DIGEST_TRANSPORT", "smtp")
    monkeypatch.setenv("DIGEST_SMTP_URL", server.url)
    monkeypatch.setenv("DIGEST_SMTP_CA_FILE", str(server.ca_file))
    get_settings.cache_clear()
    checked = CliRunner().invoke(app, ["check", "--week", str(WEEK)])
    assert checked.exit_code == 0, checked.output
    assert (
        f"SMTP: the relay 127.0.0.1:{server.port} answered (STARTTLS, certificate verified, "
        "logged in as digest)"
    ) in checked.output
    assert server.count == 0  # nothing sent

    monkeypatch.setenv("DIGEST_SMTP_URL", server.url.replace("p%40ss%3Aword", "nope"))
    get_settings.cache_clear()
    refused = CliRunner().invoke(app, ["check", "--week", str(WEEK)])
    assert refused.exit_code == 1, refused.output
    assert "- SMTP: the relay 127.0.0.1" in refused.output
    assert "refused the login (535" in refused.output and "nope" not in refused.output


def test_a_reader_whose_mail_cannot_be_written_is_refused_alone(
    engine: Engine, server: SmtpServer
) -> None:
    transport = SmtpTransport(
        parse_relay_url(server.url), journal=SmtpJournal(engine), clock=utcnow,
        ca_file=server.ca_file,
    )  # fmt: skip
    message = _message(3)
    odd = replace(message.recipients[1], email="zoë@example.org")
    message = replace(message, recipients=[message.recipients[0], odd, message.recipients[2]])
    result = transport.send(message)
    assert list(result.refused) == ["zoë@example.org"]
    assert result.refused["zoë@example.org"].startswith(
        "the SMTP transport cannot write a mail to this reader's address: "
    )
    assert server.deliveries() == {"reader0@example.org": 1, "reader2@example.org": 1}
    assert transport.refused_in_batch(message) == result.refused  # as a resumed run reads it
    transport.close()


def test_the_envelope_sender_can_be_a_bounce_address_of_its_own(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer
) -> None:
    seed_subscribers(engine, 3)
    build_issue(engine)
    settings = _settings(server, smtp_envelope_from="bounces@mail.example.org")
    assert _send(engine, settings)[0] == "sent"
    assert {r.mail_from for r in server.received} == {"bounces@mail.example.org"}
    for received in server.received:  # the From readers see is unchanged
        mail = email.message_from_bytes(received.data, policy=email.policy.default)
        assert mail["From"].addresses[0].addr_spec == settings.sender_email
    with pytest.raises(ValueError, match="DIGEST_SMTP_ENVELOPE_FROM must be one address"):
        Settings(smtp_envelope_from="two words@")


def test_each_readers_ledger_row_keeps_the_relays_own_answer_as_its_message_id(
    engine: Engine, settings_env: dict[str, str], server: SmtpServer
) -> None:
    seed_subscribers(engine, 12)
    build_issue(engine)
    assert _send(engine, _settings(server))[0] == "sent"
    with engine.connect() as conn:
        ids = conn.execute(select(deliveries.c.message_id, deliveries.c.status)).all()
    assert len(ids) == 12
    assert all(status == "sent" and (mid or "").startswith("250 ") for mid, status in ids), ids
