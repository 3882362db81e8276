"""tests/smtp_server.py, proved with the standard library's smtplib as the only client.

Each fault the SMTP transport's tests rely on is shown to happen as a real client sees it, and the
TLS set-ups to verify (or refuse) as a real client's certificate checks do.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.smtp_process import serve_in_process
from tests.smtp_server import SmtpServer

REPO = Path(__file__).resolve().parent.parent
MESSAGE = b"From: digest@example.com\r\nSubject: Term of the week\r\n\r\nHello.\r\n"
SENDER = "digest@example.com"


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with SmtpServer() as running:
        yield running


def connect(server: SmtpServer, timeout: float = 5.0) -> smtplib.SMTP:
    """A client on STARTTLS that verifies the server's certificate, as the transport will."""
    client = smtplib.SMTP(server.host, server.port, timeout=timeout)
    client.starttls(context=ssl.create_default_context(cafile=str(server.ca_file)))
    return client


# ---------------------------------------------------------------------------- TLS and AUTH


def test_starttls_verifies_against_the_servers_ca_file(server: SmtpServer) -> None:
    with connect(server) as client:
        client.sendmail(SENDER, ["Reader@example.org"], MESSAGE)
        assert client.sock is not None and isinstance(client.sock, ssl.SSLSocket)

    [received] = server.messages_to("reader@example.org")
    assert (received.mail_from, received.rcpt_tos) == (SENDER, ("Reader@example.org",))
    assert received.data == MESSAGE
    assert server.deliveries() == {"reader@example.org": 1}


def test_the_systems_certificate_authorities_do_not_trust_it(server: SmtpServer) -> None:
    client = smtplib.SMTP(server.host, server.port, timeout=5)
    with client, pytest.raises(ssl.SSLCertVerificationError):
        client.starttls(context=ssl.create_default_context())
    assert server.count == 0


def test_the_certificate_names_localhost_too(server: SmtpServer) -> None:
    context = server.client_context()
    with smtplib.SMTP("localhost", server.port, timeout=5) as client:
        client.starttls(context=context)  # checks the certificate against "localhost"
        assert client.noop()[0] == 250


def test_implicit_tls_with_auth_over_it() -> None:
    with SmtpServer(tls="implicit", auth=("digest", "s3cret:@")) as server:
        assert server.url == f"smtps://digest:s3cret%3A%40@127.0.0.1:{server.port}"
        with smtplib.SMTP_SSL(
            server.host, server.port, timeout=5, context=server.client_context()
        ) as client:
            client.login("digest", "s3cret:@")
            client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
        assert server.count == 1


def test_require_tls_refuses_mail_before_starttls() -> None:
    with SmtpServer(require_tls=True) as server:
        with smtplib.SMTP(server.host, server.port, timeout=5) as client:
            client.ehlo()
            assert client.mail(SENDER)[0] == 530
            client.starttls(context=server.client_context())
            client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
        assert server.count == 1


def test_auth_is_required_and_a_wrong_password_is_535() -> None:
    with SmtpServer(auth=("digest", "right")) as server:
        with connect(server) as client:
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
            assert refused.value.smtp_code == 530
            with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
                client.login("digest", "wrong")
            assert wrong.value.smtp_code == 535
            client.login("digest", "right")
            client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
        assert server.count == 1


def test_plain_sessions_when_tls_is_none() -> None:
    with SmtpServer(tls="none", auth=("digest", "pw")) as server:
        with smtplib.SMTP(server.host, server.port, timeout=5) as client:
            client.ehlo()
            assert not client.has_extn("starttls")
            client.login("digest", "pw")
            client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
        assert server.count == 1


# ---------------------------------------------------------------------------- counting


def test_connections_rsets_and_messages_per_connection_are_counted(server: SmtpServer) -> None:
    with connect(server) as client:
        for n in range(3):
            client.sendmail(SENDER, [f"r{n}@example.org"], MESSAGE)
            client.rset()
    with connect(server) as client:
        client.sendmail(SENDER, ["r0@example.org", "r9@example.org"], MESSAGE)

    assert (server.connections, server.rsets, server.count) == (2, 3, 4)
    assert server.messages_per_connection() == {1: 3, 2: 1}
    assert [m.connection for m in server.messages_to("r0@example.org")] == [1, 2]
    stats = server.stats()
    assert (stats["recipients"], stats["distinct"], stats["duplicates"]) == (5, 4, 1)
    server.clear()
    assert (server.connections, server.count, server.received) == (0, 0, [])


def test_sessions_in_parallel_are_counted_apart(server: SmtpServer) -> None:
    def send(worker: int) -> None:
        with connect(server) as client:
            for n in range(20):
                client.sendmail(SENDER, [f"w{worker}-{n}@example.org"], MESSAGE)
                client.rset()

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert (server.count, server.connections, server.rsets) == (80, 4, 80)
    assert sorted(server.messages_per_connection().values()) == [20, 20, 20, 20]
    assert len(server.deliveries()) == 80


def test_a_client_gone_mid_data_leaves_nothing_stored(server: SmtpServer) -> None:
    client = connect(server)
    client.ehlo()
    client.mail(SENDER)
    client.rcpt("cut@example.org")
    client.putcmd("data")
    assert client.getreply()[0] == 354
    client.send(b"Subject: half a message\r\n\r\nand then")
    client.close()  # as a killed sender's socket is
    with connect(server) as client:  # the server carries on
        client.sendmail(SENDER, ["next@example.org"], MESSAGE)
    assert server.deliveries() == {"next@example.org": 1}


def test_unusual_addresses_still_get_the_full_parse(server: SmtpServer) -> None:
    with connect(server) as client:
        client.sendmail(SENDER, ['"first last"@example.org'], MESSAGE)
        client.mail(SENDER)
        assert client.rcpt("<a@b@example.org>")[0] == 553
    assert server.deliveries() == {'"first last"@example.org': 1}


