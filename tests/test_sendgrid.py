"""The SendGrid transport against the local SendGrid v3 test server: payloads, errors, secrets.

Also checks that the test server is as strict as SendGrid where it matters, since every other
delivery test trusts it to refuse what SendGrid would refuse.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.config import Settings
from digest.core.mails import Message, Recipient
from digest.delivery import make_transport
from digest.delivery.sendgrid import (
    MAX_REQUEST_BYTES,
    SendGridTransport,
    build_payload,
)
from digest.delivery.transport import PermanentError, RetryableError
from tests.sendgrid_server import SendGridTestServer, check_mail_send

REPO = Path(__file__).resolve().parent.parent
SECRET = "SG.abcdefghijklmnop.0123456789-secret-key-value"


@pytest.fixture
def sendgrid() -> Iterator[SendGridTestServer]:
    with SendGridTestServer(api_key=SECRET) as server:
        yield server


def _recipient(i: int, name: str | None = "Reader") -> Recipient:
    url = f"https://digest.example.org/unsubscribe/token-{i}"
    return Recipient(
        email=f"reader{i}@example.org",
        name=name,
        substitutions={
            "%%unsubscribe_url%%": url,
            "%%preferences_url%%": f"https://digest.example.org/preferences/token-{i}",
            "%%name%%": name or "",
            "%%name_html%%": name or "",
        },
        headers={
            "List-Unsubscribe": f"<{url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        custom_args={"subscriber_id": str(i)},
    )


def _message(
    count: int = 2, key: str | None = "2026-W10-1772442000-000001", **kw: object
) -> Message:
    fields: dict[str, object] = {
        "subject": "Attention, %%name%%",
        "html": "<p>Hi %%name_html%%</p><a href='%%unsubscribe_url%%'>unsubscribe</a>",
        "text": "Hi %%name%%\n%%unsubscribe_url%%\n%%preferences_url%%",
        "recipients": [_recipient(i) for i in range(count)],
        "from_email": "digest@example.org",
        "from_name": "AI Term of the Week",
        "reply_to": "editor@example.org",
        "categories": ("digest", "digest-2026-W10"),
        "custom_args": {"issue_week": "2026-W10", **({"batch_key": key} if key else {})},
        "batch_key": key,
    }
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


def _transport(server: SendGridTestServer, **kw: object) -> SendGridTransport:
    return SendGridTransport(server.api_key, host=server.url, timeout=0.5, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- payload


def test_payload_is_the_v3_mail_send_shape_with_text_before_html() -> None:
    payload = build_payload(_message(2))

    assert payload["from"] == {"email": "digest@example.org", "name": "AI Term of the Week"}
    assert payload["reply_to"] == {"email": "editor@example.org"}
    assert [c["type"] for c in payload["content"]] == ["text/plain", "text/html"]
    assert payload["categories"] == ["digest", "digest-2026-W10"]
    assert payload["custom_args"] == {
        "issue_week": "2026-W10",
        "batch_key": "2026-W10-1772442000-000001",
    }
    first = payload["personalizations"][0]
    assert first["to"] == [{"email": "reader0@example.org", "name": "Reader"}]
    assert first["custom_args"] == {"subscriber_id": "0"}
    assert first["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert check_mail_send(payload) == []


def test_recipient_name_with_comma_or_semicolon_is_left_out_of_the_to_header() -> None:
    # SendGrid drops such mail as sent to an invalid address; the greeting keeps the name.
    message = _message(recipients=[_recipient(0, "Doe, Jane"), _recipient(1, "A;B")])

    payload = build_payload(message)

    assert [p["to"] for p in payload["personalizations"]] == [
        [{"email": "reader0@example.org"}],
        [{"email": "reader1@example.org"}],
    ]
    assert payload["personalizations"][0]["substitutions"]["%%name%%"] == "Doe, Jane"


def test_send_returns_sendgrids_message_id(sendgrid: SendGridTestServer) -> None:
    result = _transport(sendgrid).send(_message(3))

    assert result.message_id and len(result.message_id) >= 10
    assert sendgrid.deliveries() == {f"reader{i}@example.org": 1 for i in range(3)}


def test_batch_size_shrinks_when_the_issue_is_huge_and_refuses_what_cannot_fit(
    sendgrid: SendGridTestServer,
) -> None:
    transport = _transport(sendgrid)
    assert transport.recipients_per_batch(_message(0)) == 1000

    big = _message(0, html="x" * (MAX_REQUEST_BYTES - 2_000_000))
    assert 1 <= transport.recipients_per_batch(big) < 1000

    too_big = _message(0, html="x" * MAX_REQUEST_BYTES)
    with pytest.raises(PermanentError, match="too large for SendGrid"):
        transport.recipients_per_batch(too_big)


def test_make_transport_refuses_sendgrid_without_a_key(settings_env: dict[str, str]) -> None:
    settings = Settings(transport="sendgrid", sendgrid_api_key=None)
    with pytest.raises(ValueError, match="SENDGRID_API_KEY"):
        make_transport(settings)


def test_make_transport_points_sendgrid_at_digest_sendgrid_host(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, sendgrid: SendGridTestServer
) -> None:
    monkeypatch.setenv("DIGEST_TRANSPORT", "sendgrid")
    monkeypatch.setenv("SENDGRID_API_KEY", SECRET)
    monkeypatch.setenv("DIGEST_SENDGRID_HOST", sendgrid.url)

    transport = make_transport(Settings())
    transport.send(_message(1))

    assert sendgrid.stats()["accepted"] == 1


# --------------------------------------------------------------------------- errors


def test_429_reports_when_the_rate_limit_resets(sendgrid: SendGridTestServer) -> None:
    sendgrid.fail_next({"kind": "status", "status": 429, "reset_in": 30})

    with pytest.raises(RetryableError, match=r"rate limit \(429\)") as caught:
        _transport(sendgrid).send(_message(1))

    assert caught.value.retry_after is not None and 28 <= caught.value.retry_after <= 31
    assert caught.value.maybe_delivered is False


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retryable_and_not_delivered(
    sendgrid: SendGridTestServer, status: int
) -> None:
    sendgrid.fail_next({"kind": "status", "status": status})

    with pytest.raises(RetryableError, match=f"server error \\({status}\\)") as caught:
        _transport(sendgrid).send(_message(1))

    assert caught.value.maybe_delivered is False
    assert sendgrid.deliveries() == {}


@pytest.mark.parametrize(
    ("fault", "accepted"),
    [
        ({"kind": "hang", "seconds": 1.5, "accept": False}, False),
        ({"kind": "hang", "seconds": 1.5, "accept": True}, True),
        ({"kind": "drop", "accept": False}, False),
        ({"kind": "drop", "accept": True}, True),
    ],
)
def test_a_lost_answer_may_have_been_delivered(
    sendgrid: SendGridTestServer, fault: dict[str, object], accepted: bool
) -> None:
    sendgrid.fail_next(fault)

    with pytest.raises(RetryableError) as caught:
        _transport(sendgrid).send(_message(1))

    assert caught.value.maybe_delivered is True
    assert bool(sendgrid.deliveries()) is accepted


def test_unreachable_sendgrid_is_retryable_and_certainly_not_delivered() -> None:
    transport = SendGridTransport(SECRET, host="http://127.0.0.1:9", timeout=0.5)

    with pytest.raises(RetryableError, match="cannot reach SendGrid") as caught:
        transport.send(_message(1))

    assert caught.value.maybe_delivered is False


def test_rejected_request_is_permanent_and_carries_sendgrids_error_text(
    sendgrid: SendGridTestServer,
) -> None:
    unlabelled = Recipient(email="x@example.org", substitutions=_recipient(0).substitutions)
    bad = _message(recipients=[unlabelled])

    with pytest.raises(PermanentError, match=r"refused the request \(400\): .*List-Unsubscribe"):
        _transport(sendgrid).send(bad)


def test_wrong_key_is_permanent_and_the_key_never_shows_in_errors_or_logs(
    sendgrid: SendGridTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "SG.wrongwrongwrong.this-must-not-leak-anywhere-0123456789"
    transport = SendGridTransport(wrong, host=sendgrid.url, timeout=0.5)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PermanentError) as caught:
        transport.send(_message(1))
    sendgrid.fail_next(
        {"kind": "status", "status": 503}, {"kind": "hang", "seconds": 1.5, "accept": False}
    )
    good = SendGridTransport(SECRET, host=sendgrid.url, timeout=0.5)
    for _ in range(2):
        with pytest.raises(RetryableError) as retry:
            good.send(_message(1))
        assert SECRET not in str(retry.value)
    good.lookup_batch("2026-W10-1772442000-000001")

    assert "(401)" in str(caught.value) and "authorization grant" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in repr(transport)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "python_http_client" in {r.name.split(".")[0] for r in caplog.records}
    assert wrong not in logged and SECRET not in logged
    assert "reader0@example.org" not in logged  # whole payloads are not logged either


# --------------------------------------------------------------------------- lookup


def test_lookup_finds_a_batch_by_its_custom_arg(sendgrid: SendGridTestServer) -> None:
    transport = _transport(sendgrid, activity_settle=0)
    transport.send(_message(2, key="2026-W10-1772442000-000003"))

    assert transport.lookup_batch("2026-W10-1772442000-000003") is True
    assert transport.lookup_batch("2026-W10-1772442000-000004") is False


def test_lookup_right_after_our_own_attempt_cannot_tell_yet(sendgrid: SendGridTestServer) -> None:
    transport = _transport(sendgrid)  # the real settle time: the activity feed lags
    sendgrid.fail_next({"kind": "status", "status": 503})
    with pytest.raises(RetryableError):
        transport.send(_message(1, key="2026-W10-1772442000-000005"))

    assert transport.lookup_batch("2026-W10-1772442000-000005") is None


def test_lookup_without_email_activity_access_cannot_tell(sendgrid: SendGridTestServer) -> None:
    sendgrid.fail_next({"kind": "status", "status": 403, "target": "messages"})

    assert _transport(sendgrid).lookup_batch("2026-W10-1772442000-000006") is None


# --------------------------------------------------------------------------- the test server


def test_server_refuses_what_sendgrid_refuses() -> None:
    good = build_payload(_message(2))
    assert check_mail_send(good) == []

    too_many = build_payload(_message(1001))
    assert any("limited to 1000" in m for _, m in check_mail_send(too_many))

    twice = build_payload(_message(2))
    twice["personalizations"][1]["to"] = twice["personalizations"][0]["to"]
    assert any("only be included once" in m for _, m in check_mail_send(twice))

    html_first = build_payload(_message(1))
    html_first["content"].reverse()
    assert any("text/plain must be first" in m for _, m in check_mail_send(html_first))

    no_header = build_payload(_message(1))
    del no_header["personalizations"][0]["headers"]
    assert any("List-Unsubscribe" in m for _, m in check_mail_send(no_header))

    no_subs = build_payload(_message(1))
    del no_subs["personalizations"][0]["substitutions"]["%%preferences_url%%"]
    assert any("%%preferences_url%%" in m for _, m in check_mail_send(no_subs))

    no_from = build_payload(_message(1))
    del no_from["from"]
    assert any(f == "from.email" for f, _ in check_mail_send(no_from))


def test_server_runs_standalone_for_other_processes() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sendgrid_server", "--port", "0", "--api-key", SECRET],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        faults = json.dumps([{"kind": "status", "status": 503}]).encode()
        request = urllib.request.Request(f"{url}/_test/faults", data=faults, method="POST")
        urllib.request.urlopen(request, timeout=5).read()

        transport = SendGridTransport(SECRET, host=url, timeout=2)
        with pytest.raises(RetryableError):
            transport.send(_message(2))
        transport.send(_message(2))

        stats = json.load(urllib.request.urlopen(f"{url}/_test/stats", timeout=5))
        assert (stats["requests"], stats["accepted"], stats["distinct"]) == (2, 1, 2)
        counts = json.load(urllib.request.urlopen(f"{url}/_test/deliveries", timeout=5))
        assert counts == {"reader0@example.org": 1, "reader1@example.org": 1}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
