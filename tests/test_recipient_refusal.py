"""One address a transport cannot handle never blocks a send.

A stored reader whose address a transport cannot take (here `usér@example.com`: a non-ASCII
local part, which Python's email package refuses to write under the SMTP policy and SendGrid is
reported to drop silently) is recorded as `refused` with the reason, for that reader only; every
other reader of the batch still gets the issue exactly once, the issue ends `sent`, and a crash
between the transport and the ledger records the refusal the same way on resume.

Real parts: SQLite and PostgreSQL, the outbox on disk, the SendGrid transport over HTTP to the
local test server, and `digest send` through its CLI.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from typer.testing import CliRunner

from digest.config import Settings, get_settings
from digest.core.mails import Message
from digest.delivery.outbox import OutboxTransport
from digest.delivery.personalise import SendError
from digest.delivery.runner import send_issue
from digest.delivery.samples import send_test
from digest.delivery.sendgrid import SendGridTransport
from digest.delivery.transport import SendResult
from digest.store.db import deliveries, subscribers, utcnow
from digest.store.deliveries import issue_deliveries
from digest.store.issues import get_issue
from tests.sendgrid_server import SendGridTestServer
from tests.sending import (
    JOINED,
    NOW,
    WEEK,
    build_issue,
    ledger,
    mails_per_address,
    seed_subscribers,
    sendgrid_transport,
)

BAD = "usér@example.com"


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    # One batch at a time: the faults and crashes here are scripted by the order batches go
    # out in (tests/test_in_flight.py and test_crash.py send with several at once).
    return Settings(
        batches_in_flight=1, batch_size=3, max_retries=1, retry_base_delay=0, retry_max_delay=0
    )


@pytest.fixture
def sendgrid() -> Iterator[SendGridTestServer]:
    with SendGridTestServer() as server:
        yield server


def store_reader_the_door_would_refuse(engine: Engine, address: str = BAD) -> int:
    """Insert an active, confirmed reader directly, as a row stored before the door checked."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(subscribers)
                .values(
                    email=address,
                    name="Ulla",
                    status="active",
                    source="import",
                    created_at=JOINED - timedelta(days=1),
                    confirmed_at=JOINED,
                    updated_at=JOINED,
                )
                .returning(subscribers.c.id)
            ).scalar_one()
        )


def audience_with_bad_rows(engine: Engine) -> tuple[set[str], list[int]]:
    """Seven good readers with two bad rows among them (ids 3rd and 7th of nine)."""
    good: set[str] = set()
    bad: list[int] = []
    good |= {f"a{i}@example.org" for i in range(2)}
    seed_subscribers(engine, 2, prefix="a")
    bad.append(store_reader_the_door_would_refuse(engine, BAD))
    seed_subscribers(engine, 3, prefix="b")
    good |= {f"b{i}@example.org" for i in range(3)}
    bad.append(store_reader_the_door_would_refuse(engine, "zoë.ü@example.com"))
    seed_subscribers(engine, 2, prefix="c")
    good |= {f"c{i}@example.org" for i in range(2)}
    return good, bad


def ledger_rows(engine: Engine, ids: list[int]) -> dict[int, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.subscriber_id, deliveries.c.status, deliveries.c.error).where(
                deliveries.c.subscriber_id.in_(ids)
            )
        ).all()
    return {sid: (status, error) for sid, status, error in rows}


class Crash(BaseException):
    """The process dying right after the transport took a batch, before the ledger heard."""


