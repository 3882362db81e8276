"""The delivery log for editors (`digest deliveries`) and `digest send --retry-failed`.

Deliveries fail for real here: the SendGrid transport talks HTTP to the local test server,
which refuses a batch when told to, on both database backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from digest.config import Settings, get_settings
from digest.delivery.runner import retry_failed, send_issue
from digest.store.db import deliveries, subscribers, utcnow
from digest.store.deliveries import issue_deliveries, reader_log
from digest.store.events import handle_events
from digest.store.issues import claim_send, get_issue
from digest.store.subscribers import get_subscriber, mark_status, unsubscribe_subscriber
from tests.sendgrid_server import SendGridTestServer
from tests.sending import (
    NOW,
    WEEK,
    FakeSleep,
    build_issue,
    ledger,
    seed_subscribers,
    sendgrid_transport,
)

runner = CliRunner()
REFUSED = {"kind": "status", "status": 400, "field": "content", "message": "rejected"}


def digest(*args: str):  # type: ignore[no-untyped-def]
    from digest.cli import app

    return runner.invoke(app, list(args))


@pytest.fixture
def sendgrid() -> Iterator[SendGridTestServer]:
    with SendGridTestServer() as server:
        yield server


@pytest.fixture
def settings(settings_env, sendgrid, monkeypatch) -> Settings:  # type: ignore[no-untyped-def]
    env = {
        "DIGEST_TRANSPORT": "sendgrid",
        "SENDGRID_API_KEY": sendgrid.api_key,
        "DIGEST_SENDGRID_HOST": sendgrid.url,
        "DIGEST_SENDGRID_TIMEOUT": "2",
        "DIGEST_BATCH_SIZE": "2",
        "DIGEST_MAX_RETRIES": "2",
        "DIGEST_RETRY_BASE_DELAY": "0.01",
        "DIGEST_RETRY_MAX_DELAY": "0.02",
        # The faults below are scripted by the order requests arrive in: one batch at a time.
        "DIGEST_BATCHES_IN_FLIGHT": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def half_failed(engine, settings, sendgrid) -> list[int]:  # type: ignore[no-untyped-def]
    """Six readers, batches of two; reader 1 paused; the third batch (readers 4, 5) refused."""
    ids = seed_subscribers(engine, 6)
    with engine.begin() as conn:
        conn.execute(
            update(subscribers)
            .where(subscribers.c.id == ids[1])
            .values(paused_until=NOW + timedelta(weeks=2))
        )
    build_issue(engine)
    sendgrid.fail_next({"kind": "ok"}, {"kind": "ok"}, REFUSED)
    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)
    assert summary.status == "failed"
    assert ledger(engine) == {"sent": 3, "skipped": 1, "failed": 2}
    return ids


def statuses(engine) -> dict[int, tuple[str, int]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.subscriber_id, deliveries.c.status, deliveries.c.attempts)
        ).all()
    return {sid: (status, attempts) for sid, status, attempts in rows}


# --------------------------------------------------------------------------- retry-failed


def test_retry_failed_sends_only_to_readers_whose_delivery_failed(
    engine, settings, sendgrid, half_failed
):
    ids = half_failed
    before = statuses(engine)
    sendgrid.state.reset()

    summary = retry_failed(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.skipped, summary.failed) == ("sent", 2, 0, 0)
    assert sendgrid.deliveries() == {"reader4@example.org": 1, "reader5@example.org": 1}
    after = statuses(engine)
    assert {sid: after[sid] for sid in ids[4:]} == {ids[4]: ("sent", 2), ids[5]: ("sent", 2)}
    assert {sid: after[sid] for sid in ids[:4]} == {sid: before[sid] for sid in ids[:4]}
    # A retry is about rows: the failed issue stays failed until `digest send` finishes it.
    assert get_issue(engine, WEEK).status == "failed"
    assert "the issue stays failed" in (summary.reason or "")
    assert retry_failed(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW).sent == 0


def test_retry_failed_rechecks_each_reader_before_sending_again(
    engine, settings, sendgrid, half_failed
):
    ids = half_failed
    unsubscribe_subscriber(engine, ids[4], now=NOW)
    sendgrid.state.reset()
    summary = retry_failed(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)
    assert (summary.sent, summary.skipped) == (1, 1)
    assert sendgrid.deliveries() == {"reader5@example.org": 1}
    assert statuses(engine)[ids[4]][0] == "skipped"


def test_a_retry_the_provider_refuses_again_leaves_rows_failed_and_the_issue_as_it_was(
    engine, settings, sendgrid, half_failed
):
    sendgrid.fail_next(REFUSED)
    summary = retry_failed(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)
    assert summary.status == "failed" and "rejected" in (summary.reason or "")
    assert ledger(engine) == {"sent": 3, "skipped": 1, "failed": 2}
    issue = get_issue(engine, WEEK)
    assert issue.status == "failed"

    sendgrid.fail_next(*[{"kind": "status", "status": 503}] * 3)
    summary = retry_failed(
        engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW, sleep=FakeSleep()
    )
    assert summary.status == "paused"
    # Not released as a first send would be: the rows stay failed, so the next retry finds them.
    assert ledger(engine) == {"sent": 3, "skipped": 1, "failed": 2}
    assert get_issue(engine, WEEK).status == "failed"


def test_a_sent_issue_stays_sent_when_its_failed_rows_are_retried(engine, settings, sendgrid):
    # The sender itself finishes an issue only without failed rows; the ledger still allows
    # them under a sent issue (a row an operator marked failed by hand, an older version's
    # data), and retrying them must not move a published issue back to sending.
    ids = seed_subscribers(engine, 3)
    build_issue(engine)
    assert (
        send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW).status == "sent"
    )
    sent = get_issue(engine, WEEK)
    with engine.begin() as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.subscriber_id == ids[2])
            .values(status="failed", error="bounced at the relay; resend")
        )
    sendgrid.state.reset()

    summary = retry_failed(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (summary.status, summary.sent) == ("sent", 1)
    assert sendgrid.deliveries() == {"reader2@example.org": 1}
    again = get_issue(engine, WEEK)
    assert (again.status, again.sent_at, again.updated_at) == (
        "sent",
        sent.sent_at,
        sent.updated_at,
    )
    assert ledger(engine) == {"sent": 3}


def test_retry_failed_waits_for_a_send_in_progress(engine, settings, sendgrid, half_failed):
    assert claim_send(engine, WEEK, "another-process", timedelta(minutes=5), now=utcnow())
    summary = retry_failed(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)
    assert summary.status == "busy"
    assert ledger(engine) == {"sent": 3, "skipped": 1, "failed": 2}


# --------------------------------------------------------------------------- the log


def bounce(engine, email: str, event_id: str, week: str | None = str(WEEK)) -> None:  # type: ignore[no-untyped-def]
    event = {
        "event": "bounce",
        "email": email,
        "type": "bounce",
        "reason": "550 no such user",
        "timestamp": int((NOW + timedelta(minutes=10)).timestamp()),
        "sg_event_id": event_id,
    }
    if week is not None:
        event["issue_week"] = week
    handle_events(engine, [event], NOW + timedelta(minutes=11))


def test_issue_deliveries_counts_by_status_and_bounced_readers_once(engine, settings, half_failed):
    ids = half_failed
    bounce(engine, "reader0@example.org", "e1")  # an event for this issue
    bounce(engine, "reader0@example.org", "e2")  # the same reader again: still one
    mark_status(engine, ids[2], "bounced", NOW + timedelta(hours=1))  # bounced since, no event
    counts = issue_deliveries(engine, WEEK)
    assert (counts.sent, counts.failed, counts.skipped, counts.claimed) == (3, 2, 1, 0)
    assert counts.bounced == 2
    assert counts.issue_status == "failed"
    assert issue_deliveries(engine, WEEK + 5) is None


def test_digest_deliveries_week_prints_the_counts(engine, settings, half_failed):
    bounce(engine, "reader0@example.org", "e1")
    result = digest("deliveries", "--week", str(WEEK))
    assert result.exit_code == 0, result.output
    assert result.output == (
        "2026-W10: issue failed\n"
        "sent                3\n"
        "failed              2\n"
        "skipped             1\n"
        "bounced             1\n"
        "not sent:\n"
        "  reader4@example.org  failed  (SendGrid refused the request (400): content: rejected)\n"
        "  reader5@example.org  failed  (SendGrid refused the request (400): content: rejected)\n"
    )
    missing = digest("deliveries", "--week", "2030-W01")
    assert missing.exit_code == 1
    assert "there is no issue for 2030-W01" in missing.output
    assert digest("deliveries", "--week", "W1").exit_code == 1


def test_digest_deliveries_email_shows_what_a_reader_received_and_when(
    engine, settings, half_failed
):
    bounce(engine, "reader0@example.org", "e1")
    bounce(engine, "reader0@example.org", "e9", week=None)
    history = reader_log(engine, "reader0@example.org")
    (delivery,) = history.deliveries
    assert (delivery.week, delivery.status, delivery.sent_at) == (WEEK, "sent", NOW)
    assert delivery.message_id and [e.kind for e in delivery.events] == ["bounce"]
    assert len(history.events) == 2

    result = digest("deliveries", "Reader0@Example.org")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "reader0@example.org: bounced",
        f"2026-W10  sent     2026-03-02 09:00 UTC  id {delivery.message_id}  "
        "events: bounce 2026-03-02 09:10",
        # the event the provider did not tie to an issue
        "event: bounce 2026-03-02 09:10 (type=bounce; reason=550 no such user)",
    ]
    loose = [e for e in history.events if e.week is None]
    assert len(loose) == 1

    paused = digest("deliveries", "reader1@example.org", "--week", str(WEEK))
    assert "skipped" in paused.output and "paused until" in paused.output
    assert (
        "no deliveries for 2026-W11"
        in digest("deliveries", "reader1@example.org", "--week", "2026-W11").output
    )
    nobody = digest("deliveries", "nobody@example.org")
    assert nobody.exit_code == 1
    assert "no subscriber 'nobody@example.org'" in nobody.output


def test_digest_send_retry_failed(engine, settings, sendgrid, half_failed):
    sendgrid.state.reset()
    result = digest("send", "--week", str(WEEK), "--retry-failed")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "2026-W10: retried failed deliveries: sent 2, skipped 0, failed 0; 5 sent in all "
        "(the issue stays failed)\n"
    )
    assert sendgrid.deliveries() == {"reader4@example.org": 1, "reader5@example.org": 1}
    # Then a normal send finishes the issue: nobody is sent a second copy.
    finish = digest("send", "--week", str(WEEK))
    assert finish.exit_code == 0, finish.output
    assert get_issue(engine, WEEK).status == "sent"
    assert set(sendgrid.deliveries().values()) == {1}
    assert get_subscriber(engine, "reader1@example.org").paused_until is not None

    refused = digest("send", "--week", str(WEEK), "--retry-failed", "--dry-run")
    assert refused.exit_code == 1
    assert "--retry-failed goes alone" in refused.output


def test_digest_send_retry_failed_exits_1_when_refused_again(
    engine, settings, sendgrid, half_failed
):
    sendgrid.fail_next(REFUSED)
    result = digest("send", "--week", str(WEEK), "--retry-failed")
    assert result.exit_code == 1
    assert "failed 2" in result.output
