"""The send loop and its ledger: every subscriber gets a built issue once, across crashes.

A batch is claimed in `deliveries` (committed) before the transport sees it and recorded after;
a run that finds claimed-but-unrecorded batches asks the transport whether they went out.
"""

from __future__ import annotations

import contextlib
import html
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from digest.config import Settings
from digest.core import reader_links as subscriber_links
from digest.core.mails import PLACEHOLDERS, Message, Recipient
from digest.db import deliveries, subscribers, utcnow
from digest.delivery.transport import PermanentError, RetryableError, SendResult, Transport
from digest.headers import HeaderError, safe_display_name
from digest.issues import (
    Claim,
    InvalidTransition,
    claim_send,
    describe_lease,
    get_issue,
    lease_holder,
    release_send,
    transition,
)
from digest.logs import get_logger, log_event
from digest.model.issue import IssueRecord
from digest.model.owner import Owner
from digest.owner import current_owner, owner_liveness
from digest.weeks import IsoWeek

__all__ = [
    "RecordsRefusals",
    "SendError",
    "SendPlan",
    "SendStatus",
    "SendSummary",
    "Zones",
    "batch_key",
    "plan_send",
    "retry_failed",
    "sample_message",
    "send_issue",
    "send_test",
    "subscriber_recipient",
]

log = get_logger("digest.delivery.sender")

# "waiting": a local-time send did the zones due so far; later zones' readers are still to come.
SendStatus = Literal["sent", "paused", "failed", "busy", "waiting"]
# Stored `subscribers.timezone` values (None: not set) a local-time send is restricted to.
Zones = frozenset[str | None]
SENDABLE = ("built", "sending", "paused", "failed", "sent")


class SendError(Exception):
    """The issue cannot be sent as asked (missing, not built, or a bad test address)."""


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


@dataclass(frozen=True, slots=True)
class SendPlan:
    """What `digest send --dry-run` reports: who would get the issue, and the first request."""

    recipients: int
    already_done: int
    batch_size: int
    batches: int
    first_batch_bytes: int


@runtime_checkable
class RecordsRefusals(Protocol):
    """A transport that can say which recipients of a batch it already took it refused.

    A run that dies after the transport took a batch but before the ledger heard loses the
    `SendResult` and with it `refused`; the run that resumes the batch asks this instead, so
    those readers are recorded `refused` rather than `sent`. The outbox reads the batch's
    manifest; SendGrid applies its address rule again. A transport without it has every
    reader of a batch it took recorded as sent, as before refusals existed.
    """

    def refused_in_batch(self, message: Message) -> Mapping[str, str]: ...


def _refused_in_batch(transport: Transport, message: Message) -> Mapping[str, str]:
    if isinstance(transport, RecordsRefusals):
        return transport.refused_in_batch(message)
    return {}


def batch_key(issue: IssueRecord, batch: int) -> str:
    """The name a batch carries at the provider (custom arg `batch_key`, outbox file names).

    Derived from stored facts only — week, the send's start and the batch number — so a run
    that resumes after a crash names a batch exactly as the run that claimed it did.
    """
    assert issue.send_started_at is not None
    return f"{issue.week}-{int(issue.send_started_at.timestamp())}-{batch:06d}"


# --------------------------------------------------------------------------- recipients


def _recipient_conditions(
    issue: IssueRecord, cutoff: datetime, zones: Zones | None = None
) -> list[ColumnElement[bool]]:
    """Who may get `issue`: the audience (below) without a ledger row for this issue yet."""
    already = exists().where(
        deliveries.c.issue_id == issue.id, deliveries.c.subscriber_id == subscribers.c.id
    )
    return [*_audience_conditions(cutoff, zones), ~already]


def _audience_conditions(cutoff: datetime, zones: Zones | None = None) -> list[ColumnElement[bool]]:
    """The one place the audience is defined: active, confirmed before the send began (later
    sign-ups wait for next week) and, for a local-time send, with a stored time zone in `zones`
    (None there stands for readers without one). Paused subscribers are included: they get a
    `skipped` row."""
    conditions = [
        subscribers.c.status == "active",
        subscribers.c.confirmed_at.is_not(None),
        subscribers.c.confirmed_at <= cutoff,
    ]
    if zones is not None:
        named = sorted(z for z in zones if z is not None)
        in_zone = [subscribers.c.timezone.in_(named)] if named else []
        if None in zones:
            in_zone.append(subscribers.c.timezone.is_(None))
        conditions.append(or_(*in_zone) if in_zone else false())
    return conditions


def _recipient_query(
    issue: IssueRecord, cutoff: datetime, after: int, limit: int, zones: Zones | None = None
) -> Select[Any]:
    """The next page of recipients by keyset (id > after): never the whole list in memory."""
    return (
        select(
            subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.paused_until
        )
        .where(*_recipient_conditions(issue, cutoff, zones), subscribers.c.id > after)
        .order_by(subscribers.c.id)
        .limit(limit)
    )


