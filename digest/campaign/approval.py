"""Approval before sending (DIGEST_REQUIRE_APPROVAL): editors approve or hold an issue, the send
refuses what is unapproved or early, and the editors are told when an issue waits for them.

The rules are here once; `campaign.lifecycle` applies them at every send, scheduled or not, and
every editor action is written to the audit log.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Engine

from digest.config import Settings
from digest.core.cadence import TICK_MINUTES, due_week, week_fire
from digest.core.editor_mails import approval_notice
from digest.core.headers import HeaderError
from digest.core.urls import Urls
from digest.delivery import send_one_off
from digest.delivery.samples import send_test
from digest.delivery.transport import SendResult, Transport, TransportError
from digest.logs import get_logger, log_event
from digest.model.issue import IssueRecord
from digest.model.weeks import IsoWeek, current_week
from digest.store.audit import recent, record
from digest.store.editors import list_editors
from digest.store.issues import InvalidTransition, approve_issue, get_issue, hold_issue

__all__ = [
    "SCHEDULER",
    "ApprovalError",
    "EarlySend",
    "NeedsApproval",
    "after_approval",
    "approve",
    "check_send",
    "hold",
    "hold_unapproved",
    "needs_approval",
    "notified",
    "notify_editors",
    "send_test_copy",
]

# The audit log's actor for what the scheduler does by itself (a send-time hold, a notice).
SCHEDULER = "scheduler"
_REASON_MAX = 300

_log = get_logger("digest.schedule")  # the job's events, under the name operators filter on


class ApprovalError(ValueError):
    """An approval, hold or send refused; the message is what the editor sees."""


class NeedsApproval(ApprovalError):
    """The issue may not be sent before an editor approves it; the message says how."""


class EarlySend(ApprovalError):
    """The issue is for a week still to come: sending it now needs `force`."""


def needs_approval(settings: Settings, issue: IssueRecord) -> bool:
    """Whether `issue` may not be sent now for want of approval.

    A held issue never goes. Otherwise only with DIGEST_REQUIRE_APPROVAL, and only before its
    send starts: a send under way (or one begun before approval was required) goes on.
    """
    if issue.status == "held":
        return True
    return (
        settings.require_approval
        and not issue.approved
        and issue.send_started_at is None
        and issue.status != "sent"
    )


def check_send(
    settings: Settings, issue: IssueRecord | None, week: IsoWeek, *, now: datetime, force: bool
) -> None:
    """Refuse a send before anything is delivered: NeedsApproval for an issue that needs
    approval (whatever `force` says), EarlySend for a future week's issue unless `force`.

    A send that has started is never early: resuming it finishes what was decided."""
    if issue is not None and needs_approval(settings, issue):
        raise NeedsApproval(_needs_approval_message(settings, issue))
    started = issue is not None and issue.send_started_at is not None
    this_week = current_week(now, settings.zone)
    if not force and not started and week > this_week:
        raise EarlySend(
            f"issue {week} is for a week still to come (this week is {this_week} in "
            f"{settings.timezone}); sending it now would send it early — to do so anyway, "
            f"run `digest send --week {week} --force`"
        )


def approve(
    engine: Engine, settings: Settings, week: IsoWeek, *, actor: str, now: datetime
) -> IssueRecord:
    """Approve `week`'s built or held issue as `actor` (a held one moves back to built), so
    the send may go; audit "issue.approve"."""
    _refuse_unless_approvable(get_issue(engine, week), week, "approved")
    try:
        issue = approve_issue(engine, week, by=actor, now=now)
    except InvalidTransition as exc:  # it moved meanwhile (a send started, another process)
        raise ApprovalError(str(exc)) from None
    record(engine, actor=actor, action="issue.approve", target=str(week), now=now)
    return issue


def hold(
    engine: Engine,
    settings: Settings,
    week: IsoWeek,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> IssueRecord:
    """Hold `week`'s built issue as `actor`: it is not sent, and any approval is withdrawn, until
    an editor approves it again; audit "issue.hold" with the reason."""
    said = " ".join((reason or "").split())
    if reason is not None and any(ch in reason for ch in "\r\n\0"):
        raise ApprovalError("the reason must be one line")
    if len(said) > _REASON_MAX:
        raise ApprovalError(f"the reason is {len(said)} characters; at most {_REASON_MAX}")
    _refuse_unless_approvable(get_issue(engine, week), week, "held")
    stored = f"{said} (held by {actor})" if said else f"held by {actor}"
    try:
        issue = hold_issue(engine, week, stored, now=now)
    except InvalidTransition as exc:
        raise ApprovalError(str(exc)) from None
    record(engine, actor=actor, action="issue.hold", target=str(week), detail=said or None, now=now)
    return issue


def hold_unapproved(
    engine: Engine, settings: Settings, week: IsoWeek, *, now: datetime
) -> IssueRecord | None:
    """At a scheduled send: hold `week`'s issue if it needs approval (not sent, not failed).

    Returns the issue when it must not go (held now, or already), None when it may. The hold is
    conditional on the row still lacking an approval, so an editor approving at that very
    moment wins. Audit "issue.hold" by the scheduler, with the reason stored on the issue.
    """
    issue = get_issue(engine, week)
    if issue is None or not needs_approval(settings, issue):
        return None
    if issue.status == "held":
        return issue
    reason = (
        f"not approved by its send time; approve it with `digest issue approve {week}` or in "
        f"the desk ({Urls.from_settings(settings).desk_issue(week)})"
    )
    try:
        held = hold_issue(engine, week, reason, now=now, unless_approved=True)
    except InvalidTransition:
        current = get_issue(engine, week)  # approved (or held) by someone a moment ago
        return current if current is not None and needs_approval(settings, current) else None
    record(engine, actor=SCHEDULER, action="issue.hold", target=str(week), detail=reason, now=now)
    return held


def send_test_copy(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    week: IsoWeek,
    to: str,
    *,
    actor: str,
    now: datetime,
) -> SendResult:
    """Send one test copy of `week`'s issue to `to` (delivery.samples.send_test: "[TEST] "
    subject, the ledger untouched) and record it: audit "issue.test_send", detail the address."""
    result = send_test(engine, settings, transport, week, to)
    record(
        engine, actor=actor, action="issue.test_send", target=str(week), detail=to.strip(), now=now
    )
    return result


def notified(engine: Engine, week: IsoWeek) -> bool:
    """Whether the editors were told about `week`'s issue (its "issue.notify" audit entry)."""
    return bool(recent(engine, limit=1, target=str(week), action_prefix="issue.notify"))


