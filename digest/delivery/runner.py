"""The batch runner: sends a built issue to every reader of its audience once, across crashes
(`send_issue`), and sends failed deliveries again (`retry_failed`).

A run is gated (the caller's preflight), takes the send lease, walks the batches (`BatchRun`)
and releases the lease; whatever happens in between, it returns a `SendSummary`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from digest.config import Settings
from digest.delivery.audience import Zones
from digest.delivery.batches import BatchRun
from digest.delivery.crew import Seat, shares_sends
from digest.delivery.lease import (
    LostLease,
    busy_reason,
    first_claim,
    inherited_until,
    lease_length,
    lost_reason,
    one_attempt,
    took_over,
)
from digest.delivery.ledger import total_sent
from digest.delivery.outcome import Clock, Outcome, SendStatus
from digest.delivery.personalise import sendable_issue
from digest.delivery.transport import Transport
from digest.logs import get_logger, log_event
from digest.model.issue import IssueRecord
from digest.model.owner import Owner
from digest.model.weeks import IsoWeek
from digest.owner import current_owner, owner_liveness
from digest.store import send_crew
from digest.store.db import utcnow
from digest.store.issues import Claim, InvalidTransition, get_issue, release_send, transition
from digest.store.send_crew import Joined

__all__ = ["Clock", "Preflight", "SendStatus", "SendSummary", "retry_failed", "send_issue"]

log = get_logger("digest.delivery.runner")

# The check a send must pass before its first batch, given the issue and the run's instant:
# the reason it refuses the send (already recorded on the issue), or None to go ahead.
Preflight = Callable[[IssueRecord, datetime], str | None]


@dataclass(frozen=True, slots=True)
class SendSummary:
    """What one `send_issue` run did; counts are this run's, `total_sent` is the ledger's."""

    sent: int
    skipped: int
    failed: int
    batches: int
    api_calls: int
    duration: float
    status: SendStatus
    # recipients of batches the provider may or may not have accepted, not re-sent (policy skip)
    uncertain: int = 0
    reason: str | None = None
    total_sent: int = 0
    # readers the transport could not send to (their address), recorded `refused`: final
    refused: int = 0
    # Set when this run took the lease over at once from a sender that had died: whom, and why.
    took_over: str | None = None


def send_issue(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    week: IsoWeek,
    *,
    now: datetime | Clock,
    preflight: Preflight | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    owner: str | Owner | None = None,
    sleep: Callable[[float], None] | None = None,
    zones: Zones | None = None,
    lease_clock: Clock = utcnow,
    approved_only: bool = False,
) -> SendSummary:
    """Send (or resume sending) `week`'s built issue to every eligible subscriber, once.

    Returns status "sent" when every eligible subscriber has a final ledger row, "paused" when
    the provider stayed unavailable (or `stop` was set) — run again to resume —, "failed" when
    the provider refused the request outright or the preflight refused the issue, and "busy"
    when another process holds the send. `sleep` waits between retries (tests pass a fake;
    `stop` cuts the wait short).

    Up to `settings.batches_in_flight` batches are at the transport at once (see
    `BatchRun._in_flight`); `stop` then lets those finish and claims no more.

    `now` is when the run happens: an instant every row and transition is stamped with (tests,
    a replayed tick), or a clock (`digest.store.db.utcnow`) read at the start and for each stamp.
    `lease_clock` is the real clock the send lease is stamped with, whatever `now` says.

    Before the first batch of a send, `preflight` (the campaign's issue check; None: none)
    runs: when it returns a reason nothing is claimed or sent, and the summary is "failed"
    with that reason. A send that has started is not checked again: its content is frozen, so
    the rest of the list gets what the first got.

    `approved_only`: the move to sending requires the issue's approval in the same UPDATE
    (the campaign decides approval; this only makes a withdrawal a moment before count), else
    `NotApproved` is raised with nothing claimed for any reader.

    `zones` restricts the run to readers with these stored time zones (local-time delivery);
    such a run ends "waiting" instead of "sent" and leaves the issue `sending`, since only the
    unrestricted run after the last zone's time may finish it.
    """
    started = time.monotonic()
    clock = _as_clock(now)
    at = clock()
    owner = owner or current_owner()
    issue = sendable_issue(engine, week)
    if issue.status == "sent":
        return _summary(started, "sent", None, "already sent", total_sent(engine, issue), None)
    if preflight is not None and issue.send_started_at is None:
        refusal = preflight(issue, at)
        if refusal:
            return _summary(started, "failed", None, refusal, total_sent(engine, issue), None)
    lease = lease_length(settings)
    shared = shares_sends(engine)
    claim: Claim | None = None
    if shared:
        # A shared send (PostgreSQL): join the issue's crew; its other members go on sending.
        joined = send_crew.join(
            engine, issue.id, owner, zones, lease, now=lease_clock(), judge_holder=owner_liveness
        )
        if not joined:
            reason = _join_refused(joined, lease_clock())
            return _summary(started, "busy", None, reason, total_sent(engine, issue), None)
        if joined.holder is not None:  # a dead exclusive holder was cleared: as a takeover
            claim = Claim(True, joined.holder, joined.liveness)
    else:
        claim = first_claim(engine, week, owner, lease, lease_clock())
        if not claim:
            reason = busy_reason(claim, lease_clock())
            return _summary(started, "busy", None, reason, total_sent(engine, issue), claim)
    seat = Seat(engine, issue, owner, lease, shared, lease_clock, one_attempt(settings))
    run: BatchRun | None = None
    try:
        issue = transition(engine, week, "sending", now=at, approved_only=approved_only)
        run = BatchRun(
            engine=engine,
            settings=settings,
            transport=transport,
            issue=issue,
            now=at,
            clock=clock,
            lease_clock=lease_clock,
            seat=seat,
            stop=stop,
            progress=progress,
            sleep=sleep,
            zones=zones,
            inherited_until=inherited_until(claim) if claim is not None else None,
        )
        outcome = run.execute()
    except LostLease:
        reason = lost_reason(engine, week, lease_clock())
        return _summary(started, "busy", run, reason, total_sent(engine, issue), claim)
    except OperationalError as exc:
        outcome = _database_gone(engine, week, exc, lease, clock())
        # The database may still be out: report this run's own count instead of asking it.
        return _summary(started, "paused", run, outcome.reason, run.sent if run else 0, claim)
    finally:
        with contextlib.suppress(OperationalError):  # still out: the lease lapses by itself
            if shared:
                seat.leave()
            else:
                release_send(engine, week, owner)
    assert outcome.status is not None
    result = _summary(
        started, outcome.status, run, outcome.reason, total_sent(engine, issue), claim
    )
    log_event(
        log,
        "send_run",
        week=str(week),
        status=result.status,
        sent=result.sent,
        skipped=result.skipped,
        failed=result.failed,
        uncertain=result.uncertain,
        refused=result.refused,
        api_calls=result.api_calls,
        seconds=round(result.duration, 3),
    )
    return result


def retry_failed(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    week: IsoWeek,
    *,
    now: datetime | Clock,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    owner: str | Owner | None = None,
    sleep: Callable[[float], None] | None = None,
    lease_clock: Clock = utcnow,
) -> SendSummary:
    """Send `week`'s issue again to the readers whose delivery failed, and to nobody else.

    Their ledger rows go failed → claimed → sent (or failed again) through the same claim, send
    and record steps as a send; readers who have since unsubscribed, bounced, paused or been
    erased become `skipped`. Rows that are sent, skipped or in flight are never touched, and
    nobody new is claimed. The issue's state is left as it is: a retry is about rows, not the
    issue, so a `sent` issue stays sent (its sent_at, archive and feed do not move) and a failed
    or paused one keeps waiting for `digest send` to finish its other readers. It holds the send
    lease like a send, so it never runs beside one ("busy"). Status "sent" means every failed
    row was dealt with; "paused" and "failed" say the provider still would not take them.
    `now` and `lease_clock` as in `send_issue`.
    """
    started = time.monotonic()
    clock = _as_clock(now)
    owner = owner or current_owner()
    issue = sendable_issue(engine, week)
    lease = lease_length(settings)
    claim = first_claim(engine, week, owner, lease, lease_clock())
    if not claim:
        reason = busy_reason(claim, lease_clock())
        return _summary(started, "busy", None, reason, total_sent(engine, issue), None)
    # A retry walks the failed rows alone: never beside a shared send's crew (which, in turn,
    # does not let anyone join while this lease is held; digest.store.send_crew).
    seat = Seat(engine, issue, owner, lease, False, lease_clock, one_attempt(settings))
    crew = (
        Seat(engine, issue, owner, lease, shared=True).others_sending(lease_clock())
        if shares_sends(engine)
        else []
    )
    if crew:
        release_send(engine, week, owner)
        reason = "another process is sending this issue: " + ", ".join(
            m.lease.describe() for m in crew
        )
        return _summary(started, "busy", None, reason, total_sent(engine, issue), None)
    run = BatchRun(
        engine=engine,
        settings=settings,
        transport=transport,
        issue=issue,
        now=clock(),
        clock=clock,
        lease_clock=lease_clock,
        seat=seat,
        stop=stop,
        progress=progress,
        sleep=sleep,
        retry=True,
        inherited_until=inherited_until(claim),
    )
    try:
        outcome = run.retry_failed()
    except LostLease:
        outcome = Outcome("busy", lost_reason(engine, week, lease_clock()))
    finally:
        release_send(engine, week, owner)
    assert outcome.status is not None
    after = get_issue(engine, week)
    reason = outcome.reason or f"the issue stays {after.status if after else issue.status}"
    result = _summary(started, outcome.status, run, reason, total_sent(engine, issue), claim)
    log_event(
        log,
        "retry_failed_run",
        week=str(week),
        status=result.status,
        sent=result.sent,
        skipped=result.skipped,
        failed=result.failed,
        api_calls=result.api_calls,
    )
    return result


def _database_gone(
    engine: Engine, week: IsoWeek, exc: OperationalError, lease: timedelta, now: datetime
) -> Outcome:
    """Pause a run whose database stayed locked past its busy timeout, or went away.

    Nothing is lost: a batch the provider took is still `claimed` and the next run asks the
    provider about it. If the database is still out, the pause itself cannot be written; the
    issue stays `sending` and its lease lapses after `lease`, when a new run takes over.
    """
    reason = (
        f"the database was unavailable ({str(exc.orig).strip() or type(exc.orig).__name__}); "
        f"run `digest send` again to resume (it says busy for up to {lease.total_seconds():.0f} s)"
    )
    log_event(log, "send_database_error", level=logging.ERROR, week=str(week), error=str(exc.orig))
    with contextlib.suppress(OperationalError, InvalidTransition):
        transition(engine, week, "paused", reason, now=now)
    return Outcome("paused", reason)


def _summary(
    started: float,
    status: SendStatus,
    run: BatchRun | None,
    reason: str | None,
    total_sent: int,
    claim: Claim | None,
) -> SendSummary:
    return SendSummary(
        sent=run.sent if run else 0,
        skipped=run.skipped if run else 0,
        failed=run.failed if run else 0,
        batches=run.batches if run else 0,
        api_calls=run.api_calls if run else 0,
        duration=time.monotonic() - started,
        status=status,
        uncertain=run.uncertain if run else 0,
        reason=reason,
        total_sent=total_sent,
        refused=run.refused if run else 0,
        took_over=_took_over(run, claim),
    )


def _took_over(run: BatchRun | None, claim: Claim | None) -> str | None:
    """What the run took over at once from a sender that had died: the issue's lease (a run
    alone), or the batches of dead crew members (a shared send)."""
    if claim is not None and (taken := took_over(claim)) is not None:
        return taken
    if run is not None and run.took_over:
        return "; ".join(run.took_over)
    return None


def _join_refused(joined: Joined, now: datetime) -> str:
    """Why a shared send could not be joined: a retry holds the issue, or the crew sends to
    other time zones (a local-time tick's readers only)."""
    if joined.holder is not None:
        return busy_reason(Claim(False, joined.holder, joined.liveness), now)
    who = ", ".join(m.lease.describe() for m in joined.others)
    return f"another process is sending this issue to other time zones only: {who}"


def _as_clock(now: datetime | Clock) -> Clock:
    """An instant as a clock that always says it; a clock as itself."""
    if callable(now):
        return now
    instant = now
    return lambda: instant