def test_counting_only_keeps_no_bodies() -> None:
    with SmtpServer(store=False) as server:
        with connect(server) as client:
            client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
        assert server.count == 1
        assert server.deliveries() == {"reader@example.org": 1}
        with pytest.raises(RuntimeError, match="counts only"):
            server.messages_to("reader@example.org")


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize("code", [550, 451])
def test_fail_rcpt_refuses_that_recipient(server: SmtpServer, code: int) -> None:
    server.fail_rcpt("Gone@example.org", code, "no such reader")
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail(SENDER, ["gone@example.org"], MESSAGE)
        assert refused.value.recipients == {"gone@example.org": (code, b"no such reader")}
        # Among others, only that one is refused and the message goes to the rest.
        refusals = client.sendmail(SENDER, ["gone@example.org", "kept@example.org"], MESSAGE)
        assert refusals == {"gone@example.org": (code, b"no such reader")}
    assert server.deliveries() == {"kept@example.org": 1}
    assert server.stats()["refused_rcpts"] == 2


def test_a_4xx_recipient_refusal_only_the_first_time_succeeds_on_retry(
    server: SmtpServer,
) -> None:
    server.fail_rcpt("reader@example.org", 451, "4.7.1 try later", times=1)
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
        client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
    assert server.count == 1


def test_fail_data_answers_the_final_dot_with_an_error(server: SmtpServer) -> None:
    server.fail_data("bounced@example.org", 554, "5.7.1 rejected")
    server.fail_data(None, 451, "4.3.0 busy", times=1)
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPDataError) as rejected:
            client.sendmail(SENDER, ["bounced@example.org"], MESSAGE)
        assert (rejected.value.smtp_code, rejected.value.smtp_error) == (554, b"5.7.1 rejected")
        with pytest.raises(smtplib.SMTPDataError) as busy:
            client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
        assert busy.value.smtp_code == 451
        client.sendmail(SENDER, ["reader@example.org"], MESSAGE)  # the 451 was once only
    assert server.deliveries() == {"reader@example.org": 1}
    assert server.stats()["failed_data"] == 2


@pytest.mark.parametrize("keep", [True, False])
def test_drop_after_data_closes_without_an_answer(server: SmtpServer, keep: bool) -> None:
    server.drop_after_data(times=1, keep=keep, skip=1)
    with connect(server) as client:
        client.sendmail(SENDER, ["first@example.org"], MESSAGE)  # skipped: answered 250
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail(SENDER, ["ambiguous@example.org"], MESSAGE)
    # Delivered with its answer lost (keep), or lost with it: the sender cannot tell which.
    assert ("ambiguous@example.org" in server.deliveries()) is keep
    with connect(server) as client:  # the drop was once only
        client.sendmail(SENDER, ["after@example.org"], MESSAGE)
    assert server.count == (3 if keep else 2)
    assert server.stats()["dropped"] == 1


def test_reply_421_after_n_messages_closes_the_session(server: SmtpServer) -> None:
    server.reply_421_after(2)
    with connect(server) as client:
        client.sendmail(SENDER, ["r1@example.org"], MESSAGE)
        client.sendmail(SENDER, ["r2@example.org"], MESSAGE)
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(SENDER, ["r3@example.org"], MESSAGE)
        assert refused.value.smtp_code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    with connect(server) as client:  # every connection is cut after two messages
        client.sendmail(SENDER, ["r3@example.org"], MESSAGE)
        client.sendmail(SENDER, ["r4@example.org"], MESSAGE)
        assert client.rset()[0] == 421
    assert server.messages_per_connection() == {1: 2, 2: 2}
    assert server.stats()["cut"] == 2


def test_delay_holds_the_answer_past_a_clients_timeout(server: SmtpServer) -> None:
    server.delay(2.0)
    client = connect(server, timeout=0.2)
    with client, pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        client.sendmail(SENDER, ["slow@example.org"], MESSAGE)
    # Stored before the wait, as a slow server has it: the client gave up on a delivered mail.
    assert server.wait_for(1, timeout=5)
    assert server.deliveries() == {"slow@example.org": 1}


def test_reset_faults_lets_everything_through(server: SmtpServer) -> None:
    server.fail_rcpt("reader@example.org")
    server.fail_data()
    server.drop_after_data()
    server.reply_421_after(0)
    server.delay(5)
    server.reset_faults()
    with connect(server) as client:
        client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
    assert server.count == 1


# ---------------------------------------------------------------------------- other processes


def test_serve_in_process_counts_from_a_child_process() -> None:
    with serve_in_process() as child:
        client = smtplib.SMTP(child.host, child.port, timeout=5)
        client.starttls(context=ssl.create_default_context(cafile=str(child.ca_file)))
        client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
        child.server.fail_rcpt("gone@example.org", 550, "no")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(SENDER, ["gone@example.org"], MESSAGE)
        client.quit()
        assert child.count == 1
        assert child.server.deliveries() == {"reader@example.org": 1}
        assert child.url == f"smtp://127.0.0.1:{child.port}"


def test_standalone_prints_its_address_and_ca_file() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.smtp_process", "--port", "0", "--no-store"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        host, _, port = proc.stdout.readline().strip().rpartition(":")
        ca_file = proc.stdout.readline().strip()
        with smtplib.SMTP(host, int(port), timeout=5) as client:
            client.starttls(context=ssl.create_default_context(cafile=ca_file))
            client.sendmail(SENDER, ["reader@example.org"], MESSAGE)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert json.loads(err.strip().splitlines()[-1])["received"] == 1
