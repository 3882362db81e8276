"""Claiming a page of readers as a batch: the ledger rows written before the transport sees it.

One committed transaction a page: the readers to send to are `claimed`, paused ones `skipped`,
addresses no header can hold `refused` — through the driver in one statement, since this is
the part of a send that runs once per reader (`digest.delivery.ledger` settles what it wrote).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, func, select
from sqlalchemy.exc import IntegrityError

from digest.config import Settings
from digest.core.headers import HeaderError
from digest.core.mails import Recipient
from digest.delivery.audience import claimed_between
from digest.delivery.lease import LostLease
from digest.delivery.personalise import issue_recipient
from digest.model.issue import IssueRecord
from digest.store.db import deliveries, issues, subscribers

__all__ = ["ClaimedBatch", "claim_batch"]


@dataclass
class ClaimedBatch:
    """What `claim_batch` wrote: the readers to send to now, and the rows settled at once."""

    recipients: list[Recipient] = field(default_factory=list)
    batch: int = 0  # the batch number the rows carry
    last_id: int = 0  # the page's last subscriber id: where the next page starts
    rows: int = 0
    skipped: int = 0  # paused readers
    refused: int = 0  # addresses no mail header can hold
    locale: str | None = None  # the rendition they were claimed for (None: the issue's own)


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
    locale: str | None = None,
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

    `issue` is the content the page's readers get (their rendition, `languages.Contents`) and
    `locale` its language, written on every row: a resumed batch sends what it was claimed for.
    """
    claimed = ClaimedBatch(locale=locale)
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
                _insert_claims(conn, issue_id, batch, stamp, claimed_by, locale, rows)
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
    "locale",
)


def _next_batch(conn: Connection, issue: IssueRecord) -> int:
    """The issue's next batch number, for a shared send: the issue row's lock (held to the
    claim's commit) makes the senders number their batches one after another."""
    # FOR NO KEY UPDATE: it queues the senders' claims behind each other, not the foreign-key
    # checks of rows that merely name the issue (events, engagement).
    conn.execute(select(issues.c.id).where(issues.c.id == issue.id).with_for_update(key_share=True))
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
    locale: str | None,
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
            "SELECT %s, t.sid, %s, t.status, 0, t.error, %s, %s, %s "
            "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS t(sid, status, error)",
            (
                issue_id,
                batch,
                claimed_at,
                claimed_by,
                locale,
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
            (i, sid, batch, status, 0, error, claimed_at, claimed_by, locale)
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
