"""Walking a send's audience batch by batch: claim a page in the ledger, deliver it, settle it,
and pick up the batches an earlier run (or a dead crew member) left open; pause, fail or finish.

One `BatchRun` is one pass of `send_issue` or `retry_failed`, holding its seat (`crew`)
throughout; its counters become the run's `SendSummary`. Up to `batches_in_flight` claimed
batches are at the transport at once (`in_flight`); claiming and recording stay on its thread.
An issue with renditions is walked once per language (`languages`): a batch has one content.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import Engine

from digest.config import Settings
from digest.core.mails import Recipient
from digest.delivery import ledger
from digest.delivery.attempts import BatchAttempts, Uncertain, refused_in_batch, stop_aware_sleep
from digest.delivery.audience import (
    Language,
    Zones,
    any_unclaimed,
    audience_page,
    count_unclaimed,
)
from digest.delivery.claims import ClaimedBatch, claim_batch
from digest.delivery.crew import Orphan, Seat
from digest.delivery.in_flight import InFlight, RateLimitPause, batches_at_once
from digest.delivery.languages import Contents
from digest.delivery.outcome import Clock, Outcome, ended_as, graver, readers_failed
from digest.delivery.personalise import issue_message, subscriber_id
from digest.delivery.recording import Recording
from digest.delivery.transport import PermanentError, RetryableError, SendResult, Transport
from digest.logs import get_logger, log_event
from digest.model.issue import IssueRecord
from digest.model.weeks import IsoWeek
from digest.store.issues import InvalidTransition, get_issue, transition

__all__ = ["BatchRun"]

log = get_logger("digest.delivery.batches")

# How often the run's thread looks up from batches in flight (to notice `stop`, to renew the
# lease), and a crew member whose part is done at the others' open batches (a dead member's
# to take over, the issue to see sent).
POLL_SECONDS, CREW_POLL_SECONDS = 0.05, 0.25


@dataclass
class Sending:
    """One claimed batch handed to the transport: who is in it and its attempts."""

    batch: int
    recipients: list[Recipient]
    attempts: BatchAttempts


@dataclass
class BatchRun(Recording):
    """One run over an issue's batches, with its own counts; `runner` starts and ends it."""

    engine: Engine
    settings: Settings
    transport: Transport
    issue: IssueRecord
    now: datetime  # the run's start: who is paused, who counts
    clock: Clock  # stamps rows and transitions as the run goes
    lease_clock: Clock  # the real clock the lease is stamped with
    seat: Seat  # how the run holds its send: its lease, alone or in the issue's crew
    stop: threading.Event | None
    progress: Callable[[int, int], None] | None
    sleep: Callable[[float], None] | None  # None: real waits, cut short by `stop`
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    uncertain: int = 0
    refused: int = 0
    batches: int = 0
    api_calls: int = 0
    done: int = 0
    total: int = 0
    per_batch: int = 1000
    next_batch: int = 1
    # A local-time send's zones (None: everyone); only an unrestricted run may finish the issue.
    zones: Zones | None = None
    # `retry_failed`: re-send failed rows only, and never move the issue (see that function).
    retry: bool = False
    # The lease end of a dead sender this run took over from before it lapsed. Until then a
    # lagging provider's "not found" for that sender's batch may only mean its feed has not
    # caught up (a resume after the lapse has always waited this long before asking).
    inherited_until: datetime | None = None
    # What this run took over at once from dead members of its crew, in words.
    took_over: list[str] = field(default_factory=list)
    # A crew member claims on from the ledger's frontier until its first walk ends; then it
    # sweeps the whole list (readers a released batch left unclaimed below the frontier).
    sweeping: bool = False
    # The issue's content per language, and the language whose readers are claimed now (None:
    # everyone; `languages.Contents.walks`).
    contents: Contents | None = None
    language: Language | None = None

    @property
    def week(self) -> IsoWeek:
        return self.issue.week

    @property
    def cutoff(self) -> datetime:
        assert self.issue.send_started_at is not None
        return self.issue.send_started_at

    def execute(self) -> Outcome:
        try:
            self.per_batch = min(
                self.settings.batch_size,
                *(
                    self.transport.recipients_per_batch(issue_message(self.settings, c, (), None))
                    for c in self._contents.all()
                ),
            )
        except PermanentError as exc:
            return self._fail_issue(str(exc))
        self.done, self.next_batch = ledger.ledger_position(self.engine, self.issue)
        self.total = self.done + count_unclaimed(
            self.engine, self.issue, self.cutoff, self.now, self.zones
        )
        self._report()

        outcome = self._take_over(self.seat.orphans(self.lease_clock()))
        if outcome.status is not None:
            return outcome

        limit = batches_at_once(self.transport, self.settings.batches_in_flight)
        while True:
            for language in self._contents.walks():  # a batch is one language's readers
                self.language = language
                walked = self._one_at_a_time() if limit == 1 else self._in_flight(limit)
                if walked is not None:
                    return walked
            finished = self._finish()
            if finished is not None:
                return finished
            self.sweeping = True  # readers below the frontier are unclaimed: walk them all

    def _take_over(self, orphans: list[Orphan]) -> Outcome:
        """Settle the open batches a run before this one (or a dead crew member) left."""
        for orphan in orphans:
            if not ledger.take_batch(
                self.engine, self.issue, orphan.batch, owner=orphan.claimer, to=self.seat.token
            ):
                continue  # another member took it first
            if orphan.inherited_until is not None and (
                self.inherited_until is None or orphan.inherited_until > self.inherited_until
            ):
                self.inherited_until = orphan.inherited_until
            if orphan.took_over is not None and orphan.took_over not in self.took_over:
                self.took_over.append(orphan.took_over)
            outcome = self._resume_batch(orphan.batch)
            if outcome.status is not None:
                return outcome
        return Outcome()

    def _one_at_a_time(self) -> Outcome | None:
        """Claim a batch, send it, record it, then the next: the run with one batch in flight.
        None when the audience is walked to its end."""
        after = 0
        while True:
            if self._stop_requested():
                return self._stopped()
            claimed = self._claim_next(after)
            if claimed is None:
                return None
            after = claimed.last_id
            if claimed.recipients:
                outcome = self._deliver(claimed.batch, claimed.recipients, claimed.locale)
                if outcome.status is not None:
                    return outcome
            self._report()

    def _in_flight(self, limit: int) -> Outcome | None:
        """Keep up to `limit` claimed batches at the transport, recording each as it ends;
        None when the audience is walked to its end.

        A batch's requests (and its lookups) run on a worker thread; claiming, recording and
        the lease stay here. A batch that ends the run (paused, failed) stops the claiming; the
        others in flight are let finish their request and settled as they end, each as one
        batch alone would be — `halt` tells them not to try again. `stop` does the same.
        """
        halt = threading.Event()
        pause = RateLimitPause()
        window: InFlight[Sending] = InFlight(limit)
        ending: Outcome | None = None
        after, exhausted = 0, False
        try:
            while True:
                if self._stop_requested():
                    halt.set()
                while window.has_room() and not (exhausted or halt.is_set()):
                    claimed = self._claim_next(after)
                    if claimed is None:
                        exhausted = True
                        break
                    after = claimed.last_id
                    if claimed.recipients:
                        sending = self._sending(
                            claimed.batch, claimed.recipients, claimed.locale, halt, pause
                        )
                        window.start(sending, sending.attempts.run)
                    else:
                        self._report()
                if not window:
                    break
                for sending, future in window.finished(timeout=POLL_SECONDS):
                    ending = graver(ending, self._settle(sending, future.result))
                    self._report()
                if ending is not None:
                    halt.set()
                self.seat.renew_if_due(self.seat.main_interval())
        except BaseException:
            halt.set()  # workers stop retrying; `close` waits for the requests still out
            raise
        finally:
            window.close()
        if ending is not None:
            return self._end(ending)
        if self._stop_requested():
            return self._stopped()
        return None

    def _claim_next(self, after: int) -> ClaimedBatch | None:
        """Claim the page after subscriber `after` as the next batch (None: nobody is left)."""
        self._renew_lease()
        batch = self.next_batch
        shared = self.seat.shared
        if shared and not self.sweeping:
            after = max(after, ledger.claimed_frontier(self.engine, self.issue, self.language))
        page = audience_page(self.cutoff, after, self.per_batch, self.zones, self.language)
        locale = self.language[0] if self.language is not None else None
        claimed = claim_batch(
            self.engine, self.settings, self._contents.content(locale), None if shared else batch,
            page, now=self.now, claimed_at=self.clock(), claimed_by=self.seat.token,
            shared=shared, locale=locale,
        )  # fmt: skip
        if claimed is None:
            return None
        self.next_batch += 1 if claimed.rows else 0
        self.skipped += claimed.skipped
        self.refused += claimed.refused
        self.done += claimed.skipped + claimed.refused
        return claimed

    def _stop_requested(self) -> bool:
        """Stop claiming: asked to (a signal), or another crew member ended the send."""
        return self.ended_elsewhere is not None or (self.stop is not None and self.stop.is_set())

    def _stopped(self) -> Outcome:
        """How a run that stops claiming ends: as another member ended the send; alone, by
        pausing the issue; in a crew with others still sending, by leaving them to it."""
        if self.ended_elsewhere is not None:
            return self.ended_elsewhere
        others = self.seat.others_sending(self.lease_clock())
        if others:
            many = len(others) != 1
            return Outcome(
                "paused",
                f"stopped on request; {len(others)} other sender{'s' * many} of this issue "
                f"carr{'y' if many else 'ies'} the send on",
            )
        return self._pause("stopped on request; run `digest send` again to resume")

    def retry_failed(self) -> Outcome:
        """Send the batches whose rows failed again, and nothing else: nobody new is claimed."""
        orphans = self.seat.orphans(self.lease_clock(), ("failed",))
        self.total = ledger.count_rows(self.engine, self.issue, ("failed",))
        self._report()
        for orphan in orphans:
            if self.stop is not None and self.stop.is_set():
                return self._pause("stopped on request; run the retry again to finish it")
            outcome = self._take_over([orphan])
            if outcome.status is not None:
                return outcome
            self._report()
        return Outcome("sent")

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, max(self.total, self.done))

    @property
    def ended_elsewhere(self) -> Outcome | None:
        """Another crew member's ending of the send (it paused, failed or sent the issue), as
        this run's renewals saw it."""
        moved = self.seat.moved_on
        return ended_as(*moved) if moved is not None else None

    def _renew_lease(self) -> None:
        self.seat.renew()

    @property
    def _contents(self) -> Contents:
        if self.contents is None:
            self.contents = Contents.of(self.engine, self.issue)
        return self.contents

    def _resume_batch(self, batch: int) -> Outcome:
        """Settle a batch an earlier run left open: record it, re-send it, or give it up; in
        the language it was claimed in."""
        self._renew_lease()
        locale = ledger.batch_locale(self.engine, self.issue, batch)
        content = self._contents.content(locale)
        key = ledger.batch_key(self.issue, batch)
        rows = ledger.open_batch_rows(self.engine, self.issue, batch)
        if any(row[1] == "claimed" for row in rows):
            # The run that claimed it died between the provider and the ledger: ask.
            claimed = ledger.recipients_of(self.settings, content, rows, "claimed")
            try:
                # Readers the transport refused (or would refuse) are settled first, by what
                # the transport says of this batch: a lookup cannot speak for readers who were
                # never part of what went out.
                message = issue_message(self.settings, content, claimed, key)
                refused = refused_in_batch(self.transport, message) if claimed else {}
                if refused:
                    self._record_refused(batch, refused, claimed)
                    gone = {subscriber_id(r) for r in claimed if r.email in refused}
                    rows = [row for row in rows if row[2] not in gone]
                rows = self._settle_from_journal(batch, message, rows)
                if not rows:
                    return Outcome()
                went_out = self.transport.lookup_batch(key)
            except RetryableError as exc:
                return self._pause(f"{exc} (batch {batch}; run `digest send` again to resume)")
            except PermanentError as exc:
                return self._fail_issue(str(exc))
            why = "a run before this one was cut off mid-request"
            if went_out is False and self._lookup_unsettled():
                went_out = None
                why = (
                    "its sender was killed mid-request and taken over at once, before the "
                    "provider's activity feed can be trusted to show the batch"
                )
            log_event(log, "batch_lookup", week=str(self.week), batch_key=key, found=went_out)
            if went_out:
                self._mark(batch, "sent", error=None)
                return Outcome()
            if went_out is None and self.settings.ambiguous_batches == "skip":
                self._give_up_uncertain(batch, why)
                return Outcome()
        # Not sent (or policy says resend): re-check each subscriber, then send what is left.
        skipped, recipients = ledger.reopen_batch(
            self.engine, self.settings, content, batch, rows,
            now=self.now, claimed_at=self.clock(), by=self.seat.token,
        )  # fmt: skip
        self.skipped += skipped
        self.done += skipped
        if not recipients:
            return Outcome()
        return self._deliver(batch, recipients, locale)

    def _lookup_unsettled(self) -> bool:
        """True while a "not found" about a taken-over sender's batch is no proof (see
        `inherited_until`); the lease clock, since leases are stamped with it."""
        return (
            self.inherited_until is not None
            and not self.transport.exact_lookup
            and self.lease_clock() < self.inherited_until
        )

    def _deliver(self, batch: int, recipients: list[Recipient], locale: str | None) -> Outcome:
        """Send a batch here and now, and settle it: one batch in flight, or a resumed one."""
        sending = self._sending(batch, recipients, locale)
        return self._end(self._settle(sending, sending.attempts.run))

    def _sending(
        self, batch: int, recipients: list[Recipient], locale: str | None,
        halt: threading.Event | None = None, pause: RateLimitPause | None = None,
    ) -> Sending:  # fmt: skip
        """A batch's attempts, with the content of `locale`: on this thread (no `halt`), or on
        a worker thread of batches in flight, which `halt` stops retrying and which keep to
        the run's shared `pause`."""
        key = ledger.batch_key(self.issue, batch)
        stop = self.stop if halt is None else halt
        attempts = BatchAttempts(
            self.transport,
            self.settings,
            issue_message(self.settings, self._contents.content(locale), recipients, key),
            key,
            str(self.week),
            renew=self.seat.renew if halt is None else self.seat.renew_for_attempt,
            stop=stop,
            sleep=self.sleep or stop_aware_sleep(stop),
            pause=pause,
        )
        self.batches += 1
        return Sending(batch, recipients, attempts)

    def _settle(self, sending: Sending, result_of: Callable[[], SendResult]) -> Outcome:
        """Record what became of a batch's request (`result_of` gives it or raises why not);
        an Outcome with a status says the run ends so (not yet written on the issue)."""
        batch, attempts = sending.batch, sending.attempts
        try:
            result = result_of()
        except RetryableError as exc:
            if not attempts.maybe_delivered:
                # It certainly did not go out: let the next run claim these subscribers afresh.
                self._release(batch)
            return Outcome("paused", f"{exc} (batch {batch}; run `digest send` again to resume)")
        except PermanentError as exc:
            self._mark(batch, "failed", error=str(exc))
            return Outcome("failed", str(exc))
        except Uncertain:
            self._give_up_uncertain(batch, "the request timed out or its connection dropped")
            return Outcome()
        finally:
            self.api_calls += attempts.calls
        self._record_readers(batch, result, sending.recipients)
        self._mark(batch, "sent", error=None, message_id=result.message_id)
        return Outcome()

    # ---------------------------------------------------------------- ending

    def _end(self, outcome: Outcome) -> Outcome:
        """Write a settled batch's ending on the issue (paused or failed); others pass."""
        if outcome.status == "paused":
            return self._pause(outcome.reason or "paused")
        if outcome.status == "failed":
            return self._fail_issue(outcome.reason or "failed")
        return outcome

    def _pause(self, reason: str) -> Outcome:
        return self._move("paused", reason)

    def _fail_issue(self, reason: str) -> Outcome:
        return self._move("failed", reason)

    def _move(self, to: Literal["sent", "paused", "failed"], reason: str | None) -> Outcome:
        """End the run as `to`, moving the issue there (a retry leaves the issue as it is). In
        a crew, another member may have ended the send first: its ending stands."""
        if self.retry:
            return Outcome(to, reason)
        if self.ended_elsewhere is not None:
            return self.ended_elsewhere
        try:
            transition(self.engine, self.week, to, reason, now=self.clock())
        except InvalidTransition:
            if not self.seat.shared:
                raise
            current = get_issue(self.engine, self.week)
            assert current is not None
            return ended_as(current.status, current.status_reason)
        return Outcome(to, reason)

    def _finish(self) -> Outcome | None:
        """End a run whose walk reached the audience's end: the issue is sent once no batch is
        open. A crew member waits for the others' batches (taking over a dead member's) and
        says None when readers are still unclaimed (walk again)."""
        if self.seat.shared:
            return self._finish_together()
        if len(self._contents.walks()) > 1 and any_unclaimed(
            self.engine, self.issue, self.cutoff, self.zones
        ):
            return None  # a reader changed language behind the walk: walk again
        open_rows = ledger.count_rows(self.engine, self.issue, ("claimed",))
        if open_rows:  # pragma: no cover - every path above settles its batch first
            return self._pause(f"{open_rows} deliveries are still open")
        return self._settled()

    def _settled(self) -> Outcome:
        """Every batch settled: sent, unless a per-reader transport (SMTP) left readers failed."""
        failed = ledger.count_rows(self.engine, self.issue, ("failed",))
        return self._pause(readers_failed(failed)) if failed else self._sent()

    def _sent(self) -> Outcome:
        if self.zones is not None:  # later zones' readers are still to come: stays "sending"
            return Outcome("waiting", "sent to the time zones due so far")
        ended = self._move("sent", None)
        if ended.status != "sent":
            return ended
        return Outcome("sent", ledger.refused_reason(self.engine, self.issue, self.transport.name))

    def _finish_together(self) -> Outcome | None:
        while True:
            self.seat.renew_if_due(CREW_POLL_SECONDS)
            if self.ended_elsewhere is not None:
                return self.ended_elsewhere
            outcome = self._take_over(self.seat.orphans(self.lease_clock()))
            if outcome.status is not None:
                return outcome
            if not ledger.count_rows(self.engine, self.issue, ("claimed",)):
                if any_unclaimed(self.engine, self.issue, self.cutoff, self.zones):
                    return None
                return self._settled()
            if self._stop_requested():
                return self._stopped()
            (self.sleep or stop_aware_sleep(self.stop))(CREW_POLL_SECONDS)