def _page_query(
    cutoff: datetime, after: int, limit: int, zones: Zones | None = None
) -> Select[Any]:
    """The next page of the audience by keyset (id > after), ledger not consulted (see below)."""
    return (
        select(
            subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.paused_until
        )
        .where(*_audience_conditions(cutoff, zones), subscribers.c.id > after)
        .order_by(subscribers.c.id)
        .limit(limit)
    )


def _already_claimed(issue: IssueRecord, first: int, last: int) -> Select[Any]:
    """Subscribers between ids `first` and `last` that have a ledger row for `issue`.

    Asked separately from the page, as a range on the (issue, subscriber) unique index, so each
    page costs the same however far the send has got. As one query with NOT EXISTS,
    PostgreSQL plans an anti-join (or a hashed subplan) over every delivery recorded so far —
    once per batch, which makes a whole send quadratic.
    """
    return select(deliveries.c.subscriber_id).where(
        deliveries.c.issue_id == issue.id, deliveries.c.subscriber_id.between(first, last)
    )


def _count_recipients(
    engine: Engine, issue: IssueRecord, cutoff: datetime, now: datetime, zones: Zones | None = None
) -> int:
    """Recipients still to be claimed who would actually be sent to (not paused)."""
    not_paused = or_(subscribers.c.paused_until.is_(None), subscribers.c.paused_until <= now)
    query = select(func.count()).where(*_recipient_conditions(issue, cutoff, zones), not_paused)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


# --------------------------------------------------------------------------- messages


