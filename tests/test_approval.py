"""Approval before sending: an editor approves or holds an issue, an unapproved one is held (not
sent, not failed) at its send time and goes once approved, `digest send` refuses it and an
early week, test sends are recorded, and the approval tick builds ahead and tells the editors
once. On SQLite and PostgreSQL, with mail in the real outbox.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from digest import scheduler
from digest.campaign.approval import (
    ApprovalError,
    EarlySend,
    NeedsApproval,
    after_approval,
    approve,
    hold,
    send_test_copy,
)
from digest.campaign.lifecycle import approval_tick, local_time_tick, run_weekly, send, send_week
from digest.config import Settings, get_settings
from digest.delivery import make_transport
from digest.delivery.personalise import SendError
from digest.model.weeks import IsoWeek, current_week
from digest.store import db
from digest.store.audit import recent
from digest.store.issues import get_issue, transition
from tests.sending import NOW, WEEK, build_issue, ledger, mails_per_address, seed_subscribers

runner = CliRunner()
EDITOR = "cli:alice"


def digest(*args: str):  # type: ignore[no-untyped-def]
    from digest.cli import app

    return runner.invoke(app, list(args))


@pytest.fixture
def required(settings: Settings) -> Settings:
    """Approval required; the schedule is Monday 09:00 UTC (WEEK's fire is NOW)."""
    return settings.model_copy(update={"require_approval": True})


def outbox(settings: Settings) -> dict[str, int]:
    return dict(mails_per_address(Path(settings.outbox_dir)))


def actions(engine, week: IsoWeek = WEEK) -> list[tuple[str, str, str | None]]:  # type: ignore[no-untyped-def]
    """The week's audit entries, oldest first: (actor, action, detail)."""
    entries = recent(engine, limit=50, target=str(week))
    return [(e.actor, e.action, e.detail) for e in reversed(entries)]


def events(caplog) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.getMessage() for r in caplog.records]


def add_editor(engine, email: str, name: str | None = "Editor") -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(
            insert(db.editors).values(
                email=email,
                name=name,
                role="editor",
                password_hash="$argon2id$not-a-real-hash",
                created_at=NOW,
                updated_at=NOW,
            )
        )


# --------------------------------------------------------------------------- approve and hold


def test_approving_a_built_issue_records_who_and_when(engine, required):
    build_issue(engine)
    issue = approve(engine, required, WEEK, actor=EDITOR, now=NOW)
    assert (issue.status, issue.approved_at, issue.approved_by) == ("built", NOW, EDITOR)
    assert get_issue(engine, WEEK) == issue
    assert actions(engine) == [(EDITOR, "issue.approve", None)]


def test_holding_withdraws_the_approval_and_keeps_the_reason_and_who(engine, required):
    build_issue(engine)
    approve(engine, required, WEEK, actor=EDITOR, now=NOW)
    issue = hold(engine, required, WEEK, actor="cli:bob", now=NOW, reason="  wrong   picture ")
    assert issue.status == "held" and not issue.approved and issue.approved_by is None
    assert issue.status_reason == "wrong picture (held by cli:bob)"
    assert actions(engine)[-1] == ("cli:bob", "issue.hold", "wrong picture")


def test_approving_a_held_issue_moves_it_back_to_built(engine, required):
    build_issue(engine)
    hold(engine, required, WEEK, actor=EDITOR, now=NOW)
    issue = approve(engine, required, WEEK, actor="cli:bob", now=NOW + timedelta(minutes=5))
    assert (issue.status, issue.status_reason) == ("built", None)
    assert (issue.approved_by, issue.approved_at) == ("cli:bob", NOW + timedelta(minutes=5))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (None, "there is no issue for 2026-W10; build it first: `digest build --week 2026-W10`"),
        (("sending",), "issue 2026-W10 is sending: its send has started, so it cannot be"),
        (("sending", "paused"), "issue 2026-W10 is paused: its send has started"),
        (("sending", "sent"), "issue 2026-W10 is sent: its send has started"),
        (("failed",), "issue 2026-W10 is failed (oops); rebuild it first"),
    ],
)
@pytest.mark.parametrize("action", ["approve", "hold"])
def test_only_a_built_or_held_issue_can_be_approved_or_held(
    engine, required, path, message, action
):
    if path is not None:
        build_issue(engine)
        for status in path:
            transition(engine, WEEK, status, "oops" if status == "failed" else None, now=NOW)
    before = get_issue(engine, WEEK)
    act = approve if action == "approve" else hold
    with pytest.raises(ApprovalError) as refused:
        act(engine, required, WEEK, actor=EDITOR, now=NOW + timedelta(hours=1))
    assert str(refused.value).startswith(message)
    assert get_issue(engine, WEEK) == before  # nothing changed
    assert actions(engine) == []


