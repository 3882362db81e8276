"""The delivery ledger: one `deliveries` row per reader and issue, claimed before the transport
sees its batch and settled (sent, failed, skipped, refused) after.

Each write is one committed transaction, so a run killed anywhere leaves rows the next run can
read: claimed-but-unsettled rows are a batch the provider may or may not have.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, bindparam, delete, func, select, update

from digest.config import Settings
from digest.core.mails import Recipient
from digest.delivery.audience import Language
from digest.delivery.personalise import issue_recipient, subscriber_id
from digest.logs import get_logger, log_event
from digest.model.issue import IssueRecord
from digest.store.db import deliveries, subscribers

__all__ = [
    "OpenRow",
    "batch_key",
    "batch_locale",
    "claimed_frontier",
    "count_rows",
    "ledger_position",
    "mark_batch",
    "open_batch_owners",
    "open_batch_rows",
    "open_batches",
    "recipients_of",
    "record_refused",
    "refused_reason",
    "release_batch",
    "reopen_batch",
    "skip_uncertain",
    "take_batch",
    "total_sent",
]

log = get_logger("digest.delivery.ledger")

# An open batch's row with its reader as stored now: (row id, row status, subscriber id, email,
# name, subscriber status, paused_until, tracking_opt_out); the reader's are None when they
# were erased.
OpenRow = Row[Any, Any, Any, Any, Any, Any, Any, Any]


def batch_key(issue: IssueRecord, batch: int, *, started_at: datetime | None = None) -> str:
    """The name a batch carries at the provider (custom arg `batch_key`, outbox file names).

    Derived from stored facts only — week, the send's start and the batch number — so a run
    that resumes after a crash names a batch exactly as the run that claimed it did.
    `started_at` stands in for a send not started yet (a sample's key of the real length).
    """
    started = issue.send_started_at or started_at
    assert started is not None
    return f"{issue.week}-{int(started.timestamp())}-{batch:06d}"


# --------------------------------------------------------------------------- reading


def count_rows(engine: Engine, issue: IssueRecord, statuses: Sequence[str] | None = None) -> int:
    """How many of `issue`'s rows have one of `statuses` (None: rows of any status)."""
    query = select(func.count()).where(deliveries.c.issue_id == issue.id)
    if statuses is not None:
        query = query.where(deliveries.c.status.in_(statuses))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def total_sent(engine: Engine, issue: IssueRecord) -> int:
    return count_rows(engine, issue, ("sent",))


def ledger_position(engine: Engine, issue: IssueRecord) -> tuple[int, int]:
    """(rows so far, the next batch number) for a run that picks the send up."""
    with engine.connect() as conn:
        latest = conn.execute(
            select(func.coalesce(func.max(deliveries.c.batch), 0)).where(
                deliveries.c.issue_id == issue.id
            )
        ).scalar_one()
    return count_rows(engine, issue), 1 + int(latest)


def claimed_frontier(engine: Engine, issue: IssueRecord, language: Language | None = None) -> int:
    """The highest subscriber id with a ledger row for `issue` (0: none): where a shared
    send's members claim on from, instead of each re-reading the pages the others took. One
    step down the (issue, subscriber) unique index. `language`: among the rows of the readers
    of that rendition only (a send walks one language at a time)."""
    query = select(func.coalesce(func.max(deliveries.c.subscriber_id), 0)).where(
        deliveries.c.issue_id == issue.id
    )
    if language is not None:
        locale = language[0]
        query = query.where(
            deliveries.c.locale.is_(None) if locale is None else deliveries.c.locale == locale
        )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def batch_locale(engine: Engine, issue: IssueRecord, batch: int) -> str | None:
    """The rendition batch `batch`'s readers were claimed for (None: the issue's own); one
    per batch, since a claim takes one language's readers."""
    query = (
        select(deliveries.c.locale)
        .where(deliveries.c.issue_id == issue.id, deliveries.c.batch == batch)
        .limit(1)
    )
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    return None if found is None else str(found)


def open_batches(
    engine: Engine, issue: IssueRecord, statuses: tuple[str, ...] = ("claimed", "failed")
) -> list[int]:
    """Batches a run before this one left claimed (in flight) or failed."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(deliveries.c.batch)
                .where(deliveries.c.issue_id == issue.id, deliveries.c.status.in_(statuses))
                .group_by(deliveries.c.batch)
                .order_by(deliveries.c.batch)
            ).scalars()
        )


def open_batch_owners(
    engine: Engine, issue: IssueRecord, statuses: tuple[str, ...] = ("claimed", "failed")
) -> list[tuple[int, str | None]]:
    """(batch, the sender that claimed it) of every open batch, in batch order: who must be
    gone before another sender may take it over (`take_batch`)."""
    with engine.connect() as conn:
        return [
            (int(batch), owner)
            for batch, owner in conn.execute(
                select(deliveries.c.batch, deliveries.c.claimed_by)
                .where(deliveries.c.issue_id == issue.id, deliveries.c.status.in_(statuses))
                .group_by(deliveries.c.batch, deliveries.c.claimed_by)
                .order_by(deliveries.c.batch)
            )
        ]


def take_batch(
    engine: Engine, issue: IssueRecord, batch: int, *, owner: str | None, to: str
) -> bool:
    """Make an open batch claimed by `owner` (None: a run from before rows named their
    sender) the batch of sender `to`; False when another sender took it first.

    A compare-and-swap on the claimer: of two senders racing for a dead one's batch, the
    second's UPDATE waits for the first's and then matches no row. Every later write of the
    batch names its sender, so a sender judged dead cannot settle a batch it no longer has.
    """
    claimer = (
        deliveries.c.claimed_by.is_(None) if owner is None else deliveries.c.claimed_by == owner
    )
    with engine.begin() as conn:
        result = conn.execute(
            update(deliveries)
            .where(
                deliveries.c.issue_id == issue.id,
                deliveries.c.batch == batch,
                deliveries.c.status.in_(("claimed", "failed")),
                claimer,
            )
            .values(claimed_by=to)
        )
    return result.rowcount > 0


def open_batch_rows(engine: Engine, issue: IssueRecord, batch: int) -> list[OpenRow]:
    """A batch's claimed and failed rows, with their reader as stored now."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(
                    deliveries.c.id,
                    deliveries.c.status,
                    subscribers.c.id,
                    subscribers.c.email,
                    subscribers.c.name,
                    subscribers.c.status,
                    subscribers.c.paused_until,
                    subscribers.c.tracking_opt_out,
                )
                .select_from(deliveries.outerjoin(subscribers))
                .where(
                    deliveries.c.issue_id == issue.id,
                    deliveries.c.batch == batch,
                    deliveries.c.status.in_(("claimed", "failed")),
                )
                .order_by(deliveries.c.subscriber_id)
            ).all()
        )