def _recipient(settings: Settings, subscriber_id: int, email: str, name: str | None) -> Recipient:
    # A name stored before today's rules (an encoded-word, a bidi override) is left out of the
    # header, subject and greeting instead of stopping the batch: the reader still gets the mail.
    name = safe_display_name(name)
    unsubscribe_url = subscriber_links.unsubscribe_url(settings, subscriber_id, email)
    preferences_url = subscriber_links.preferences_url(settings, subscriber_id, email)
    list_unsubscribe = f"<{unsubscribe_url}>"
    if settings.unsubscribe_mailto:
        mailbox = settings.unsubscribe_mailto.removeprefix("mailto:")
        list_unsubscribe += f", <mailto:{mailbox}?subject=unsubscribe>"
    return Recipient(
        email=email,
        name=name,
        substitutions={
            PLACEHOLDERS["unsubscribe_url"]: unsubscribe_url,
            PLACEHOLDERS["preferences_url"]: preferences_url,
            PLACEHOLDERS["name"]: name or "",
            PLACEHOLDERS["name_html"]: html.escape(name or ""),
        },
        # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" to the https URL.
        headers={
            "List-Unsubscribe": list_unsubscribe,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        custom_args={"subscriber_id": str(subscriber_id)},
    )


def _message(
    settings: Settings,
    issue: IssueRecord,
    recipients: Sequence[Recipient],
    key: str | None,
    *,
    subject_prefix: str = "",
) -> Message:
    if issue.html is None or issue.text is None or issue.subject is None:
        raise SendError(f"issue {issue.week} has no rendered content; build it first")
    custom_args = {"issue_week": str(issue.week)}
    if key is not None:
        custom_args["batch_key"] = key
    return Message(
        subject=subject_prefix + issue.subject,
        html=issue.html,
        text=issue.text,
        recipients=recipients,
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
        categories=("digest", f"digest-{issue.week}"),
        custom_args=custom_args,
        batch_key=key,
    )


# --------------------------------------------------------------------------- the run


class _LostLease(Exception):
    """Another process took over the send (our lease lapsed, or it claimed our rows)."""


class _Uncertain(Exception):
    """The transport cannot tell whether a batch went out, and the policy says do not resend."""


@dataclass
class _Outcome:
    status: SendStatus | None = None  # None: keep going
    reason: str | None = None


@dataclass
class _Run:
    engine: Engine
    settings: Settings
    transport: Transport
    issue: IssueRecord
    now: datetime
    owner: str | Owner
    lease: timedelta
    stop: threading.Event | None
    progress: Callable[[int, int], None] | None
    sleep: Callable[[float], None]
    clock: Callable[[], datetime]
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
    _renewed: float = field(default=0.0)
    # A local-time send's zones (None: everyone); only an unrestricted run may finish the issue.
    zones: Zones | None = None
    # `retry_failed`: re-send failed rows only, and never move the issue (see that function).
    retry: bool = False
    # The lease end of a dead sender this run took over from before it lapsed. Until then a
    # lagging provider's "not found" for that sender's batch may only mean its feed has not
    # caught up (a resume after the lapse has always waited this long before asking).
    inherited_until: datetime | None = None

    @property
    def week(self) -> IsoWeek:
        return self.issue.week

    @property
    def cutoff(self) -> datetime:
        assert self.issue.send_started_at is not None
        return self.issue.send_started_at

    # ---------------------------------------------------------------- driving

    def execute(self) -> _Outcome:
        try:
            template = _message(self.settings, self.issue, (), None)
            self.per_batch = min(
                self.settings.batch_size, self.transport.recipients_per_batch(template)
            )
        except PermanentError as exc:
            return self._fail_issue(str(exc))
        with self.engine.connect() as conn:
            self.done = int(
                conn.execute(
                    select(func.count()).where(deliveries.c.issue_id == self.issue.id)
                ).scalar_one()
            )
            self.next_batch = 1 + int(
                conn.execute(
                    select(func.coalesce(func.max(deliveries.c.batch), 0)).where(
                        deliveries.c.issue_id == self.issue.id
                    )
                ).scalar_one()
            )
        self.total = self.done + _count_recipients(
            self.engine, self.issue, self.cutoff, self.now, self.zones
        )
        self._report()

        for batch in self._open_batches():
            outcome = self._resume_batch(batch)
            if outcome.status is not None:
                return outcome

        after = 0
        while True:
            if self.stop is not None and self.stop.is_set():
                return self._pause("stopped on request; run `digest send` again to resume")
            self._renew_lease()
            claimed = self._claim_next(after)
            if claimed is None:
                break
            batch, recipients, after = claimed
            if recipients:
                outcome = self._deliver(batch, recipients)
                if outcome.status is not None:
                    return outcome
            self._report()
        return self._finish()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, max(self.total, self.done))

    def _renew_lease(self) -> None:
        if not claim_send(self.engine, self.week, self.owner, self.lease, now=utcnow()):
            raise _LostLease()

    # ---------------------------------------------------------------- claiming

    def _claim_next(self, after: int) -> tuple[int, list[Recipient], int] | None:
        """Claim the next page of subscribers as one batch, in one committed transaction."""
        query = _page_query(self.cutoff, after, self.per_batch, self.zones)
        batch = self.next_batch
        claimed_at = self.clock()
        rows: list[dict[str, Any]] = []
        recipients: list[Recipient] = []
        refused = 0
        try:
            with self.engine.begin() as conn:
                page = conn.execute(query).all()
                if not page:
                    return None
                # Claimed by an earlier run: a resume walks the list from the start again.
                done = set(
                    conn.execute(_already_claimed(self.issue, page[0][0], page[-1][0])).scalars()
                )
                for sid, email, name, paused_until in page:
                    if sid in done:
                        continue
                    paused = paused_until is not None and paused_until > self.now
                    status, error = "claimed", None
                    if paused:
                        status, error = "skipped", f"paused until {paused_until.isoformat()}"
                    else:
                        try:
                            recipients.append(_recipient(self.settings, sid, email, name))
                        except HeaderError as exc:
                            # A stored address no mail header can hold (a raw line break):
                            # final for this reader, and the rest of the batch goes on.
                            status, error = (
                                "refused",
                                f"the stored address cannot be sent to: {exc}",
                            )
                            refused += 1
                    rows.append(
                        {
                            "issue_id": self.issue.id,
                            "subscriber_id": sid,
                            "batch": batch,
                            "status": status,
                            "attempts": 0,
                            "error": error,
                            "claimed_at": claimed_at,
                        }
                    )
                if rows:
                    conn.execute(insert(deliveries), rows)
        except IntegrityError:
            # Only a second sender inserting the same (issue, subscriber) gets here.
            raise _LostLease() from None
        if rows:
            self.next_batch += 1
        paused_count = len(rows) - len(recipients) - refused
        self.skipped += paused_count
        self.refused += refused
        self.done += paused_count + refused
        return batch, recipients, page[-1][0]

    def retry_failed(self) -> _Outcome:
        """Send the batches whose rows failed again, and nothing else: nobody new is claimed."""
        batches = self._open_batches(("failed",))
        with self.engine.connect() as conn:
            self.total = int(
                conn.execute(
                    select(func.count()).where(
                        deliveries.c.issue_id == self.issue.id, deliveries.c.status == "failed"
                    )
                ).scalar_one()
            )
        self._report()
        for batch in batches:
            if self.stop is not None and self.stop.is_set():
                return self._pause("stopped on request; run the retry again to finish it")
            outcome = self._resume_batch(batch)
            if outcome.status is not None:
                return outcome
            self._report()
        return _Outcome("sent")

    def _open_batches(self, statuses: tuple[str, ...] = ("claimed", "failed")) -> list[int]:
        """Batches a run before this one left claimed (in flight) or failed."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(deliveries.c.batch)
                    .where(
                        deliveries.c.issue_id == self.issue.id,
                        deliveries.c.status.in_(statuses),
                    )
                    .group_by(deliveries.c.batch)
                    .order_by(deliveries.c.batch)
                ).scalars()
            )

    def _resume_batch(self, batch: int) -> _Outcome:
        """Settle a batch an earlier run left open: record it, re-send it, or give it up."""
        self._renew_lease()
        key = batch_key(self.issue, batch)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    deliveries.c.id,
                    deliveries.c.status,
                    subscribers.c.id,
                    subscribers.c.email,
                    subscribers.c.name,
                    subscribers.c.status,
                    subscribers.c.paused_until,
                )
                .select_from(deliveries.outerjoin(subscribers))
                .where(
                    deliveries.c.issue_id == self.issue.id,
                    deliveries.c.batch == batch,
                    deliveries.c.status.in_(("claimed", "failed")),
                )
                .order_by(deliveries.c.subscriber_id)
            ).all()
        if any(row[1] == "claimed" for row in rows):
            # The run that claimed it died between the provider and the ledger: ask.
            claimed = [
                _recipient(self.settings, sid, email, name)
                for _row_id, status, sid, email, name, _sub, _paused in rows
                if status == "claimed" and sid is not None
            ]
            try:
                # Readers the transport refused (or would refuse) are settled first, by what
                # the transport says of this batch: a lookup cannot speak for readers who were
                # never part of what went out.
                refused = (
                    _refused_in_batch(
                        self.transport, _message(self.settings, self.issue, claimed, key)
                    )
                    if claimed
                    else {}
                )
                if refused:
                    self._record_refused(batch, refused, claimed)
                    gone = {_subscriber_id(r) for r in claimed if r.email in refused}
                    rows = [row for row in rows if row[2] not in gone]
                    if not rows:
                        return _Outcome()
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
                return _Outcome()
            if went_out is None and self.settings.ambiguous_batches == "skip":
                self._give_up_uncertain(batch, why)
                return _Outcome()
        # Not sent (or policy says resend): re-check each subscriber, then send what is left.
        skip: list[dict[str, Any]] = []
        recipients: list[Recipient] = []
        for row_id, _status, sid, email, name, sub_status, paused_until in rows:
            if sid is None or sub_status != "active":
                skip.append({"row_id": row_id, "err": f"subscriber is {sub_status or 'erased'}"})
            elif paused_until is not None and paused_until > self.now:
                skip.append({"row_id": row_id, "err": f"paused until {paused_until.isoformat()}"})
            else:
                recipients.append(_recipient(self.settings, sid, email, name))
        with self.engine.begin() as conn:
            if skip:
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == bindparam("row_id"))
                    .values(status="skipped", error=bindparam("err")),
                    skip,
                )
            conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.issue_id == self.issue.id,
                    deliveries.c.batch == batch,
                    deliveries.c.status == "failed",
                )
                .values(status="claimed", error=None, claimed_at=self.clock())
            )
        self.skipped += len(skip)
        self.done += len(skip)
        if not recipients:
            return _Outcome()
        return self._deliver(batch, recipients)

    def _lookup_unsettled(self) -> bool:
        """True while a "not found" about a taken-over sender's batch is no proof (see
        `inherited_until`); the real clock, since leases are stamped with it."""
        return (
            self.inherited_until is not None
            and not self.transport.exact_lookup
            and utcnow() < self.inherited_until
        )

    # ---------------------------------------------------------------- delivering

    def _deliver(self, batch: int, recipients: list[Recipient]) -> _Outcome:
        key = batch_key(self.issue, batch)
        message = _message(self.settings, self.issue, recipients, key)
        maybe_delivered = False

        def attempt() -> SendResult:
            nonlocal maybe_delivered
            self._renew_lease()
            if maybe_delivered:
                went_out = self.transport.lookup_batch(key)
                if went_out:
                    return SendResult(refused=_refused_in_batch(self.transport, message))
                if went_out is None and self.settings.ambiguous_batches == "skip":
                    raise _Uncertain()
                maybe_delivered = False
            self.api_calls += 1
            try:
                return self.transport.send(message)
            except RetryableError as exc:
                maybe_delivered = maybe_delivered or exc.maybe_delivered
                log_event(
                    log,
                    "batch_retry",
                    week=str(self.week),
                    batch_key=key,
                    error=str(exc),
                    retry_after=exc.retry_after,
                )
                raise

        attempts = stop_after_attempt(self.settings.max_retries + 1)
        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=lambda state: attempts(state) or self._should_stop(state),
            wait=self._wait,
            sleep=self.sleep,
            reraise=True,
        )
        self.batches += 1
        try:
            result = retrying(attempt)
        except RetryableError as exc:
            if not maybe_delivered:
                # It certainly did not go out: let the next run claim these subscribers afresh.
                self._release(batch)
            return self._pause(f"{exc} (batch {batch}; run `digest send` again to resume)")
        except PermanentError as exc:
            self._mark(batch, "failed", error=str(exc))
            return self._fail_issue(str(exc))
        except _Uncertain:
            self._give_up_uncertain(batch, "the request timed out or its connection dropped")
            return _Outcome()
        if result.refused:
            self._record_refused(batch, result.refused, recipients)
        self._mark(batch, "sent", error=None, message_id=result.message_id)
        return _Outcome()

    def _wait(self, state: RetryCallState) -> float:
        """A 429's reset time when given; otherwise exponential backoff with full jitter."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return exc.retry_after
        jitter = wait_random_exponential(
            multiplier=self.settings.retry_base_delay, max=self.settings.retry_max_delay
        )
        return float(jitter(state))

    def _should_stop(self, state: RetryCallState) -> bool:
        if self.stop is not None and self.stop.is_set():
            return True
        exc = state.outcome.exception() if state.outcome else None
        # A rate limit that resets further off than our longest wait: pause instead of hanging.
        return (
            isinstance(exc, RetryableError)
            and exc.retry_after is not None
            and exc.retry_after > self.settings.retry_max_delay
        )

    # ---------------------------------------------------------------- recording

    def _mark(
        self, batch: int, status: str, *, error: str | None, message_id: str | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status, "error": error}
        if status == "sent":
            values |= {"sent_at": self.clock(), "message_id": message_id}
        with self.engine.begin() as conn:
            result = conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.issue_id == self.issue.id,
                    deliveries.c.batch == batch,
                    deliveries.c.status == "claimed",
                )
                .values(attempts=deliveries.c.attempts + 1, **values)
            )
        count = result.rowcount
        if status == "sent":
            self.sent += count
        elif status == "failed":
            self.failed += count
        self.done += count

    def _record_refused(
        self, batch: int, refused: Mapping[str, str], recipients: Sequence[Recipient]
    ) -> None:
        """Settle the readers the transport would not take as `refused`, with its reason.

        Final, like `skipped`: it is not `failed`, which a run (and `--retry-failed`) would
        send again — and the transport would refuse again, so the issue could never finish.
        """
        by_reason: dict[str, list[int]] = {}
        for recipient in recipients:
            if recipient.email in refused:
                by_reason.setdefault(refused[recipient.email], []).append(_subscriber_id(recipient))
        count = 0
        with self.engine.begin() as conn:
            for reason, ids in by_reason.items():
                result = conn.execute(
                    update(deliveries)
                    .where(
                        deliveries.c.issue_id == self.issue.id,
                        deliveries.c.batch == batch,
                        deliveries.c.subscriber_id.in_(ids),
                        deliveries.c.status == "claimed",
                    )
                    .values(status="refused", error=reason, attempts=deliveries.c.attempts + 1)
                )
                count += result.rowcount
        self.refused += count
        self.done += count
        # Subscriber ids, never addresses: this ends up in logs.
        log_event(
            log,
            "batch_refused",
            level=logging.WARNING,
            week=str(self.week),
            batch_key=batch_key(self.issue, batch),
            subscriber_ids=sorted(i for ids in by_reason.values() for i in ids),
            transport=self.transport.name,
        )

    def _release(self, batch: int) -> None:
        if self.retry:
            # The rows were failed before this retry and certainly did not go out now either.
            self._mark(batch, "failed", error="the provider stayed unavailable during a retry")
            return
        with self.engine.begin() as conn:
            conn.execute(
                delete(deliveries).where(
                    deliveries.c.issue_id == self.issue.id,
                    deliveries.c.batch == batch,
                    deliveries.c.status == "claimed",
                )
            )

    def _give_up_uncertain(self, batch: int, why: str) -> None:
        error = (
            f"uncertain: {why} and the provider cannot say whether batch "
            f"{batch_key(self.issue, batch)} went out; not re-sent (DIGEST_AMBIGUOUS_BATCHES=skip)"
        )
        with self.engine.begin() as conn:
            result = conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.issue_id == self.issue.id,
                    deliveries.c.batch == batch,
                    deliveries.c.status == "claimed",
                )
                .values(status="skipped", error=error)
            )
        self.uncertain += result.rowcount
        self.done += result.rowcount
        log_event(
            log, "batch_uncertain", week=str(self.week), batch=batch, recipients=result.rowcount
        )

    # ---------------------------------------------------------------- ending

    def _pause(self, reason: str) -> _Outcome:
        if not self.retry:
            transition(self.engine, self.week, "paused", reason, now=self.clock())
        return _Outcome("paused", reason)

    def _fail_issue(self, reason: str) -> _Outcome:
        if not self.retry:
            transition(self.engine, self.week, "failed", reason, now=self.clock())
        return _Outcome("failed", reason)

    def _finish(self) -> _Outcome:
        with self.engine.connect() as conn:
            open_rows = conn.execute(
                select(func.count()).where(
                    deliveries.c.issue_id == self.issue.id,
                    deliveries.c.status.in_(("claimed", "failed")),
                )
            ).scalar_one()
        if open_rows:  # pragma: no cover - every path above settles its batch first
            return self._pause(f"{open_rows} deliveries are still open")
        if self.zones is not None:  # later zones' readers are still to come: stays "sending"
            return _Outcome("waiting", "sent to the time zones due so far")
        transition(self.engine, self.week, "sent", now=self.clock())
        return _Outcome("sent", _refused_reason(self.engine, self.issue, self.transport))