class CrashAfterSend:
    """Wraps a transport: lets `send` go through, then dies once (on the `batch`-th send)."""

    def __init__(self, inner: Any, batch: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_batch = inner.max_batch
        self.left = batch
        self.sends = 0

    def send(self, message: Message) -> SendResult:
        result = self.inner.send(message)
        self.sends += 1
        self.left -= 1
        if self.left == 0:
            raise Crash()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# --------------------------------------------------------------------------- the outbox


def test_outbox_refuses_only_the_reader_it_cannot_write_and_everyone_else_gets_it_once(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    good, bad = audience_with_bad_rows(engine)
    build_issue(engine)
    folder = tmp_path / "outbox"

    summary = send_issue(engine, settings, OutboxTransport(folder, clock=utcnow), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.refused, summary.failed) == ("sent", 7, 2, 0)
    assert "2 readers refused" in (summary.reason or "")
    assert mails_per_address(folder) == Counter(dict.fromkeys(good, 1))
    assert ledger(engine) == {"sent": 7, "refused": 2}
    rows = ledger_rows(engine, bad)
    assert {status for status, _ in rows.values()} == {"refused"}
    # The email package's words (or digest's header rules') follow; the remedy is digest's.
    assert all(
        (error or "").startswith("the outbox cannot write a mail to this reader's address: ")
        and "correct or remove the address" in (error or "")
        for _, error in rows.values()
    )
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "sent"


def test_a_batch_of_refused_readers_only_does_not_stop_the_rest_of_the_issue(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    seed_subscribers(engine, 2, prefix="a")
    bad = [store_reader_the_door_would_refuse(engine, f"ünï{i}@example.com") for i in range(3)]
    seed_subscribers(engine, 2, prefix="b")
    build_issue(engine)
    folder = tmp_path / "outbox"

    summary = send_issue(engine, settings, OutboxTransport(folder, clock=utcnow), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.refused) == ("sent", 4, 3)
    assert sum(mails_per_address(folder).values()) == 4
    assert {s for s, _ in ledger_rows(engine, bad).values()} == {"refused"}


def test_a_problem_with_the_message_itself_fails_the_issue_instead_of_refusing_everyone(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    seed_subscribers(engine, 4)
    build_issue(engine)
    # A sender address no mail can carry: every reader's mail would fail, so nobody's
    # address is to blame and nobody may be written off as refused.
    broken = settings.model_copy(update={"sender_email": "nöreply@example.org"})

    summary = send_issue(
        engine, broken, OutboxTransport(tmp_path / "outbox", clock=utcnow), WEEK, now=NOW
    )

    assert summary.status == "failed" and summary.refused == 0
    assert "not any one address" in (summary.reason or "")
    assert "refused" not in ledger(engine)
    assert not list((tmp_path / "outbox").glob("*.eml"))


def test_a_crash_after_the_outbox_wrote_a_batch_with_a_refused_reader_resumes_the_same_way(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    good, bad = audience_with_bad_rows(engine)
    build_issue(engine)
    folder = tmp_path / "outbox"
    crashing = CrashAfterSend(
        OutboxTransport(folder, clock=utcnow), batch=1
    )  # the batch holding usér@

    with pytest.raises(Crash):
        send_issue(engine, settings, crashing, WEEK, now=NOW)  # type: ignore[arg-type]
    assert ledger(engine) == {"claimed": 3}
    written = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.eml")}
    assert len(written) == 2

    again = CrashAfterSend(OutboxTransport(folder, clock=utcnow), batch=0)
    summary = send_issue(engine, settings, again, WEEK, now=NOW)  # type: ignore[arg-type]

    assert summary.status == "sent"
    assert ledger(engine) == {"sent": 7, "refused": 2}
    assert {s for s, _ in ledger_rows(engine, bad).values()} == {"refused"}
    assert again.sends == 2  # batches 2 and 3 only: batch 1 was recorded from its manifest
    assert written == {
        p.name: p.stat().st_mtime_ns for p in folder.glob("*.eml") if p.name in written
    }
    assert mails_per_address(folder) == Counter(dict.fromkeys(good, 1))


def test_digest_send_reports_the_refused_readers_and_a_second_run_sends_nothing_new(
    engine: Engine, settings_env: dict[str, str], tmp_path: Path
) -> None:
    from digest.cli import app

    good, _bad = audience_with_bad_rows(engine)
    build_issue(engine)
    get_settings.cache_clear()
    runner = CliRunner()

    first = runner.invoke(app, ["send", "--week", str(WEEK)])
    second = runner.invoke(app, ["send", "--week", str(WEEK)])
    deliveries_shown = runner.invoke(app, ["deliveries", "--week", str(WEEK)])

    assert first.exit_code == 0, first.output
    assert "sent 7," in first.output and "2 readers refused" in first.output
    assert second.exit_code == 0, second.output
    assert "already sent" in second.output
    folder = Path(settings_env["DIGEST_OUTBOX_DIR"])
    assert mails_per_address(folder) == Counter(dict.fromkeys(good, 1))
    assert ledger(engine) == {"sent": 7, "refused": 2}
    assert deliveries_shown.exit_code == 0, deliveries_shown.output
    counts = issue_deliveries(engine, WEEK)
    assert counts is not None and (counts.sent, counts.refused, counts.failed) == (7, 2, 0)


def test_a_test_copy_to_an_address_the_transport_refuses_says_so(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    build_issue(engine)

    with pytest.raises(SendError, match="refused"):
        send_test(engine, settings, OutboxTransport(tmp_path / "outbox", clock=utcnow), WEEK, BAD)


def test_the_outbox_dry_run_sizes_a_batch_holding_an_address_it_cannot_write(
    tmp_path: Path,
) -> None:
    from tests.test_outbox import _message, _recipient

    good = _recipient(1)
    outbox = OutboxTransport(tmp_path, clock=utcnow)

    with_bad = outbox.payload_size(_message([good, replace(good, email=BAD)]))

    # Only what would be written counts (Date and Message-ID vary by a few bytes).
    assert abs(with_bad - outbox.payload_size(_message([good]))) < 10


# --------------------------------------------------------------------------- SendGrid


def _payload_addresses(server: SendGridTestServer) -> list[str]:
    return [
        person["email"]
        for payload in server.payloads()
        for item in payload["personalizations"]
        for person in item["to"]
    ]


def test_sendgrid_never_gets_an_address_it_would_drop_and_the_reader_is_recorded_refused(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    good, bad = audience_with_bad_rows(engine)
    build_issue(engine)

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.refused) == ("sent", 7, 2)
    assert sendgrid.deliveries() == dict.fromkeys(good, 1)
    assert BAD not in _payload_addresses(sendgrid)
    assert not any(not a.split("@")[0].isascii() for a in _payload_addresses(sendgrid))
    rows = ledger_rows(engine, bad)
    assert {s for s, _ in rows.values()} == {"refused"}
    assert all("SendGrid" in (e or "") and "non-ASCII" in (e or "") for _, e in rows.values())
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "sent"


def test_sendgrid_makes_no_request_for_a_batch_of_refused_readers_only(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 3, prefix="a")
    for i in range(3):
        store_reader_the_door_would_refuse(engine, f"ünï{i}@example.com")
    build_issue(engine)

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.refused) == ("sent", 3, 3)
    assert sendgrid.stats()["requests"] == 1
    assert ledger(engine) == {"sent": 3, "refused": 3}


def test_a_crash_after_sendgrid_refused_a_whole_batch_records_it_refused_not_uncertain(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    for i in range(3):
        store_reader_the_door_would_refuse(engine, f"ünï{i}@example.com")
    seed_subscribers(engine, 3, prefix="a")
    build_issue(engine)
    # The first batch (all refused) "goes out" without a request; the run dies before the
    # ledger hears. SendGrid's activity feed knows nothing of that batch: only re-deriving the
    # refusal records it right (else the skip policy would write the readers off as uncertain).
    crashing = CrashAfterSend(sendgrid_transport(sendgrid), batch=1)
    with pytest.raises(Crash):
        send_issue(engine, settings, crashing, WEEK, now=NOW)  # type: ignore[arg-type]
    sendgrid.fail_next({"kind": "status", "status": 403, "target": "messages"})

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (summary.status, summary.refused, summary.uncertain) == ("sent", 3, 0)
    assert ledger(engine) == {"sent": 3, "refused": 3}
    assert len(sendgrid.deliveries()) == 3


def test_sendgrid_refuses_a_reader_whose_part_of_the_payload_cannot_be_built(
    engine: Engine,
    settings: Settings,
    sendgrid: SendGridTestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from digest.delivery import sendgrid as sendgrid_module

    good = set(seed_subscribers(engine, 4))
    odd = store_reader_the_door_would_refuse(engine, "ulla@xn--invalid-.example")
    build_issue(engine)
    address = sendgrid_module._address

    def strict(email: str, name: str | None) -> dict[str, str]:
        # Stands in for an address rule of the payload (e.g. an IDN domain that will not
        # convert to punycode), which raises ValueError for that one recipient.
        if email == "ulla@xn--invalid-.example":
            raise ValueError("cannot send to this address: the domain is not valid")
        return address(email, name)

    monkeypatch.setattr(sendgrid_module, "_address", strict)

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.refused) == ("sent", 4, 1)
    assert len(sendgrid.deliveries()) == len(good) == 4
    assert ledger_rows(engine, [odd]) == {
        odd: (
            "refused",
            "SendGrid cannot take this recipient: cannot send to this address: the domain is "
            "not valid; correct or remove the address (sending again would refuse it again)",
        )
    }


def test_sendgrid_fails_the_issue_when_nobodys_part_of_the_payload_can_be_built(
    engine: Engine,
    settings: Settings,
    sendgrid: SendGridTestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from digest.delivery import sendgrid as sendgrid_module

    seed_subscribers(engine, 4)
    build_issue(engine)

    def broken(email: str, name: str | None) -> dict[str, str]:
        raise ValueError("a bug that fails every recipient alike")

    monkeypatch.setattr(sendgrid_module, "_address", broken)

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert summary.status == "failed" and summary.refused == 0
    assert "not any one address" in (summary.reason or "")
    assert "refused" not in ledger(engine)
    assert sendgrid.stats()["requests"] == 0


def test_sendgrid_transport_refuses_a_non_ascii_local_part_before_building_the_payload(
    sendgrid: SendGridTestServer,
) -> None:
    from tests.test_sendgrid import _message as sg_message

    message = sg_message(3)
    recipients = list(message.recipients)
    recipients[1] = replace(recipients[1], email=BAD)

    result = SendGridTransport(sendgrid.api_key, host=sendgrid.url, timeout=2).send(
        replace(message, recipients=recipients)
    )

    assert set(result.refused) == {BAD}
    assert "non-ASCII" in result.refused[BAD]
    assert sendgrid.deliveries() == {"reader0@example.org": 1, "reader2@example.org": 1}
