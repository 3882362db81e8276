"""The send ledger: every eligible subscriber gets the issue once — across retries, faults and kills.

Real parts throughout: a real database (SQLite and PostgreSQL), the outbox on disk, and the
SendGrid transport talking HTTP to the local SendGrid test server.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from digest.config import Settings
from digest.core.tokens import read_token
from digest.delivery.ledger import batch_key
from digest.delivery.outbox import OutboxTransport
from digest.delivery.personalise import SendError, issue_message, subscriber_recipient
from digest.delivery.runner import send_issue
from digest.delivery.samples import plan_send, send_test
from digest.delivery.sendgrid import SendGridTransport
from digest.model.issue import IssueRecord
from digest.store.db import deliveries, subscribers, utcnow
from digest.store.issues import claim_send, get_issue, transition
from tests.sendgrid_server import SendGridTestServer
from tests.sending import (
    NOW,
    WEEK,
    FakeSleep,
    build_issue,
    cli_env,
    lease_runs_out,
    ledger,
    run_send,
    seed_subscribers,
    sendgrid_transport,
    start_send,
    wait_for,
)


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    # One batch at a time: these tests script SendGrid's answers request by request, in the
    # order the batches go out. tests/test_in_flight.py sends with several batches at once.
    return Settings(
        batches_in_flight=1,
        batch_size=1000,
        max_retries=3,
        retry_base_delay=0.5,
        retry_max_delay=30.0,
        sendgrid_timeout=0.5,
        unsubscribe_mailto="unsubscribe@digest.example.org",
    )


@pytest.fixture
def sendgrid() -> Iterator[SendGridTestServer]:
    with SendGridTestServer() as server:
        yield server


# --------------------------------------------------------------------------- the happy path


def test_every_active_subscriber_gets_the_issue_once_in_the_outbox(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    seed_subscribers(engine, 25)
    build_issue(engine)
    outbox = OutboxTransport(tmp_path / "outbox", clock=utcnow)
    seen: list[tuple[int, int]] = []

    summary = send_issue(
        engine,
        settings.model_copy(update={"batch_size": 10}),
        outbox,
        WEEK,
        now=NOW,
        progress=lambda done, total: seen.append((done, total)),
    )

    assert (summary.status, summary.sent, summary.skipped, summary.failed) == ("sent", 25, 0, 0)
    assert (summary.batches, summary.api_calls, summary.total_sent) == (3, 3, 25)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 25
    assert ledger(engine) == {"sent": 25}
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "sent" and issue.sent_at == NOW
    assert issue.claimed_by is None
    assert seen[-1] == (25, 25) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_2500_subscribers_go_out_in_three_requests(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 2500)
    build_issue(engine)
    sendgrid.state.keep_payloads = 5

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.api_calls, summary.batches) == (
        "sent",
        2500,
        3,
        3,
    )
    stats = sendgrid.stats()
    assert (stats["requests"], stats["accepted"], stats["distinct"], stats["duplicates"]) == (
        3,
        3,
        2500,
        0,
    )
    assert [len(p["personalizations"]) for p in sendgrid.payloads()] == [1000, 1000, 500]
    assert stats["max_payload_bytes"] < 20 * 1024 * 1024
    assert ledger(engine) == {"sent": 2500}


def test_each_recipient_gets_own_signed_links_headers_and_custom_args(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    ids = seed_subscribers(engine, 3, name="Ann <& Co>")
    issue = build_issue(engine)

    send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    (payload,) = sendgrid.payloads()
    sent_issue = get_issue(engine, WEEK)
    assert sent_issue is not None
    key = batch_key(sent_issue, 1)
    assert payload["subject"] == "Attention, %%name%%"
    assert [c["type"] for c in payload["content"]] == ["text/plain", "text/html"]
    assert payload["from"] == {"email": settings.sender_email, "name": settings.sender_name}
    assert payload["categories"] == ["digest", f"digest-{WEEK}"]
    assert payload["custom_args"] == {"issue_week": str(WEEK), "batch_key": key}
    for sid, item in zip(ids, payload["personalizations"], strict=True):
        email = f"reader{ids.index(sid)}@example.org"
        assert item["to"] == [{"email": email, "name": "Ann <& Co>"}]
        assert item["custom_args"] == {"subscriber_id": str(sid)}
        subs = item["substitutions"]
        assert subs["%%name%%"] == "Ann <& Co>"
        assert subs["%%name_html%%"] == "Ann &lt;&amp; Co&gt;"
        unsubscribe = subs["%%unsubscribe_url%%"]
        assert unsubscribe.startswith(f"{settings.base_url}/unsubscribe/")
        token = read_token(settings, "unsubscribe", unsubscribe.rsplit("/", 1)[1])
        assert token.subscriber_id == sid and token.matches(email)
        preferences = subs["%%preferences_url%%"]
        token = read_token(settings, "preferences", preferences.rsplit("/", 1)[1])
        assert token.subscriber_id == sid
        assert item["headers"] == {
            "List-Unsubscribe": (
                f"<{unsubscribe}>, <mailto:unsubscribe@digest.example.org?subject=unsubscribe>"
            ),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    assert issue.id == sent_issue.id


def test_list_unsubscribe_has_no_mailto_unless_configured(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 1)
    build_issue(engine)
    plain = settings.model_copy(update={"unsubscribe_mailto": None})

    send_issue(engine, plain, sendgrid_transport(sendgrid), WEEK, now=NOW)

    header = sendgrid.payloads()[0]["personalizations"][0]["headers"]["List-Unsubscribe"]
    assert header.startswith("<https://") and "mailto:" not in header


# --------------------------------------------------------------------------- who gets it


def test_only_active_subscribers_confirmed_before_the_send_began_get_it(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 2, prefix="active")
    seed_subscribers(engine, 1, prefix="pending", status="pending", confirmed_at=None)
    seed_subscribers(engine, 1, prefix="gone", status="unsubscribed")
    seed_subscribers(engine, 1, prefix="bounced", status="bounced")
    seed_subscribers(engine, 1, prefix="late", confirmed_at=NOW + timedelta(minutes=5))
    seed_subscribers(engine, 1, prefix="resting", paused_until=NOW + timedelta(days=14))
    seed_subscribers(engine, 1, prefix="back", paused_until=NOW - timedelta(days=1))
    build_issue(engine)

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert sorted(sendgrid.deliveries()) == [
        "active0@example.org",
        "active1@example.org",
        "back0@example.org",
    ]
    assert (summary.sent, summary.skipped) == (3, 1)
    assert ledger(engine) == {"sent": 3, "skipped": 1}
    with engine.connect() as conn:
        error = conn.execute(
            select(deliveries.c.error).where(deliveries.c.status == "skipped")
        ).scalar_one()
    assert error.startswith("paused until")


def test_subscriber_who_unsubscribes_mid_send_is_not_sent_a_later_batch(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    ids = seed_subscribers(engine, 30)
    build_issue(engine)

    def unsubscribe_the_last(done: int, total: int) -> None:
        with engine.begin() as conn:
            conn.execute(
                update(subscribers).where(subscribers.c.id == ids[-1]).values(status="unsubscribed")
            )

    summary = send_issue(
        engine,
        settings.model_copy(update={"batch_size": 10}),
        sendgrid_transport(sendgrid),
        WEEK,
        now=NOW,
        progress=unsubscribe_the_last,
    )

    assert summary.status == "sent" and summary.sent == 29
    assert "reader29@example.org" not in sendgrid.deliveries()


# --------------------------------------------------------------------------- faults


def test_429_waits_until_the_rate_limit_resets(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    sendgrid.fail_next({"kind": "status", "status": 429, "reset_in": 8})
    sleep = FakeSleep()

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW, sleep=sleep)

    assert summary.status == "sent" and summary.api_calls == 2
    (wait,) = sleep.waits
    assert 6 <= wait <= 9  # X-RateLimit-Reset is whole epoch seconds
    assert set(sendgrid.deliveries().values()) == {1}


def test_5xx_is_retried_with_exponential_backoff_and_full_jitter(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    sendgrid.fail_next(
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 503},
        {"kind": "status", "status": 502},
    )
    sleep = FakeSleep()

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW, sleep=sleep)

    assert summary.status == "sent" and summary.api_calls == 4
    assert len(sleep.waits) == 3
    for attempt, wait in enumerate(sleep.waits):
        assert 0 <= wait <= settings.retry_base_delay * 2**attempt
    assert ledger(engine) == {"sent": 5}
    assert set(sendgrid.deliveries().values()) == {1}


def test_provider_down_past_the_retries_pauses_and_the_next_run_resumes(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 25)
    build_issue(engine)
    small = settings.model_copy(update={"batch_size": 10, "max_retries": 2})
    sendgrid.fail_next({"kind": "ok"}, *[{"kind": "status", "status": 503}] * 3)

    first = send_issue(
        engine, small, sendgrid_transport(sendgrid), WEEK, now=NOW, sleep=FakeSleep()
    )

    assert (first.status, first.sent, first.api_calls) == ("paused", 10, 4)
    assert "SendGrid server error (503)" in (first.reason or "")
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "paused"
    assert "run `digest send` again" in (issue.status_reason or "")
    # The batch that never went out was released, not left claimed.
    assert ledger(engine) == {"sent": 10}

    second = send_issue(engine, small, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (second.status, second.sent, second.total_sent) == ("sent", 15, 25)
    assert len(sendgrid.deliveries()) == 25 and set(sendgrid.deliveries().values()) == {1}


def test_rate_limit_longer_than_the_longest_wait_pauses_instead_of_hanging(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 3)
    build_issue(engine)
    sendgrid.fail_next({"kind": "status", "status": 429, "reset_in": 3600})
    sleep = FakeSleep()

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW, sleep=sleep)

    assert summary.status == "paused" and sleep.waits == []
    assert "rate limit" in (summary.reason or "")


def test_timeout_after_sendgrid_accepted_is_not_sent_again(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    sendgrid.fail_next({"kind": "hang", "seconds": 1.5, "accept": True})

    summary = send_issue(
        engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW, sleep=FakeSleep()
    )

    assert (summary.status, summary.sent, summary.api_calls) == ("sent", 5, 1)
    assert sendgrid.stats()["lookups"] == 1
    assert set(sendgrid.deliveries().values()) == {1}


def test_dropped_connection_after_acceptance_is_not_sent_again(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    sendgrid.fail_next({"kind": "drop", "accept": True})

    summary = send_issue(
        engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW, sleep=FakeSleep()
    )

    assert (summary.status, summary.sent, summary.api_calls) == ("sent", 5, 1)
    assert set(sendgrid.deliveries().values()) == {1}


def test_timeout_before_acceptance_is_retried_once_sendgrid_says_it_has_nothing(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    sendgrid.fail_next({"kind": "hang", "seconds": 1.5, "accept": False})
    # activity_settle=0: the test server's activity feed has no lag to wait out.
    transport = sendgrid_transport(sendgrid, activity_settle=0)

    summary = send_issue(engine, settings, transport, WEEK, now=NOW, sleep=FakeSleep())

    assert (summary.status, summary.sent, summary.api_calls) == ("sent", 5, 2)
    assert set(sendgrid.deliveries().values()) == {1}


def test_timeout_sendgrid_cannot_explain_is_not_resent_by_default(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    sendgrid.fail_next(
        {"kind": "hang", "seconds": 1.5, "accept": False},
        {"kind": "status", "status": 403, "target": "messages", "message": "access forbidden"},
    )

    summary = send_issue(
        engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW, sleep=FakeSleep()
    )

    assert (summary.status, summary.sent, summary.uncertain, summary.api_calls) == ("sent", 0, 5, 1)
    assert sendgrid.deliveries() == {}
    assert ledger(engine) == {"skipped": 5}
    with engine.connect() as conn:
        errors = set(conn.execute(select(deliveries.c.error)).scalars())
    assert len(errors) == 1 and errors.pop().startswith("uncertain:")


def test_timeout_sendgrid_cannot_explain_is_resent_when_policy_says_resend(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    sendgrid.fail_next(
        {"kind": "hang", "seconds": 1.5, "accept": False},
        {"kind": "status", "status": 403, "target": "messages"},
    )
    resend = settings.model_copy(update={"ambiguous_batches": "resend"})

    summary = send_issue(
        engine, resend, sendgrid_transport(sendgrid), WEEK, now=NOW, sleep=FakeSleep()
    )

    assert (summary.status, summary.sent, summary.api_calls) == ("sent", 5, 2)
    assert set(sendgrid.deliveries().values()) == {1}


def test_bad_api_key_fails_the_issue_at_once_and_a_fixed_key_resumes(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 25)
    build_issue(engine)
    small = settings.model_copy(update={"batch_size": 10})
    wrong = SendGridTransport("SG.wrong-key.0123456789abcdef", host=sendgrid.url, timeout=0.5)
    sleep = FakeSleep()

    failed = send_issue(engine, small, wrong, WEEK, now=NOW, sleep=sleep)

    assert (failed.status, failed.api_calls, failed.failed, sleep.waits) == ("failed", 1, 10, [])
    assert "401" in (failed.reason or "") and "authorization grant is invalid" in failed.reason
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "failed"
    assert "SG.wrong-key" not in (issue.status_reason or "")
    assert ledger(engine) == {"failed": 10}

    resumed = send_issue(engine, small, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (resumed.status, resumed.sent, resumed.total_sent) == ("sent", 25, 25)
    assert ledger(engine) == {"sent": 25}
    assert set(sendgrid.deliveries().values()) == {1}


def test_rejected_payload_stops_at_once_with_sendgrids_words(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    sendgrid.fail_next(
        {"kind": "status", "status": 400, "field": "from.email", "message": "does not match"}
    )

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert summary.status == "failed" and summary.api_calls == 1
    assert "(400): from.email: does not match" in (summary.reason or "")
    with engine.connect() as conn:
        errors = set(conn.execute(select(deliveries.c.error)).scalars())
    assert errors == {summary.reason}


# --------------------------------------------------------------------------- resuming


def _claim_batch_as_a_crashed_run(engine: Engine, ids: list[int], batch: int = 1) -> IssueRecord:
    """Leave the ledger as a run killed between the provider and the ledger leaves it."""
    issue = transition(engine, WEEK, "sending", now=NOW)
    with engine.begin() as conn:
        conn.execute(
            insert(deliveries),
            [
                {
                    "issue_id": issue.id,
                    "subscriber_id": sid,
                    "batch": batch,
                    "status": "claimed",
                    "attempts": 0,
                    "claimed_at": NOW,
                }
                for sid in ids
            ],
        )
    return issue


def test_claimed_batch_the_provider_accepted_is_recorded_not_resent(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    ids = seed_subscribers(engine, 15)
    build_issue(engine)
    issue = _claim_batch_as_a_crashed_run(engine, ids[:10])
    outbox = OutboxTransport(tmp_path / "outbox", clock=utcnow)
    # What the crashed run had handed over before it died:
    crashed = [
        subscriber_recipient(settings, sid, f"reader{i}@example.org", "Reader")
        for i, sid in enumerate(ids[:10])
    ]
    outbox.send(issue_message(settings, issue, crashed, batch_key(issue, 1)))

    summary = send_issue(engine, settings, outbox, WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.api_calls) == ("sent", 15, 1)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 15
    assert ledger(engine) == {"sent": 15}


def test_claimed_batch_the_provider_never_saw_is_sent_on_resume(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    ids = seed_subscribers(engine, 15)
    build_issue(engine)
    _claim_batch_as_a_crashed_run(engine, ids[:10])
    with engine.begin() as conn:  # one of them unsubscribed while the send was down
        conn.execute(
            update(subscribers).where(subscribers.c.id == ids[3]).values(status="unsubscribed")
        )

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.skipped) == ("sent", 14, 1)
    assert sendgrid.stats()["lookups"] == 1
    assert len(sendgrid.deliveries()) == 14 and set(sendgrid.deliveries().values()) == {1}
    assert "reader3@example.org" not in sendgrid.deliveries()


def test_claimed_batch_nobody_can_explain_follows_the_ambiguity_policy(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    ids = seed_subscribers(engine, 15)
    build_issue(engine)
    _claim_batch_as_a_crashed_run(engine, ids[:10])
    sendgrid.fail_next({"kind": "status", "status": 403, "target": "messages"})

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (summary.status, summary.sent, summary.uncertain) == ("sent", 5, 10)
    assert len(sendgrid.deliveries()) == 5


def test_another_live_sender_makes_this_run_return_busy_without_sending(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    assert claim_send(engine, WEEK, "other-host:1", timedelta(minutes=5), now=utcnow())

    summary = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert summary.status == "busy" and summary.api_calls == 0
    assert sendgrid.stats()["requests"] == 0
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "built" and issue.claimed_by == "other-host:1"


def test_stop_request_pauses_between_batches_and_the_next_run_finishes(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    import threading

    seed_subscribers(engine, 30)
    build_issue(engine)
    small = settings.model_copy(update={"batch_size": 10})
    stop = threading.Event()

    def stop_after_first_batch(done: int, total: int) -> None:
        if done >= 10:
            stop.set()

    first = send_issue(
        engine, small, sendgrid_transport(sendgrid), WEEK, now=NOW, stop=stop,
        progress=stop_after_first_batch,
    )  # fmt: skip
    second = send_issue(engine, small, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (first.status, first.sent) == ("paused", 10)
    assert (second.status, second.sent, second.total_sent) == ("sent", 20, 30)
    assert len(sendgrid.deliveries()) == 30 and set(sendgrid.deliveries().values()) == {1}


def test_sent_issue_is_not_sent_again(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 3)
    build_issue(engine)
    send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    again = send_issue(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (again.status, again.sent, again.api_calls, again.total_sent) == ("sent", 0, 0, 3)
    assert sendgrid.stats()["requests"] == 1


def test_an_issue_that_is_not_built_cannot_be_sent(engine: Engine, settings: Settings) -> None:
    with pytest.raises(SendError, match="no issue for 2026-W10"):
        send_issue(engine, settings, OutboxTransport("unused", clock=utcnow), WEEK, now=NOW)


def test_a_subscriber_list_with_nobody_on_it_still_completes_the_issue(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    build_issue(engine)

    summary = send_issue(engine, settings, OutboxTransport(tmp_path, clock=utcnow), WEEK, now=NOW)

    assert (summary.status, summary.sent) == ("sent", 0)


# --------------------------------------------------------------------------- dry run, test send


def test_dry_run_counts_and_sizes_without_sending_or_claiming(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 1500)
    seed_subscribers(engine, 2, prefix="resting", paused_until=NOW + timedelta(days=3))
    build_issue(engine)

    plan = plan_send(engine, settings, sendgrid_transport(sendgrid), WEEK, now=NOW)

    assert (plan.recipients, plan.batches, plan.batch_size, plan.already_done) == (1500, 2, 1000, 0)
    assert 300_000 < plan.first_batch_bytes < 2_000_000
    assert sendgrid.stats()["requests"] == 0 and ledger(engine) == {}
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "built"


def test_test_send_goes_to_one_address_with_test_subject_and_no_ledger_row(
    engine: Engine, settings: Settings, sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 3)
    build_issue(engine)

    result = send_test(engine, settings, sendgrid_transport(sendgrid), WEEK, "Editor@Example.org")

    (payload,) = sendgrid.payloads()
    assert result.message_id
    assert payload["subject"] == "[TEST] Attention, %%name%%"
    assert payload["personalizations"][0]["to"] == [{"email": "Editor@example.org"}]
    assert ledger(engine) == {}
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "built"


def test_test_send_refuses_a_malformed_address(engine: Engine, settings: Settings) -> None:
    build_issue(engine)
    with pytest.raises(SendError, match="not a valid address"):
        send_test(engine, settings, OutboxTransport("unused", clock=utcnow), WEEK, "not-an-address")


# --------------------------------------------------------------------------- crash and resume


@pytest.mark.slow
def test_send_killed_after_sendgrid_accepted_a_batch_resumes_without_duplicates(
    engine: Engine, settings_env: dict[str, str], sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 450)
    build_issue(engine)
    sendgrid.fail_next(*[{"kind": "ok"}] * 2, {"kind": "hang", "seconds": 60, "accept": True})
    # One batch at a time, so the third request is batch 3 and the ledger's state is known.
    env = cli_env(settings_env, sendgrid, DIGEST_BATCHES_IN_FLIGHT="1")

    proc = start_send(env)
    wait_for(lambda: sendgrid.stats()["accepted"] >= 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert ledger(engine) == {"sent": 200, "claimed": 100}
    lease_runs_out(engine)

    done = run_send(env, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    deliveries_seen = sendgrid.deliveries()
    assert len(deliveries_seen) == 450
    assert set(deliveries_seen.values()) == {1}
    assert ledger(engine) == {"sent": 450}
    assert sendgrid.stats()["lookups"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("after_accepted", [1, 4])
def test_send_killed_at_any_point_resumes_every_subscriber_exactly_once(
    engine: Engine,
    settings_env: dict[str, str],
    sendgrid: SendGridTestServer,
    after_accepted: int,
) -> None:
    seed_subscribers(engine, 1000)
    build_issue(engine)
    sendgrid.state.delay = 0.05  # a slow provider widens the window a kill can land in
    env = cli_env(settings_env, sendgrid)

    proc = start_send(env)
    wait_for(lambda: sendgrid.stats()["requests"] >= after_accepted)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    lease_runs_out(engine)
    sendgrid.state.delay = 0.0

    done = run_send(env, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    deliveries_seen = sendgrid.deliveries()
    assert len(deliveries_seen) == 1000
    assert set(deliveries_seen.values()) == {1}
    assert ledger(engine) == {"sent": 1000}


# --------------------------------------------------------------------------- digest send


def _cli(settings_env: dict[str, str], sendgrid: SendGridTestServer, *args: str) -> Any:
    from typer.testing import CliRunner

    from digest.cli import app

    env = {
        "DIGEST_TRANSPORT": "sendgrid",
        "SENDGRID_API_KEY": sendgrid.api_key,
        "DIGEST_SENDGRID_HOST": sendgrid.url,
        "DIGEST_SENDGRID_TIMEOUT": "0.5",
        "DIGEST_RETRY_BASE_DELAY": "0",
        "DIGEST_RETRY_MAX_DELAY": "0",
        "DIGEST_MAX_RETRIES": "1",
    }
    return CliRunner().invoke(app, ["send", *args], env=env)


def test_cli_send_reports_the_summary_and_exits_0(
    engine: Engine, settings_env: dict[str, str], sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 12)
    build_issue(engine)

    result = _cli(settings_env, sendgrid, "--week", str(WEEK))

    assert result.exit_code == 0, result.output
    assert "sent 12, skipped 0, failed 0" in result.output
    assert "(1 batch, 1 request); 12 sent in all" in result.output
    assert len(sendgrid.deliveries()) == 12


def test_cli_send_exits_2_when_paused_and_1_when_refused(
    engine: Engine, settings_env: dict[str, str], sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 3)
    build_issue(engine)
    sendgrid.fail_next(*[{"kind": "status", "status": 503}] * 2)

    paused = _cli(settings_env, sendgrid, "--week", str(WEEK))
    sendgrid.fail_next({"kind": "status", "status": 403, "message": "access forbidden"})
    refused = _cli(settings_env, sendgrid, "--week", str(WEEK))

    assert paused.exit_code == 2, paused.output
    assert "paused" in paused.output and "again" in paused.output
    assert refused.exit_code == 1, refused.output
    assert "(403): access forbidden" in refused.output


def test_cli_dry_run_prints_the_count_and_first_request_size(
    engine: Engine, settings_env: dict[str, str], sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 1200)
    build_issue(engine)

    result = _cli(settings_env, sendgrid, "--week", str(WEEK), "--dry-run")

    assert result.exit_code == 0, result.output
    assert "1,200 subscribers would get this issue via sendgrid" in result.output
    assert "in 2 batches of up to 1,000; first request" in result.output
    assert sendgrid.stats()["requests"] == 0


def test_cli_to_sends_one_test_copy(
    engine: Engine, settings_env: dict[str, str], sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 3)
    build_issue(engine)

    result = _cli(settings_env, sendgrid, "--week", str(WEEK), "--to", "editor@example.org")

    assert result.exit_code == 0, result.output
    assert "test copy sent to editor@example.org" in result.output
    assert sendgrid.deliveries() == {"editor@example.org": 1}
    assert ledger(engine) == {}


def test_cli_send_builds_the_issue_first_when_there_is_none(
    engine: Engine, settings_env: dict[str, str], sendgrid: SendGridTestServer
) -> None:
    seed_subscribers(engine, 2)

    result = _cli(settings_env, sendgrid, "--week", str(WEEK))

    assert result.exit_code == 0, result.output
    assert f"{WEEK}: built" in result.output
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "sent"
    assert len(sendgrid.deliveries()) == 2