def _subscriber_id(recipient: Recipient) -> int:
    return int(recipient.custom_args["subscriber_id"])


def _refused_reason(engine: Engine, issue: IssueRecord, transport: Transport) -> str | None:
    """What a finished send says about its refused readers (all of them, not this run's)."""
    with engine.connect() as conn:
        ids = list(
            conn.execute(
                select(deliveries.c.subscriber_id)
                .where(deliveries.c.issue_id == issue.id, deliveries.c.status == "refused")
                .order_by(deliveries.c.subscriber_id)
            ).scalars()
        )
    if not ids:
        return None
    shown = ", ".join(str(i) if i is not None else "erased" for i in ids[:10])
    shown += ", …" if len(ids) > 10 else ""
    many = len(ids) != 1
    return (
        f"{len(ids)} reader{'s' * many} refused (subscriber{'s' * many} {shown}): the "
        f"{transport.name} transport cannot send to {'their addresses' if many else 'the address'}"
        "; `digest deliveries ID` shows why — correct or remove the address"
    )


def _default_owner() -> Owner:
    """This process as a lease holder others can check (host, boot, pid, start time)."""
    return current_owner()


def _claim(engine: Engine, week: IsoWeek, owner: str | Owner, lease: timedelta) -> Claim:
    """A first claim: takes over at once from a holder on this host that is provably gone."""
    return claim_send(engine, week, owner, lease, now=utcnow(), judge_holder=owner_liveness)