def recipients_of(
    settings: Settings, issue: IssueRecord, rows: Sequence[OpenRow], status: str
) -> list[Recipient]:
    """The readers of `open_batch_rows` whose row has `status`, as recipients of `issue`
    (erased left out)."""
    return [
        issue_recipient(settings, issue, sid, email, name, tracking_opt_out=opt_out)
        for _row_id, row_status, sid, email, name, _sub, _paused, opt_out in rows
        if row_status == status and sid is not None
    ]


# --------------------------------------------------------------------------- reopening


def reopen_batch(
    engine: Engine,
    settings: Settings,
    issue: IssueRecord,
    batch: int,
    rows: Sequence[OpenRow],
    *,
    now: datetime,
    claimed_at: datetime,
    by: str | None = None,
) -> tuple[int, list[Recipient]]:
    """Re-check each reader of an open batch that is to be sent again: (how many were settled
    `skipped` — unsubscribed, erased or paused since —, the recipients still to send to).

    The batch's failed rows are claimed again, so a run killed now leaves it in flight.
    """
    skip: list[dict[str, Any]] = []
    recipients: list[Recipient] = []
    for row_id, _status, sid, email, name, sub_status, paused_until, opt_out in rows:
        if sid is None or sub_status != "active":
            skip.append({"row_id": row_id, "err": f"subscriber is {sub_status or 'erased'}"})
        elif paused_until is not None and paused_until > now:
            skip.append({"row_id": row_id, "err": f"paused until {paused_until.isoformat()}"})
        else:
            recipients.append(
                issue_recipient(settings, issue, sid, email, name, tracking_opt_out=opt_out)
            )
    with engine.begin() as conn:
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
                deliveries.c.issue_id == issue.id,
                deliveries.c.batch == batch,
                deliveries.c.status == "failed",
                *([deliveries.c.claimed_by == by] if by is not None else []),
            )
            .values(status="claimed", error=None, claimed_at=claimed_at)
        )
    return len(skip), recipients


# --------------------------------------------------------------------------- settling


def _claimed_rows(issue: IssueRecord, batch: int, by: str | None) -> Any:
    """An UPDATE of a batch's claimed rows; of sender `by`'s only, when named (see
    `take_batch`: a sender whose batch was taken over settles nothing of it)."""
    return update(deliveries).where(*_claimed(issue, batch, by))


def _claimed(issue: IssueRecord, batch: int, by: str | None) -> list[Any]:
    where = [
        deliveries.c.issue_id == issue.id,
        deliveries.c.batch == batch,
        deliveries.c.status == "claimed",
    ]
    if by is not None:
        where.append(deliveries.c.claimed_by == by)
    return where


