"""The subscribers table: reading subscribers, and every change of a subscriber's row.

Status changes take their WHERE clauses from `digest.model.subscriber.TRANSITIONS`, so a
conditional UPDATE refuses what the table refuses even when two requests race. Sends no mail.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Executable,
    Table,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from digest.config import Settings
from digest.core.reader_input import clean_name, clean_timezone, normalise_email
from digest.model.subscriber import (
    PAUSABLE,
    STATUSES,
    SUPPRESSED,
    AlreadySuppressed,
    InvalidSubscriber,
    Subscriber,
    SubscriberEvent,
    SubscriberStatus,
    allowed_from,
    next_status,
    outcome,
    reported,
)
from digest.store.db import engagement, subscribers

__all__ = [
    "OptIn",
    "activate",
    "add_confirmed",
    "count_by_status",
    "end_pause",
    "erase",
    "get_subscriber",
    "list_subscribers",
    "mark_status",
    "pause_until",
    "release_confirmation",
    "search_subscribers",
    "set_profile",
    "set_tracking_opt_out",
    "start_opt_in",
    "unsubscribe_subscriber",
]


@dataclass(frozen=True, slots=True)
class OptIn:
    """What `start_opt_in` stored, and whether this request may send the confirmation mail."""

    subscriber: Subscriber
    # True when this request claimed the confirmation mail: none went out in the last
    # `confirm_resend_interval`, and the subscriber is pending.
    mail_due: bool
    # `confirm_sent_at` before the claim, for `release_confirmation` when the send fails.
    previous_confirm_sent_at: datetime | None = None


# --------------------------------------------------------------------------- reading


def get_subscriber(engine: Engine | Connection, email_or_id: str | int) -> Subscriber | None:
    """The subscriber with this id, or this address in any case; None when there is none."""
    if isinstance(email_or_id, int):
        condition = subscribers.c.id == email_or_id
    else:
        try:
            condition = subscribers.c.email == normalise_email(email_or_id)
        except InvalidSubscriber:
            return None
    with _connect(engine) as conn:
        row = conn.execute(select(subscribers).where(condition)).first()
    return Subscriber.from_row(row) if row else None


def list_subscribers(
    engine: Engine | Connection, status: SubscriberStatus | None = None
) -> list[Subscriber]:
    """Every subscriber (or those in `status`), oldest first."""
    query = select(subscribers).order_by(subscribers.c.id)
    if status is not None:
        query = query.where(subscribers.c.status == status)
    with _connect(engine) as conn:
        return [Subscriber.from_row(r) for r in conn.execute(query)]


def search_subscribers(
    engine: Engine | Connection, text: str, *, limit: int = 50
) -> list[Subscriber]:
    """Subscribers whose address contains `text` (any case), oldest first, at most `limit`.

    In the database, not over `list_subscribers`: the desk's search box must not read a list of
    a million readers to show fifty. `%` and `_` in `text` match themselves."""
    wanted = text.strip().casefold()
    query = (
        select(subscribers)
        .where(func.lower(subscribers.c.email).contains(wanted, autoescape=True))
        .order_by(subscribers.c.id)
        .limit(limit)
    )
    with _connect(engine) as conn:
        return [Subscriber.from_row(r) for r in conn.execute(query)]


def count_by_status(engine: Engine | Connection) -> dict[str, int]:
    """Subscribers per status, every status present (zero when none)."""
    query = select(subscribers.c.status, func.count()).group_by(subscribers.c.status)
    counts = dict.fromkeys(STATUSES, 0)
    with _connect(engine) as conn:
        for status, n in conn.execute(query):
            counts[status] = n
    return counts


# --------------------------------------------------------------------------- the opt-in


def start_opt_in(
    engine: Engine,
    settings: Settings,
    address: str,
    *,
    name: str | None,
    timezone: str | None,
    source: str,
    now: datetime,
) -> OptIn:
    """Store the opt-in of a normalised `address` and claim the right to send a confirmation.

    The claim is a conditional UPDATE, so two requests racing for the same address send one
    mail, not two. A mail is due once per `confirm_resend_interval`, to a pending subscriber.
    """
    with _one_writer(engine):
        for _attempt in range(2):
            try:
                with engine.begin() as conn:
                    return _opt_in(conn, settings, address, name, timezone, source, now)
            except IntegrityError:
                continue  # another request inserted the same address first: read theirs
    raise RuntimeError(f"could not store the subscription for {address}")


_writer_locks: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_writer_locks_lock = threading.Lock()


def _one_writer(engine: Engine) -> AbstractContextManager[object]:
    """For SQLite, one sign-up transaction of this process at a time.

    SQLite has one writer; a second transaction that finds the file locked waits in its busy
    handler, which sleeps 1, 2, 5, 10 … 100 ms between tries, so under load sign-ups queued
    for hundreds of milliseconds behind writes that take a fraction of one; a lock wakes the
    next the moment the last commits. PostgreSQL locks rows, not the database: no lock.
    """
    if engine.dialect.name != "sqlite":
        return nullcontext()
    with _writer_locks_lock:
        lock = _writer_locks.get(engine)
        if lock is None:
            lock = _writer_locks[engine] = threading.Lock()
    return lock


def release_confirmation(engine: Engine, claimed: Subscriber, previous: datetime | None) -> None:
    """Give back the claim of a confirmation mail that could not be sent (`claimed` is the
    subscriber as `start_opt_in` returned it, `previous` its `previous_confirm_sent_at`), so the
    person can try again at once instead of waiting out the resend interval."""
    with engine.begin() as conn:
        conn.execute(
            update(subscribers)
            .where(
                subscribers.c.id == claimed.id,
                subscribers.c.confirm_sent_at == claimed.confirm_sent_at,
            )
            .values(confirm_sent_at=previous)
        )


def activate(engine: Engine, subscriber_id: int, *, now: datetime) -> Subscriber | None:
    """Confirm a pending subscriber; returns the subscriber as stored now (None: gone)."""
    return _move(engine, subscriber_id, "confirm", confirmed_at=now, updated_at=now)


def add_confirmed(
    engine: Engine,
    email: str,
    *,
    name: str | None = None,
    timezone: str | None = None,
    source: str = "cli",
    now: datetime,
) -> tuple[Subscriber, bool]:
    """Add `email` as active without a confirmation mail (the operator vouches for consent).

    Returns (subscriber, changed). A pending address is activated; an active one is left alone.
    Raises `AlreadySuppressed` for an unsubscribed, bounced or complained address: only its
    owner can bring it back (or an operator who erased it first, on the owner's request).
    """
    address = normalise_email(email)
    name = clean_name(name)
    timezone = clean_timezone(timezone)
    with engine.begin() as conn:
        existing = get_subscriber(conn, address)
        if existing is None:
            conn.execute(
                insert(subscribers).values(
                    email=address,
                    name=name,
                    status=outcome("vouch"),
                    source=source,
                    timezone=timezone,
                    created_at=now,
                    confirmed_at=now,
                    updated_at=now,
                )
            )
            changed = True
        elif existing.status in SUPPRESSED:
            raise AlreadySuppressed(
                f"{address} is {existing.status}; only its owner can subscribe it again"
            )
        elif next_status(existing.status, "vouch") is not None:
            done = conn.execute(
                update(subscribers)
                .where(subscribers.c.id == existing.id, _may("vouch"))
                .values(status=outcome("vouch"), confirmed_at=now, updated_at=now)
            )
            changed = done.rowcount == 1
        else:
            changed = False
        current = get_subscriber(conn, address)
    assert current is not None
    return current, changed


# --------------------------------------------------------------------------- leaving


def unsubscribe_subscriber(
    engine: Engine, subscriber_id: int, *, now: datetime
) -> Subscriber | None:
    """Unsubscribe a pending or active subscriber the caller has already identified (an
    unsubscribe or preferences link); idempotent, and bounced or complained stay as they are."""
    return _move(engine, subscriber_id, "unsubscribe", unsubscribed_at=now, updated_at=now)


def mark_status(
    engine: Engine | Connection,
    subscriber_id: int,
    status: Literal["unsubscribed", "bounced", "complained"],
    now: datetime,
) -> Subscriber | None:
    """Record what the mail provider reported (the event webhook calls this).

    A complaint is final: later bounces or unsubscribes do not overwrite it. Returns the
    subscriber as stored now, or None when the id is unknown (erased).
    """
    if status not in SUPPRESSED:
        raise ValueError(f"mark_status sets unsubscribed, bounced or complained (got {status!r})")
    event = reported(status)
    stmt = update(subscribers).where(subscribers.c.id == subscriber_id, _may(event))
    with _connect(engine) as conn:
        conn.execute(stmt.values(status=outcome(event), updated_at=now))
        if status == "unsubscribed":
            conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id, subscribers.c.unsubscribed_at.is_(None))
                .values(unsubscribed_at=now)
            )
        return get_subscriber(conn, subscriber_id)


def erase(engine: Engine, email_or_id: str | int) -> bool:
    """Delete a subscriber and their personal data (GDPR erase); False when there was none.

    The delivery ledger and events keep their rows with `subscriber_id` set to NULL (the
    foreign keys say ON DELETE SET NULL), so counts survive without anyone's address; per-reader
    engagement rows (DIGEST_TRACKING_DETAIL=per-reader) are a history of the reader and go.
    """
    found = get_subscriber(engine, email_or_id)
    if found is None:
        return False
    with engine.begin() as conn:
        # Aggregate rows carry no subscriber id (and their keyed hash leads to no one): they stay.
        conn.execute(delete(engagement).where(engagement.c.subscriber_id == found.id))
        conn.execute(delete(subscribers).where(subscribers.c.id == found.id))
    return True


# --------------------------------------------------------------------------- the preference centre


def set_profile(
    engine: Engine, subscriber_id: int, *, name: str | None, timezone: str | None, now: datetime
) -> Subscriber | None:
    """Store an already cleaned display name and time zone; None when the subscriber is gone."""
    return _update(engine, subscriber_id, {"name": name, "timezone": timezone, "updated_at": now})


def pause_until(
    engine: Engine, subscriber_id: int, until: datetime, *, now: datetime
) -> Subscriber | None:
    """Skip issues until `until`, if the subscription can be paused (`PAUSABLE`): the
    subscriber as stored now, unpaused if their status no longer allows it; None when gone."""
    values = {"paused_until": until, "updated_at": now}
    return _update(engine, subscriber_id, values, subscribers.c.status.in_(sorted(PAUSABLE)))


def end_pause(engine: Engine, subscriber_id: int, *, now: datetime) -> Subscriber | None:
    """End a pause now, whatever the status; None when the subscriber is gone."""
    return _update(engine, subscriber_id, {"paused_until": None, "updated_at": now})


def set_tracking_opt_out(
    engine: Engine, subscriber_id: int, opt_out: bool, *, now: datetime
) -> Subscriber | None:
    """Say no (or yes again) to click and open tracking, whatever the status: the mails built
    after this carry none. None when the subscriber is gone."""
    return _update(engine, subscriber_id, {"tracking_opt_out": opt_out, "updated_at": now})


# --------------------------------------------------------------------------- private


def _may(event: SubscriberEvent) -> ColumnElement[bool]:
    """The WHERE condition of `event`: the row's status is one the table lets it change."""
    return subscribers.c.status.in_(sorted(allowed_from(event)))


def _move(
    engine: Engine, subscriber_id: int, event: SubscriberEvent, **stamps: datetime
) -> Subscriber | None:
    """Apply `event` to one subscriber if the table allows it from their status (a conditional
    UPDATE, so a racing change wins or loses whole); the subscriber as stored now."""
    with engine.begin() as conn:
        conn.execute(
            update(subscribers)
            .where(subscribers.c.id == subscriber_id, _may(event))
            .values(status=outcome(event), **stamps)
        )
        return get_subscriber(conn, subscriber_id)


def _opt_in(
    conn: Connection,
    settings: Settings,
    address: str,
    name: str | None,
    timezone: str | None,
    source: str,
    now: datetime,
) -> OptIn:
    new_row = insert(subscribers).values(
        email=address,
        name=name,
        status=outcome("subscribe"),
        source=source,
        timezone=timezone,
        created_at=now,
        updated_at=now,
    )
    born_sql = _BORN.get(conn.dialect.name)
    if born_sql is not None:
        # A new address is born with its claim, in one statement: no other request can hold a
        # claim on a row that did not exist, and a racing insert of the same address does
        # nothing here (PostgreSQL waits for it to commit) and the row is read below.
        born = conn.execute(
            born_sql,
            {
                "email": address,
                "name": name,
                "status": outcome("subscribe"),
                "source": source,
                "timezone": timezone,
                "now": now,
            },
        ).first()
        if born is not None:
            return OptIn(Subscriber.from_row(born), mail_due=True)
    existing = _by_address(conn, address)
    if existing is None and conn.dialect.insert_returning:
        # Read and insert, instead of read, insert, read, claim, read.
        row = conn.execute(new_row.values(confirm_sent_at=now).returning(*subscribers.c)).one()
        return OptIn(Subscriber.from_row(row), mail_due=True)
    if existing is None:
        conn.execute(new_row)
    elif next_status(existing.status, "subscribe") is not None:
        # Back through confirmation; the row now describes the new opt-in.
        conn.execute(
            update(subscribers)
            .where(subscribers.c.id == existing.id, _may("subscribe"))
            .values(
                status=outcome("subscribe"),
                name=name,
                timezone=timezone,
                source=source,
                confirmed_at=None,
                unsubscribed_at=None,
                updated_at=now,
            )
        )
    current = _by_address(conn, address)
    assert current is not None
    if current.status != "pending":  # active or suppressed: no confirmation is owed
        return OptIn(current, mail_due=False)
    due = now - timedelta(seconds=settings.confirm_resend_interval)
    claimed = conn.execute(
        update(subscribers)
        .where(
            subscribers.c.id == current.id,
            or_(subscribers.c.confirm_sent_at.is_(None), subscribers.c.confirm_sent_at <= due),
        )
        .values(confirm_sent_at=now)
    )
    if claimed.rowcount != 1:
        return OptIn(current, mail_due=False)
    claimed_row = get_subscriber(conn, current.id)
    assert claimed_row is not None
    return OptIn(claimed_row, mail_due=True, previous_confirm_sent_at=current.confirm_sent_at)


def _born(make: Callable[[Table], Any]) -> Executable:
    """INSERT … ON CONFLICT (email) DO NOTHING RETURNING the row, with its claim: built once,
    since building the statement cost more than running it."""
    c = subscribers.c
    now = bindparam("now", type_=c.created_at.type)
    return (  # type: ignore[no-any-return]
        make(subscribers)
        .values(
            email=bindparam("email", type_=c.email.type),
            name=bindparam("name", type_=c.name.type),
            status=bindparam("status", type_=c.status.type),
            source=bindparam("source", type_=c.source.type),
            timezone=bindparam("timezone", type_=c.timezone.type),
            created_at=now,
            updated_at=now,
            confirm_sent_at=now,
        )
        .on_conflict_do_nothing(index_elements=[c.email])
        .returning(*subscribers.c)
    )


# Per dialect with an INSERT … ON CONFLICT DO NOTHING (others read first, then insert).
_BORN: dict[str, Executable] = {"sqlite": _born(sqlite_insert), "postgresql": _born(pg_insert)}


def _by_address(conn: Connection, address: str) -> Subscriber | None:
    """`get_subscriber` for an address already normalised: not validated a second time."""
    row = conn.execute(select(subscribers).where(subscribers.c.email == address)).first()
    return Subscriber.from_row(row) if row else None


def _update(
    engine: Engine,
    subscriber_id: int,
    values: dict[str, Any],
    *conditions: ColumnElement[bool],
) -> Subscriber | None:
    with engine.begin() as conn:
        conn.execute(
            update(subscribers).where(subscribers.c.id == subscriber_id, *conditions).values(values)
        )
        return get_subscriber(conn, subscriber_id)


@contextmanager
def _connect(engine: Engine | Connection) -> Iterator[Connection]:
    """The caller's connection as it is, or a transaction of its own on an engine."""
    if isinstance(engine, Connection):
        yield engine
        return
    with engine.begin() as conn:
        yield conn