def _busy_reason(claim: Claim) -> str:
    """Why a run is busy, naming the holder and how long its lease runs."""
    if claim.holder is None:
        return "another process is sending this issue"
    return "another process is sending this issue: " + describe_lease(
        claim.holder, claim.liveness, utcnow()
    )


def _lost_reason(engine: Engine, week: IsoWeek) -> str:
    holder = lease_holder(engine, week)
    if holder is None:
        return "another process took over this send"
    return "another process took over this send: " + describe_lease(holder, None, utcnow())


def _took_over(claim: Claim) -> str | None:
    if not claim.took_over or claim.holder is None or claim.liveness is None:
        return None
    return (
        f"took the send over at once from {claim.holder.describe()}, which is no longer "
        f"running ({claim.liveness.reason})"
    )


def _inherited_until(claim: Claim) -> datetime | None:
    """The taken-over lease's end, if it had not lapsed yet (see `_Run.inherited_until`)."""
    if not claim.took_over or claim.holder is None:
        return None
    return claim.holder.until


def _sleeper(stop: threading.Event | None) -> Callable[[float], None]:
    """How a run waits between retries: on `stop`, so a SIGTERM cuts the wait short."""
    if stop is None:
        return time.sleep
    event = stop

    def wait(seconds: float) -> None:
        event.wait(seconds)

    return wait