def mark_batch(
    engine: Engine,
    issue: IssueRecord,
    batch: int,
    status: str,
    *,
    error: str | None,
    sent_at: datetime,
    message_id: str | None = None,
    by: str | None = None,
) -> int:
    """Settle a batch's claimed rows as `status` (sent or failed); how many there were."""
    values: dict[str, Any] = {"status": status, "error": error}
    if status == "sent":
        values |= {"sent_at": sent_at, "message_id": message_id}
    with engine.begin() as conn:
        result = conn.execute(
            _claimed_rows(issue, batch, by).values(attempts=deliveries.c.attempts + 1, **values)
        )
    return int(result.rowcount)


def record_refused(
    engine: Engine,
    issue: IssueRecord,
    batch: int,
    refused: Mapping[str, str],
    recipients: Sequence[Recipient],
    transport: str,
    by: str | None = None,
) -> int:
    """Settle the readers the transport would not take as `refused`, with its reason.

    Final, like `skipped`: it is not `failed`, which a run (and `--retry-failed`) would
    send again — and the transport would refuse again, so the issue could never finish.
    """
    count = settle_readers(engine, issue, batch, "refused", refused, recipients, by=by)
    # Subscriber ids, never addresses: this ends up in logs.
    log_event(
        log,
        "batch_refused",
        level=logging.WARNING,
        week=str(issue.week),
        batch_key=batch_key(issue, batch),
        subscriber_ids=sorted(subscriber_id(r) for r in recipients if r.email in refused),
        transport=transport,
    )
    return count


def settle_readers(
    engine: Engine,
    issue: IssueRecord,
    batch: int,
    status: str,
    reasons: Mapping[str, str | None],
    recipients: Sequence[Recipient],
    *,
    by: str | None = None,
) -> int:
    """Settle some readers of a claimed batch as `status`, each with its reason (address →
    reason, None for none): a transport that answers per reader (SMTP) settles a batch so.

    `failed` rows are what `--retry-failed` sends again; `skipped` with an "uncertain:" reason
    is a reader the ambiguity policy gave up (sent readers: `record_sent_ids`).
    """
    by_reason: dict[str | None, list[int]] = {}
    for recipient in recipients:
        if recipient.email in reasons:
            by_reason.setdefault(reasons[recipient.email], []).append(subscriber_id(recipient))
    count = 0
    with engine.begin() as conn:
        for reason, ids in by_reason.items():
            for start in range(0, len(ids), 500):  # under every backend's parameter limit
                result = conn.execute(
                    _claimed_rows(issue, batch, by)
                    .where(deliveries.c.subscriber_id.in_(ids[start : start + 500]))
                    .values(status=status, error=reason, attempts=deliveries.c.attempts + 1)
                )
                count += result.rowcount
    return count


def record_sent_ids(
    engine: Engine,
    issue: IssueRecord,
    batch: int,
    message_ids: Mapping[str, str],
    recipients: Sequence[Recipient],
    *,
    sent_at: datetime,
    by: str | None = None,
) -> int:
    """Settle the readers of `message_ids` (address → the provider's id for their message) as
    `sent`, each with their own id: a per-reader transport (SMTP) says which of its queue ids
    a reader's mail has, which is what an operator asks the relay about."""
    params = [
        {"sid": subscriber_id(r), "mid": message_ids[r.email][:200]}
        for r in recipients
        if r.email in message_ids
    ]
    if not params:
        return 0
    stmt = (
        _claimed_rows(issue, batch, by)
        .where(deliveries.c.subscriber_id == bindparam("sid"))
        .values(
            status="sent", error=None, sent_at=sent_at, message_id=bindparam("mid"),
            attempts=deliveries.c.attempts + 1,
        )
    )  # fmt: skip
    with engine.begin() as conn:
        return int(conn.execute(stmt, params).rowcount)


def release_batch(engine: Engine, issue: IssueRecord, batch: int, by: str | None = None) -> None:
    """Drop a batch's claimed rows: it certainly did not go out, so the next run claims afresh."""
    with engine.begin() as conn:
        conn.execute(delete(deliveries).where(*_claimed(issue, batch, by)))


def skip_uncertain(
    engine: Engine, issue: IssueRecord, batch: int, why: str, by: str | None = None
) -> int:
    """Settle a batch nobody can say went out as `skipped`, not re-sent (the policy's choice)."""
    error = (
        f"uncertain: {why} and the provider cannot say whether batch "
        f"{batch_key(issue, batch)} went out; not re-sent (DIGEST_AMBIGUOUS_BATCHES=skip)"
    )
    with engine.begin() as conn:
        result = conn.execute(_claimed_rows(issue, batch, by).values(status="skipped", error=error))
    log_event(log, "batch_uncertain", week=str(issue.week), batch=batch, recipients=result.rowcount)
    return int(result.rowcount)


def refused_reason(engine: Engine, issue: IssueRecord, transport: str) -> str | None:
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
        f"{transport} transport cannot send to {'their addresses' if many else 'the address'}"
        "; `digest deliveries ID` shows why — correct or remove the address"
    )