def test_an_issue_without_content_is_not_built_yet(engine, required):
    with engine.begin() as conn:
        conn.execute(
            insert(db.issues).values(
                week=str(WEEK),
                featured_slug="attention",
                related_slugs=[],
                pick_source="pin",
                status="planned",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    with pytest.raises(ApprovalError, match="is not built yet; build it first"):
        approve(engine, required, WEEK, actor=EDITOR, now=NOW)


@pytest.mark.parametrize(
    ("reason", "message"), [("one\ntwo", "one line"), ("x" * 301, "at most 300")]
)
def test_a_hold_reason_is_one_short_line(engine, required, reason, message):
    build_issue(engine)
    with pytest.raises(ApprovalError, match=message):
        hold(engine, required, WEEK, actor=EDITOR, now=NOW, reason=reason)
    assert get_issue(engine, WEEK).status == "built"


# --------------------------------------------------------------------------- the send refuses


def test_send_refuses_an_unapproved_issue_before_any_delivery(engine, required):
    seed_subscribers(engine, 3)
    build_issue(engine)
    with pytest.raises(NeedsApproval) as refused:
        send(engine, required, make_transport(required), WEEK, now=NOW)
    assert str(refused.value) == (
        "issue 2026-W10 needs an editor's approval before it is sent: approve it with "
        "`digest issue approve 2026-W10` or in the desk "
        "(https://digest.example.org/admin/issues/2026-W10)"
    )
    assert ledger(engine) == {} and outbox(required) == {}
    assert get_issue(engine, WEEK).status == "built"


def test_a_held_issue_is_refused_even_without_approval_required(engine, settings):
    seed_subscribers(engine, 2)
    build_issue(engine)
    hold(engine, settings, WEEK, actor=EDITOR, now=NOW, reason="typo")
    with pytest.raises(NeedsApproval, match=r"is held \(typo \(held by cli:alice\)\)"):
        send(engine, settings, make_transport(settings), WEEK, now=NOW, force=True)
    assert ledger(engine) == {}


def test_approved_it_sends(engine, required):
    seed_subscribers(engine, 3)
    build_issue(engine)
    approve(engine, required, WEEK, actor=EDITOR, now=NOW)
    summary = send(engine, required, make_transport(required), WEEK, now=NOW)
    assert summary.status == "sent" and summary.sent == 3
    assert len(outbox(required)) == 3


def test_an_approval_withdrawn_just_before_the_move_to_sending_sends_nothing(
    engine, required, monkeypatch
):
    """The check and the move to sending are two statements: a rebuild (or subject edit) that
    withdraws the approval between them must not let the unapproved content out."""
    import digest.campaign.lifecycle as lifecycle
    from digest.store.db import issues as issues_table

    seed_subscribers(engine, 3)
    build_issue(engine)
    approve(engine, required, WEEK, actor=EDITOR, now=NOW)

    def withdrawing_gate(engine_, settings_):  # type: ignore[no-untyped-def]
        def gate(issue, now):  # type: ignore[no-untyped-def]
            with engine.begin() as conn:  # what save_built / save_subject do to the row
                conn.execute(
                    issues_table.update()
                    .where(issues_table.c.week == str(WEEK))
                    .values(approved_at=None, approved_by=None)
                )
            return None

        return gate

    monkeypatch.setattr(lifecycle, "send_gate", withdrawing_gate)
    with pytest.raises(NeedsApproval, match="needs an editor's approval"):
        send(engine, required, make_transport(required), WEEK, now=NOW)
    assert ledger(engine) == {} and outbox(required) == {}
    issue = get_issue(engine, WEEK)
    assert issue.status == "built" and issue.send_started_at is None and issue.claimed_by is None


def test_a_future_weeks_issue_needs_force(engine, settings):
    seed_subscribers(engine, 2)
    build_issue(engine, WEEK + 1)
    with pytest.raises(EarlySend, match=r"this week is 2026-W10 in UTC.*--force"):
        send(engine, settings, make_transport(settings), WEEK + 1, now=NOW)
    assert ledger(engine, WEEK + 1) == {}
    summary = send(engine, settings, make_transport(settings), WEEK + 1, now=NOW, force=True)
    assert summary.status == "sent" and summary.sent == 2


def test_force_never_skips_approval(engine, required):
    build_issue(engine, WEEK + 1)
    with pytest.raises(NeedsApproval):
        send(engine, required, make_transport(required), WEEK + 1, now=NOW, force=True)


def test_resuming_a_paused_send_is_not_refused_when_approval_became_required(engine, settings):
    # It started before approval was required: what was decided then goes on.
    seed_subscribers(engine, 2)
    build_issue(engine)
    transition(engine, WEEK, "sending", now=NOW)
    transition(engine, WEEK, "paused", "429s", now=NOW)
    later = settings.model_copy(update={"require_approval": True})
    assert send_week(later, WEEK).status == "sent"


# --------------------------------------------------------------------------- at the send time


def test_an_unapproved_issue_is_held_at_its_send_time_not_sent_not_failed(engine, required, caplog):
    seed_subscribers(engine, 2)
    build_issue(engine)
    with caplog.at_level(logging.INFO, logger="digest.schedule"):
        result = run_weekly(required, WEEK, now=NOW)
    assert result.status == "held" and result.summary is None
    issue = get_issue(engine, WEEK)
    assert issue.status == "held"
    assert issue.status_reason == (
        "not approved by its send time; approve it with `digest issue approve 2026-W10` or in "
        "the desk (https://digest.example.org/admin/issues/2026-W10)"
    )
    assert ledger(engine) == {} and outbox(required) == {}
    assert "issue_held" in events(caplog)
    assert actions(engine) == [("scheduler", "issue.hold", issue.status_reason)]
    # The job firing again (a restart in the grace window) leaves it held, says so once more.
    assert run_weekly(required, WEEK, now=NOW).status == "held"
    assert len(actions(engine)) == 1


def test_the_weekly_job_holds_an_issue_whose_approval_is_withdrawn_in_the_last_moment(
    engine, required, monkeypatch
):
    """The job checked the approval, then a rebuild withdrew it before the move to sending:
    the job holds the issue, as at any send time, and raises nothing into the scheduler."""
    import digest.campaign.lifecycle as lifecycle
    from digest.store.db import issues as issues_table

    seed_subscribers(engine, 2)
    build_issue(engine)
    approve(engine, required, WEEK, actor=EDITOR, now=NOW)

    def withdrawing_gate(engine_, settings_):  # type: ignore[no-untyped-def]
        def gate(issue, now):  # type: ignore[no-untyped-def]
            with engine.begin() as conn:
                conn.execute(
                    issues_table.update()
                    .where(issues_table.c.week == str(WEEK))
                    .values(approved_at=None, approved_by=None)
                )
            return None

        return gate

    monkeypatch.setattr(lifecycle, "send_gate", withdrawing_gate)
    result = run_weekly(required, WEEK, now=NOW)
    assert result.status == "held" and result.summary is None
    assert get_issue(engine, WEEK).status == "held"
    assert ledger(engine) == {} and outbox(required) == {}


def test_approved_after_its_fire_the_approval_tick_sends_it_within_the_grace_window(
    engine, required
):
    seed_subscribers(engine, 2)
    build_issue(engine)
    run_weekly(required, WEEK, now=NOW)
    approve(engine, required, WEEK, actor=EDITOR, now=NOW + timedelta(hours=1))
    note = after_approval(required, get_issue(engine, WEEK), NOW + timedelta(hours=1))
    assert "a running `digest run` sends it within 15 minutes" in note
    [result] = approval_tick(required, NOW + timedelta(hours=1, minutes=15))
    assert result.status == "sent" and result.summary.sent == 2
    assert len(outbox(required)) == 2


def test_approved_beyond_the_grace_window_only_digest_send_sends_it(engine, required):
    seed_subscribers(engine, 2)
    build_issue(engine)
    run_weekly(required, WEEK, now=NOW)
    later = NOW + timedelta(seconds=required.misfire_grace_time, hours=1)
    approve(engine, required, WEEK, actor=EDITOR, now=later)
    assert after_approval(required, get_issue(engine, WEEK), later) == (
        "its send time (Mon 2026-03-02 09:00 UTC) has passed, so no job sends it; send it "
        "with `digest send --week 2026-W10`"
    )
    assert approval_tick(required, later) == []
    assert get_issue(engine, WEEK).status == "built" and ledger(engine) == {}


def test_an_issue_approved_before_its_fire_goes_at_the_fire(engine, required):
    seed_subscribers(engine, 2)
    build_issue(engine)
    approve(engine, required, WEEK, actor=EDITOR, now=NOW - timedelta(hours=2))
    assert after_approval(required, get_issue(engine, WEEK), NOW - timedelta(hours=2)) == (
        "it goes out at Mon 2026-03-02 09:00 UTC"
    )
    assert run_weekly(required, WEEK, now=NOW).status == "sent"


def test_local_time_ticks_hold_an_unapproved_issue_and_send_it_once_approved(engine, required):
    local = required.model_copy(update={"local_time_delivery": True})
    seed_subscribers(engine, 2)
    build_issue(engine)
    [held] = local_time_tick(local, NOW)
    assert held.status == "held" and ledger(engine) == {}
    assert local_time_tick(local, NOW + timedelta(minutes=15))[0].status == "held"
    assert len(actions(engine)) == 1  # held once, not again at every tick
    approve(engine, local, WEEK, actor=EDITOR, now=NOW + timedelta(minutes=20))
    [sent] = local_time_tick(local, NOW + timedelta(minutes=30))
    assert sent.status == "sent" and len(outbox(local)) == 2


# --------------------------------------------------------------------------- build ahead, notify


def test_the_approval_tick_builds_ahead_and_tells_every_editor_once(engine, required):
    add_editor(engine, "ed@example.org", "Ed")
    add_editor(engine, "flo@example.org", None)
    before = NOW - timedelta(hours=required.approval_lead_hours)
    assert approval_tick(required, before - timedelta(minutes=15)) == []
    assert get_issue(engine, WEEK) is None  # not yet: outside the lead time
    approval_tick(required, before)
    issue = get_issue(engine, WEEK)
    assert issue.status == "built" and issue.built_at == before and not issue.approved
    assert outbox(required) == {"ed@example.org": 1, "flo@example.org": 1}
    assert actions(engine) == [("scheduler", "issue.notify", "ed@example.org, flo@example.org")]
    for minutes in (15, 30):
        approval_tick(required, before + timedelta(minutes=minutes))
    assert outbox(required) == {"ed@example.org": 1, "flo@example.org": 1}  # once per issue
    [mail] = [p for p in Path(required.outbox_dir).glob("*.eml") if "ed@" in p.read_text()]
    text = mail.read_text()
    assert "Subject: Please approve 2026-W10:" in text
    assert "https://digest.example.org/admin/issues/2026-W10" in text
    assert "digest issue approve 2026-W10" in text


def test_with_no_editors_the_tick_logs_that_nobody_was_told(engine, required, caplog):
    with caplog.at_level(logging.WARNING, logger="digest.schedule"):
        approval_tick(required, NOW - timedelta(hours=1))
    assert get_issue(engine, WEEK).status == "built"
    [unsent] = [r for r in caplog.records if r.getMessage() == "approval_notice_unsent"]
    assert "digest editors add" in unsent.__dict__["digest_fields"]["reason"]
    assert actions(engine) == [("scheduler", "issue.notify", "nobody told: there are no editors")]
    assert outbox(required) == {}


def test_the_approval_tick_does_nothing_without_approval_required(engine, settings):
    add_editor(engine, "ed@example.org")
    assert approval_tick(settings, NOW - timedelta(hours=1)) == []
    assert get_issue(engine, WEEK) is None and outbox(settings) == {}


def test_the_scheduler_stores_the_approval_job_only_when_approval_is_required(
    engine, settings_env, monkeypatch
):
    monkeypatch.setenv("DIGEST_REQUIRE_APPROVAL", "true")
    get_settings.cache_clear()
    on = make_and_start(get_settings())
    assert sorted(j.id for j in on) == sorted([scheduler.APPROVAL_JOB_ID, scheduler.JOB_ID])
    [job] = [j for j in on if j.id == scheduler.APPROVAL_JOB_ID]
    assert job.func_ref == scheduler.APPROVAL_JOB
    monkeypatch.setenv("DIGEST_REQUIRE_APPROVAL", "false")
    get_settings.cache_clear()
    assert [j.id for j in make_and_start(get_settings())] == [scheduler.JOB_ID]


def make_and_start(settings: Settings):  # type: ignore[no-untyped-def]
    sched = scheduler.make_scheduler(settings)
    scheduler.start_scheduler(sched, settings)
    try:
        return sched.get_jobs(jobstore="default")
    finally:
        sched.shutdown()


def test_the_stored_approval_job_builds_ahead_and_notifies_once(engine, settings_env, monkeypatch):
    monkeypatch.setenv("DIGEST_REQUIRE_APPROVAL", "true")
    get_settings.cache_clear()
    add_editor(engine, "ed@example.org")
    clock = [NOW - timedelta(hours=3)]
    monkeypatch.setattr(db, "utcnow", lambda: clock[0])
    scheduler.approval_job()
    clock[0] += timedelta(minutes=15)
    scheduler.approval_job()
    assert get_issue(engine, WEEK).status == "built"
    assert outbox(get_settings()) == {"ed@example.org": 1}


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli_required(settings_env, monkeypatch) -> Settings:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DIGEST_REQUIRE_APPROVAL", "true")
    get_settings.cache_clear()
    return get_settings()


def this_week() -> IsoWeek:
    return current_week(datetime.now(UTC))


def test_digest_send_refuses_an_unapproved_issue_until_approved(engine, cli_required):
    week = this_week()
    seed_subscribers(engine, 2)
    build_issue(engine, week)
    refused = digest("send", "--week", str(week))
    assert refused.exit_code == 3, refused.output
    assert (
        f"needs an editor's approval before it is sent: approve it with `digest issue approve {week}`"
        in " ".join(refused.output.split())
    )
    assert ledger(engine, week) == {}
    approved = digest("issue", "approve", str(week))
    assert approved.exit_code == 0, approved.output
    assert f"{week}: approved by cli:" in approved.output
    sent = digest("send", "--week", str(week))
    assert sent.exit_code == 0, sent.output
    assert ledger(engine, week) == {"sent": 2}


def test_digest_issue_hold_then_send_is_refused_and_resume_too(engine, cli_required):
    week = this_week()
    build_issue(engine, week)
    held = digest("issue", "hold", str(week), "--reason", "check the link")
    assert held.exit_code == 0, held.output
    assert "held (check the link (held by cli:" in held.output
    assert get_issue(engine, week).status == "held"
    for args in (("send", "--week", str(week)), ("issue", "resume", str(week))):
        result = digest(*args)
        assert result.exit_code == 3, (args, result.output)
        assert "is held" in result.output and "digest issue approve" in result.output


def test_digest_issue_approve_an_unknown_week_exits_1_saying_so(engine, cli_required):
    result = digest("issue", "approve", "2030-W05")
    assert result.exit_code == 1
    assert "there is no issue for 2030-W05; build it first" in result.output


def test_digest_send_a_future_week_needs_force_and_builds_nothing_without_it(engine, settings):
    week = this_week() + 2
    result = digest("send", "--week", str(week))
    assert result.exit_code == 3, result.output
    assert "--force" in result.output and "early" in result.output
    assert get_issue(engine, week) is None


def test_a_test_send_is_recorded(engine, cli_required):
    week = this_week()
    build_issue(engine, week)
    result = digest("send", "--week", str(week), "--to", "me@example.org")
    assert result.exit_code == 0, result.output
    assert "recorded in the audit log" in result.output
    [(actor, action, detail)] = actions(engine, week)
    assert actor.startswith("cli:") and (action, detail) == ("issue.test_send", "me@example.org")
    assert ledger(engine, week) == {}


def test_send_test_copy_records_nothing_when_the_send_is_refused(engine, settings):
    build_issue(engine)
    with pytest.raises(SendError, match="not a valid address"):
        send_test_copy(
            engine, settings, make_transport(settings), WEEK, "nope", actor=EDITOR, now=NOW
        )
    assert actions(engine) == []


def test_digest_status_shows_a_held_issue_as_held(engine, cli_required):
    week = this_week()
    build_issue(engine, week)
    digest("issue", "hold", str(week), "--reason", "later")
    result = digest("status")
    assert result.exit_code == 0, result.output
    assert f"{week} attention — held: later (held by cli:" in " ".join(result.output.split())
    shown = digest("deliveries", "--week", str(week))
    assert f"{week}: issue held" in shown.output