def _lease(settings: Settings) -> timedelta:
    # A lease shorter than one attempt plus one backoff would lapse while we still send.
    return timedelta(
        seconds=max(settings.send_lease, settings.sendgrid_timeout + settings.retry_max_delay)
    )


def _sendable(engine: Engine, week: IsoWeek) -> IssueRecord:
    issue = get_issue(engine, week)
    if issue is None:
        raise SendError(f"there is no issue for {week}; build it first (`digest build`)")
    if issue.status not in SENDABLE:
        raise SendError(f"issue {week} is {issue.status}; only a built issue can be sent")
    if issue.html is None or issue.text is None or issue.subject is None:
        raise SendError(f"issue {week} has no rendered content; build it first (`digest build`)")
    return issue


def _preflight(engine: Engine, settings: Settings, issue: IssueRecord, now: datetime) -> str | None:
    """The issue check's problems as one reason (kept on the still-built issue), or None."""
    from digest.preflight import check_issue  # it builds its sample messages with this module

    problems = check_issue(engine, settings, issue.week, now=now)
    if not problems:
        return None
    shown = "; ".join(problems[:5]) + ("; …" if len(problems) > 5 else "")
    reason = (
        f"the issue check found {len(problems)} problem{'s' * (len(problems) != 1)}: {shown} "
        f"(run `digest check --week {issue.week}`)"
    )
    if issue.status == "built":
        # built → built keeps it sendable and shows the reason in `digest status`; if another
        # process moved it on meanwhile, that run decides.
        with contextlib.suppress(InvalidTransition):
            transition(engine, issue.week, "built", reason, now=now)
    log_event(log, "send_refused", level=logging.WARNING, week=str(issue.week), problems=problems)
    return reason