def notify_editors(
    engine: Engine,
    settings: Settings,
    issue: IssueRecord,
    *,
    send_at: datetime | None,
    now: datetime,
) -> list[str] | None:
    """Mail every editor that `issue` waits for approval, once per issue: the addresses told,
    or None when they had been told before.

    Recorded as "issue.notify" once any mail went (or there is nobody to tell, which is logged
    as a warning); when every mail failed nothing is recorded, so the next tick tries again.
    """
    if notified(engine, issue.week):
        return None
    week = str(issue.week)
    editors = list_editors(engine)
    if not editors:
        log_event(
            _log,
            "approval_notice_unsent",
            level=logging.WARNING,
            week=week,
            reason="there are no editors to tell (add one: digest editors add)",
        )
        nobody = "nobody told: there are no editors"
        record(engine, actor=SCHEDULER, action="issue.notify", target=week, detail=nobody, now=now)
        return []
    told = []
    for editor in editors:
        try:
            send_one_off(settings, approval_notice(settings, issue, editor, send_at=send_at))
        except (TransportError, HeaderError) as exc:
            log_event(
                _log,
                "approval_notice_failed",
                level=logging.ERROR,
                week=week,
                editor=editor.email,
                error=str(exc),
            )
            continue
        told.append(editor.email)
    if told:
        detail = ", ".join(told)
        record(engine, actor=SCHEDULER, action="issue.notify", target=week, detail=detail, now=now)
        log_event(_log, "approval_notice_sent", week=week, editors=len(told))
    return told


def after_approval(settings: Settings, issue: IssueRecord, now: datetime) -> str:
    """What happens to an approved issue next, for the editor who approved it.

    With one weekly fire, an issue held at its fire and approved later is sent by `digest run`'s
    approval tick (every 15 minutes, with approval required) while that fire is within the grace
    window; later than that only `digest send` sends it, so it never goes out days late unasked.
    """
    week = issue.week
    send_now = f"`digest send --week {week}`"
    fire = week_fire(settings, week)
    if fire is None:
        return f"it has no scheduled send time; send it with {send_now}"
    when = f"{fire.astimezone(settings.zone):%a %Y-%m-%d %H:%M %Z}"
    if now < fire:
        zones = " in each reader's time zone" if settings.local_time_delivery else ""
        return f"it goes out at {when}{zones}"
    if settings.local_time_delivery:
        return (
            f"its send time ({when}) has come: the next local-time tick of `digest run` sends it "
            f"to every reader whose time has come, or send it now with {send_now}"
        )
    until = fire + timedelta(seconds=settings.misfire_grace_time)
    if settings.require_approval and due_week(settings, now) == week:  # what the tick sends
        return (
            f"its send time ({when}) has passed: a running `digest run` sends it within "
            f"{TICK_MINUTES} minutes (until {until.astimezone(settings.zone):%a %H:%M %Z}), "
            f"or send it now with {send_now}"
        )
    return f"its send time ({when}) has passed, so no job sends it; send it with {send_now}"


def _needs_approval_message(settings: Settings, issue: IssueRecord) -> str:
    week = issue.week
    how = (
        f"approve it with `digest issue approve {week}` or in the desk "
        f"({Urls.from_settings(settings).desk_issue(week)})"
    )
    if issue.status == "held":
        return f"issue {week} is held ({issue.status_reason}); it is sent once approved: {how}"
    return f"issue {week} needs an editor's approval before it is sent: {how}"


def _refuse_unless_approvable(issue: IssueRecord | None, week: IsoWeek, what: str) -> None:
    """ApprovalError saying why `issue` cannot be approved or held (`what`) now, if it cannot."""
    build = f"`digest build --week {week}`"
    if issue is None:
        raise ApprovalError(f"there is no issue for {week}; build it first: {build}")
    if issue.status in ("built", "held") and issue.html is not None:
        return
    if issue.status in ("sending", "paused", "sent"):
        raise ApprovalError(
            f"issue {week} is {issue.status}: its send has started, so it cannot be {what} now"
        )
    if issue.status == "failed" and issue.html is not None:
        raise ApprovalError(
            f"issue {week} is failed ({issue.status_reason}); rebuild it first "
            f"(`digest build --week {week} --rebuild`), then it can be {what}"
        )
    raise ApprovalError(f"issue {week} is not built yet; build it first: {build}")
