"""The delivery ledger: one `deliveries` row per reader and issue, claimed before the transport
sees its batch and settled (sent, failed, skipped, refused) after.

Each write is one committed transaction, so a run killed anywhere leaves rows the next run can
read: claimed-but-unsettled rows are a batch the provider may or may not have.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, Select, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from digest.config import Settings
from digest.core.headers import HeaderError
from digest.core.mails import Recipient
from digest.delivery.audience import claimed_between
from digest.delivery.lease import LostLease
from digest.delivery.personalise import issue_recipient, subscriber_id
from digest.logs import get_logger, log_event
from digest.model.issue import IssueRecord
from digest.store.db import deliveries, issues, subscribers

__all__ = [
    "ClaimedBatch",
    "OpenRow",
    "batch_key",
    "claim_batch",
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


# --------------------------------------------------------------------------- claiming


@dataclass
class ClaimedBatch:
    """What `claim_batch` wrote: the readers to send to now, and the rows settled at once."""

    recipients: list[Recipient] = field(default_factory=list)
    batch: int = 0  # the batch number the rows carry
    last_id: int = 0  # the page's last subscriber id: where the next page starts
    rows: int = 0
    skipped: int = 0  # paused readers
    refused: int = 0  # addresses no mail header can hold


def claim_batch(
    engine: Engine,
    settings: Settings,
    issue: IssueRecord,
    batch: int | None,
    page: Select[Any],
    *,
    now: datetime,
    claimed_at: datetime,
    claimed_by: str | None = None,
    shared: bool = False,
) -> ClaimedBatch | None:
    """Claim the readers of `page` (an `audience_page`) as batch `batch`, in one committed
    transaction, for sender `claimed_by`; None when the page is empty (the audience is done).

    Readers an earlier run claimed are passed over (a resume walks the list from the start
    again); a reader paused at `now` is settled `skipped`, and one whose stored address no mail
    header can hold `refused`. LostLease when a second sender inserted the same rows.

    `shared` (a shared send on PostgreSQL): the page's subscriber rows are locked FOR NO KEY
    UPDATE SKIP LOCKED, so senders claiming at the same moment take disjoint readers instead
    of waiting for each other, and `batch` is None: the number is the issue's next, taken
    under the issue row's lock so two senders never name two batches alike.
    """
    claimed = ClaimedBatch()
    rows: list[tuple[Any, ...]] = []
    if shared:
        page = page.with_for_update(skip_locked=True, key_share=True, of=subscribers)
    try:
        with engine.begin() as conn:
            found = conn.execute(page).all()
            if not found:
                return None
            done = set(conn.execute(claimed_between(issue, found[0][0], found[-1][0])).scalars())
            stamp = _bound(conn, deliveries.c.claimed_at, claimed_at)
            append, issue_id = claimed.recipients.append, issue.id
            for sid, email, name, paused_until, opt_out in found:
                if sid in done:
                    continue
                status, error = "claimed", None
                if paused_until is not None and paused_until > now:
                    status, error = "skipped", f"paused until {paused_until.isoformat()}"
                    claimed.skipped += 1
                else:
                    try:
                        append(
                            issue_recipient(
                                settings, issue, sid, email, name, tracking_opt_out=opt_out
                            )
                        )
                    except HeaderError as exc:
                        # A stored address no mail header can hold (a raw line break): final
                        # for this reader, and the rest of the batch goes on.
                        status, error = "refused", f"the stored address cannot be sent to: {exc}"
                        claimed.refused += 1
                rows.append((issue_id, sid, status, error))
            if rows:
                batch = batch if batch is not None else _next_batch(conn, issue)
                _insert_claims(conn, issue_id, batch, stamp, claimed_by, rows)
                claimed.batch = batch
    except IntegrityError:
        # Only a second sender inserting the same (issue, subscriber) gets here.
        raise LostLease() from None
    claimed.rows = len(rows)
    claimed.last_id = found[-1][0]
    if not rows and batch is not None:
        claimed.batch = batch
    return claimed


_CLAIM_COLUMNS = (
    "issue_id",
    "subscriber_id",
    "batch",
    "status",
    "attempts",
    "error",
    "claimed_at",
    "claimed_by",
)


def _next_batch(conn: Connection, issue: IssueRecord) -> int:
    """The issue's next batch number, for a shared send: the issue row's lock (held to the
    claim's commit) makes the senders number their batches one after another."""
    conn.execute(select(issues.c.id).where(issues.c.id == issue.id).with_for_update())
    latest = conn.execute(
        select(func.coalesce(func.max(deliveries.c.batch), 0)).where(
            deliveries.c.issue_id == issue.id
        )
    ).scalar_one()
    return 1 + int(latest)


def _insert_claims(
    conn: Connection,
    issue_id: int,
    batch: int,
    claimed_at: Any,
    claimed_by: str | None,
    rows: list[tuple[Any, ...]],
) -> None:
    """Insert a page's ledger rows ((issue id, subscriber id, status, error) tuples) in one go.

    Through the driver, not SQLAlchemy's executemany, which builds and type-processes a
    parameter dict per row (a large share of a send's per-reader cost): on SQLite one
    executemany of the tuples; on PostgreSQL one statement over arrays (unnest), so a page is
    one round trip, not one per row.
    """
    columns = ", ".join(_CLAIM_COLUMNS)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"INSERT INTO {deliveries.name} ({columns}) "
            "SELECT %s, t.sid, %s, t.status, 0, t.error, %s, %s "
            "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS t(sid, status, error)",
            (
                issue_id,
                batch,
                claimed_at,
                claimed_by,
                [row[1] for row in rows],
                [row[2] for row in rows],
                [row[3] for row in rows],
            ),
        )
        return
    marks = ", ".join(["?"] * len(_CLAIM_COLUMNS))
    conn.exec_driver_sql(
        f"INSERT INTO {deliveries.name} ({columns}) VALUES ({marks})",
        [
            (i, sid, batch, status, 0, error, claimed_at, claimed_by)
            for i, sid, status, error in rows
        ],
    )


def _bound(conn: Connection, column: Any, value: Any) -> Any:
    """`value` as `column`'s type writes it (SQLite keeps datetimes as text), for a statement
    that goes to the driver as it is."""
    # The dialect's own implementation: the type's generic one would hand SQLite a datetime,
    # which sqlite3's deprecated default adapter writes in another text form.
    process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process(value) if process is not None else value


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
    by_reason: dict[str, list[int]] = {}
    for recipient in recipients:
        if recipient.email in refused:
            by_reason.setdefault(refused[recipient.email], []).append(subscriber_id(recipient))
    count = 0
    with engine.begin() as conn:
        for reason, ids in by_reason.items():
            result = conn.execute(
                _claimed_rows(issue, batch, by)
                .where(deliveries.c.subscriber_id.in_(ids))
                .values(status="refused", error=reason, attempts=deliveries.c.attempts + 1)
            )
            count += result.rowcount
    # Subscriber ids, never addresses: this ends up in logs.
    log_event(
        log,
        "batch_refused",
        level=logging.WARNING,
        week=str(issue.week),
        batch_key=batch_key(issue, batch),
        subscriber_ids=sorted(i for ids in by_reason.values() for i in ids),
        transport=transport,
    )
    return count


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