def _database_gone(
    engine: Engine, week: IsoWeek, exc: OperationalError, lease: timedelta
) -> _Outcome:
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
        transition(engine, week, "paused", reason, now=utcnow())
    return _Outcome("paused", reason)


def _total_sent(engine: Engine, issue: IssueRecord) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    deliveries.c.issue_id == issue.id, deliveries.c.status == "sent"
                )
            ).scalar_one()
        )


def send_issue(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    week: IsoWeek,
    *,
    now: datetime | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    owner: str | Owner | None = None,
    sleep: Callable[[float], None] | None = None,
    check: bool = True,
    zones: Zones | None = None,
) -> SendSummary:
    """Send (or resume sending) `week`'s built issue to every eligible subscriber, once.

    Returns status "sent" when every eligible subscriber has a final ledger row, "paused" when
    the provider stayed unavailable (or `stop` was set) — run again to resume —, "failed" when
    the provider refused the request outright or the issue check found problems, and "busy"
    when another process holds the send. `sleep` waits between retries (tests pass a fake;
    `stop` cuts the wait short).

    Before the first batch of a send, `digest.preflight.check_issue` runs (unless `check` is
    False): with any problem nothing is claimed or sent, the issue stays "built" with the
    problems as its reason, and the summary is "failed". A send that has started is not
    checked again: its content is frozen, so the rest of the list gets what the first got.

    `zones` restricts the run to readers with these stored time zones (local-time delivery);
    such a run ends "waiting" instead of "sent" and leaves the issue `sending`, since only the
    unrestricted run after the last zone's time may finish it.
    """
    started = time.monotonic()
    fixed_now = now
    now = now or utcnow()
    owner = owner or _default_owner()
    issue = _sendable(engine, week)

    def summary(
        status: SendStatus,
        run: _Run | None = None,
        reason: str | None = None,
        *,
        total: int | None = None,
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
            total_sent=_total_sent(engine, issue) if total is None else total,
            refused=run.refused if run else 0,
            took_over=_took_over(claim) if claim is not None else None,
        )

    claim: Claim | None = None
    if issue.status == "sent":
        return summary("sent", reason="already sent")
    if check and issue.send_started_at is None:
        refusal = _preflight(engine, settings, issue, now)
        if refusal:
            return summary("failed", reason=refusal)
    lease = _lease(settings)
    claim = _claim(engine, week, owner, lease)
    if not claim:
        return summary("busy", reason=_busy_reason(claim))
    if sleep is None:
        sleep = _sleeper(stop)
    run: _Run | None = None
    try:
        issue = transition(engine, week, "sending", now=now)
        run = _Run(
            engine=engine,
            settings=settings,
            transport=transport,
            issue=issue,
            now=now,
            owner=owner,
            lease=lease,
            stop=stop,
            progress=progress,
            sleep=sleep,
            clock=(lambda: fixed_now) if fixed_now is not None else utcnow,
            zones=zones,
            inherited_until=_inherited_until(claim),
        )
        outcome = run.execute()
    except _LostLease:
        return summary("busy", run, _lost_reason(engine, week))
    except OperationalError as exc:
        outcome = _database_gone(engine, week, exc, lease)
        # The database may still be out: report this run's own count instead of asking it.
        return summary("paused", run, outcome.reason, total=run.sent if run else 0)
    finally:
        with contextlib.suppress(OperationalError):  # still out: the lease lapses by itself
            release_send(engine, week, owner)
    assert outcome.status is not None
    result = summary(outcome.status, run, outcome.reason)
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
    now: datetime | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    owner: str | Owner | None = None,
    sleep: Callable[[float], None] | None = None,
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
    """
    started = time.monotonic()
    fixed_now = now
    now = now or utcnow()
    owner = owner or _default_owner()
    issue = _sendable(engine, week)
    lease = _lease(settings)
    claim = _claim(engine, week, owner, lease)
    if not claim:
        return SendSummary(
            sent=0,
            skipped=0,
            failed=0,
            batches=0,
            api_calls=0,
            duration=time.monotonic() - started,
            status="busy",
            reason=_busy_reason(claim),
            total_sent=_total_sent(engine, issue),
        )
    run = _Run(
        engine=engine,
        settings=settings,
        transport=transport,
        issue=issue,
        now=now,
        owner=owner,
        lease=lease,
        stop=stop,
        progress=progress,
        sleep=sleep or _sleeper(stop),
        clock=(lambda: fixed_now) if fixed_now is not None else utcnow,
        retry=True,
        inherited_until=_inherited_until(claim),
    )
    try:
        outcome = run.retry_failed()
    except _LostLease:
        outcome = _Outcome("busy", _lost_reason(engine, week))
    finally:
        release_send(engine, week, owner)
    assert outcome.status is not None
    after = get_issue(engine, week)
    reason = outcome.reason or f"the issue stays {after.status if after else issue.status}"
    result = SendSummary(
        sent=run.sent,
        skipped=run.skipped,
        failed=run.failed,
        batches=run.batches,
        api_calls=run.api_calls,
        duration=time.monotonic() - started,
        status=outcome.status,
        uncertain=run.uncertain,
        reason=reason,
        total_sent=_total_sent(engine, issue),
        refused=run.refused,
        took_over=_took_over(claim),
    )
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


# --------------------------------------------------------------------------- dry run, test send


def plan_send(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    week: IsoWeek,
    *,
    now: datetime | None = None,
) -> SendPlan:
    """Count who would get `week`'s issue and size the first request; sends and claims nothing."""
    now = now or utcnow()
    issue = _sendable(engine, week)
    cutoff = issue.send_started_at or now
    per_batch = min(
        settings.batch_size,
        transport.recipients_per_batch(_message(settings, issue, (), None)),
    )
    count = _count_recipients(engine, issue, cutoff, now)
    with engine.connect() as conn:
        done = int(
            conn.execute(select(func.count()).where(deliveries.c.issue_id == issue.id)).scalar_one()
        )
        page = conn.execute(
            _recipient_query(issue, cutoff, 0, per_batch).where(
                or_(subscribers.c.paused_until.is_(None), subscribers.c.paused_until <= now)
            )
        ).all()
    first_bytes = 0
    if page:
        recipients = [_recipient(settings, sid, email, name) for sid, email, name, _ in page]
        # A stand-in key of the real key's length, so the size is the real one.
        key = f"{issue.week}-{int(cutoff.timestamp())}-{1:06d}"
        first_bytes = transport.payload_size(_message(settings, issue, recipients, key))
    return SendPlan(
        recipients=count,
        already_done=done,
        batch_size=per_batch,
        batches=-(-count // per_batch),
        first_batch_bytes=first_bytes,
    )


def sample_message(
    engine: Engine,
    settings: Settings,
    week: IsoWeek,
    *,
    limit: int = 20,
    now: datetime | None = None,
) -> Message:
    """The next batch's `Message` as `send_issue` would build it, for its first `limit`
    recipients; claims and sends nothing. When nobody is left to send to, one stand-in
    recipient (subscriber id 0, `sample@example.org`) takes their place, so there is always a
    real message to check (`digest check`)."""
    now = now or utcnow()
    issue = _sendable(engine, week)
    cutoff = issue.send_started_at or now
    with engine.connect() as conn:
        page = conn.execute(
            _recipient_query(issue, cutoff, 0, limit).where(
                or_(subscribers.c.paused_until.is_(None), subscribers.c.paused_until <= now)
            )
        ).all()
    recipients = []
    for sid, email, name, _paused in page:
        # A stored address no header can hold is refused by the send for that reader alone;
        # it is no fault of the issue, so it is left out of the sample rather than failing it.
        with contextlib.suppress(HeaderError):
            recipients.append(_recipient(settings, sid, email, name))
    if not recipients:
        recipients = [_recipient(settings, 0, "sample@example.org", "Sample Reader")]
    key = f"{issue.week}-{int(cutoff.timestamp())}-{1:06d}"
    return _message(settings, issue, recipients, key)


def subscriber_recipient(
    settings: Settings, subscriber_id: int, email: str, name: str | None
) -> Recipient:
    """A subscriber as a recipient of any list mail (the weekly issue, the welcome mail): their
    own unsubscribe and preference links in the placeholders, and RFC 8058 one-click headers."""
    return _recipient(settings, subscriber_id, email, name)


def send_test(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    week: IsoWeek,
    address: str,
) -> SendResult:
    """Send `week`'s issue to one address with "[TEST] " before the subject; the ledger is untouched.

    A subscriber's own address gets their real links; any other address gets links signed for
    it (they lead to "not subscribed" pages, but look and measure like the real ones).
    """
    try:
        email = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise SendError(f"{address!r} is not a valid address: {exc}") from None
    issue = _sendable(engine, week)
    with engine.connect() as conn:
        row = conn.execute(
            select(subscribers.c.id, subscribers.c.name).where(
                func.lower(subscribers.c.email) == email.lower()
            )
        ).first()
    sid, name = (int(row[0]), row[1]) if row else (0, None)
    message = _message(
        settings, issue, [_recipient(settings, sid, email, name)], None, subject_prefix="[TEST] "
    )
    result = transport.send(message)
    if result.refused:
        raise SendError(f"{transport.name} refused {email}: {'; '.join(result.refused.values())}")
    return result
