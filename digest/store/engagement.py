"""Storage of engagement: opens and clicks counted once per (issue, link, reader key, machine?),
and the per-issue numbers `digest stats` and the desk show, read from the ledger and the events.

Rows carry a keyed reader hash, not a subscriber, unless DIGEST_TRACKING_DETAIL=per-reader; then
`subscriber_id` is set too, and erasing the reader deletes those rows (`subscribers.erase`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, and_, distinct, func, select
from sqlalchemy.dialects import postgresql, sqlite

from digest.model.weeks import parse_week
from digest.store.db import deliveries, engagement, events, issues, subscribers
from digest.store.deliveries import issue_deliveries

__all__ = [
    "COUNT_KEYS",
    "Kind",
    "issue_numbers",
    "last_click_at",
    "rates",
    "record",
    "record_on",
]

Kind = Literal["open", "click"]

# The per-issue numbers, in the order `digest stats` prints them; other tools read these names.
COUNT_KEYS = (
    "recipients",
    "delivered",
    "bounced",
    "opens_unique",
    "opens_machine",
    "clicks_unique",
    "clicks_machine",
    "unsubscribed",
    "complaints",
)
_KEY_COLUMNS = ("issue_id", "kind", "link_index", "reader_key", "machine")


def record(
    engine: Engine,
    *,
    issue_id: int,
    kind: Kind,
    link_index: int,
    reader_key: str,
    machine: bool,
    subscriber_id: int | None,
    now: datetime,
) -> bool:
    """Count one open or click; True when this (issue, kind, link, reader, machine) is new.

    One upsert statement, so two requests racing on one reader cannot both see "new".
    """
    with engine.begin() as conn:
        return record_on(
            conn,
            issue_id=issue_id,
            kind=kind,
            link_index=link_index,
            reader_key=reader_key,
            machine=machine,
            subscriber_id=subscriber_id,
            now=now,
        )


def record_on(
    conn: Connection,
    *,
    issue_id: int,
    kind: Kind,
    link_index: int,
    reader_key: str,
    machine: bool,
    subscriber_id: int | None,
    now: datetime,
) -> bool:
    """`record` inside the caller's transaction (the webhook stores an event and its count
    together, so a batch SendGrid re-posts after a crash counts once)."""
    if kind not in ("open", "click"):
        raise ValueError(f"engagement kind is open or click (got {kind!r})")
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = (
        insert(engagement)
        .values(
            issue_id=issue_id,
            kind=kind,
            link_index=link_index,
            reader_key=reader_key,
            machine=machine,
            subscriber_id=subscriber_id,
            hits=1,
            first_at=now,
            last_at=now,
        )
        .on_conflict_do_update(
            index_elements=[engagement.c[name] for name in _KEY_COLUMNS],
            set_={"hits": engagement.c.hits + 1, "last_at": now},
        )
        .returning(engagement.c.hits)
    )
    # A new row starts at one hit; a counted-again row has two or more.
    return int(conn.execute(stmt).scalar_one()) == 1


def last_click_at(
    engine: Engine, issue_id: int, reader_key: str, *, other_than: int | None = None
) -> datetime | None:
    """When this reader's links in this issue were last fetched (human or machine): the click
    burst rule compares a new click with it. `other_than`: leave that link's clicks out (a
    reader clicking one link twice is no burst of links)."""
    query = select(func.max(engagement.c.last_at)).where(
        engagement.c.issue_id == issue_id,
        engagement.c.kind == "click",
        engagement.c.reader_key == reader_key,
    )
    if other_than is not None:
        query = query.where(engagement.c.link_index != other_than)
    with engine.connect() as conn:
        found: datetime | None = conn.execute(query).scalar_one_or_none()
        return found


def issue_numbers(engine: Engine, issue_id: int) -> dict[str, Any]:
    """One issue's numbers: the `COUNT_KEYS`, `clicks_by_link` (target URL → unique human
    clicks, every tracked link listed) and the `rates` (see there); {} for an unknown issue."""
    with engine.connect() as conn:
        issue = conn.execute(
            select(issues.c.week, issues.c.links, issues.c.send_started_at).where(
                issues.c.id == issue_id
            )
        ).first()
    if issue is None:
        return {}
    # Recipients and bounces as `digest deliveries` counts them (one definition of each).
    ledger = issue_deliveries(engine, parse_week(issue.week))
    if ledger is None:  # pragma: no cover - the row was just read
        return {}
    with engine.connect() as conn:
        numbers: dict[str, Any] = {
            "recipients": ledger.sent,
            "delivered": _delivered(conn, issue_id),
            "bounced": ledger.bounced,
        }
        numbers.update(_engagement_counts(conn, issue_id))
        numbers["unsubscribed"] = _unsubscribed_after(
            conn, issue_id, issue.week, issue.send_started_at
        )
        numbers["complaints"] = _count(
            conn,
            select(func.count()).where(
                events.c.issue_id == issue_id, events.c.kind == "spamreport"
            ),
        )
        numbers["clicks_by_link"] = _clicks_by_link(conn, issue_id, issue.links)
    numbers.update(rates(numbers))
    return {key: numbers[key] for key in (*COUNT_KEYS, "clicks_by_link", *_RATE_KEYS)}


_RATE_KEYS = (
    "rate_base",
    "open_rate",
    "click_rate",
    "bounce_rate",
    "unsubscribe_rate",
    "complaint_rate",
)


def rates(numbers: dict[str, Any]) -> dict[str, Any]:
    """The rates of `numbers`: opens, clicks, unsubscribes and complaints per delivered mail —
    or per recipient when no delivery event came in (the outbox, a webhook not set up), which
    `rate_base` names —; bounces always per recipient. None where the base is zero."""
    base_name = "delivered" if numbers["delivered"] else "recipients"
    base = int(numbers[base_name])

    def share(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "rate_base": base_name,
        "open_rate": share(numbers["opens_unique"], base),
        "click_rate": share(numbers["clicks_unique"], base),
        "bounce_rate": share(numbers["bounced"], int(numbers["recipients"])),
        "unsubscribe_rate": share(numbers["unsubscribed"], base),
        "complaint_rate": share(numbers["complaints"], base),
    }


def _count(conn: Connection, query: Any) -> int:
    return int(conn.execute(query).scalar_one() or 0)


def _delivered(conn: Connection, issue_id: int) -> int:
    """Delivered mails: one per reader (an erased reader's event, with no subscriber left,
    still counts once)."""
    where = and_(events.c.issue_id == issue_id, events.c.kind == "delivered")
    named = _count(conn, select(func.count(distinct(events.c.subscriber_id))).where(where))
    erased = _count(conn, select(func.count()).where(where, events.c.subscriber_id.is_(None)))
    return named + erased


def _engagement_counts(conn: Connection, issue_id: int) -> dict[str, int]:
    """Readers (distinct keys) who opened or clicked, humans and machines apart; a reader whose
    mail a machine opened and who opened it too counts once on each side."""
    rows = conn.execute(
        select(
            engagement.c.kind, engagement.c.machine, func.count(distinct(engagement.c.reader_key))
        )
        .where(engagement.c.issue_id == issue_id)
        .group_by(engagement.c.kind, engagement.c.machine)
    ).all()
    found = {(kind, bool(machine)): int(n) for kind, machine, n in rows}
    return {
        "opens_unique": found.get(("open", False), 0),
        "opens_machine": found.get(("open", True), 0),
        "clicks_unique": found.get(("click", False), 0),
        "clicks_machine": found.get(("click", True), 0),
    }


def _clicks_by_link(conn: Connection, issue_id: int, links: list[str] | None) -> dict[str, int]:
    """Target URL → human readers who followed it. A URL the mail holds twice is one target:
    its readers are counted once across both places."""
    if not links:
        return {}
    readers: dict[str, set[str]] = {url: set() for url in links}
    rows = conn.execute(
        select(engagement.c.link_index, engagement.c.reader_key)
        .where(
            engagement.c.issue_id == issue_id,
            engagement.c.kind == "click",
            engagement.c.machine.is_(False),
        )
        .distinct()
    )
    for index, key in rows:
        if 0 <= index < len(links):
            readers[links[index]].add(key)
    return {url: len(keys) for url, keys in readers.items()}


def _unsubscribed_after(
    conn: Connection, issue_id: int, week: str, started: datetime | None
) -> int:
    """Recipients of this issue who unsubscribed after it went out and before the next issue
    did (by any way: the link, List-Unsubscribe, SendGrid's own). Erased readers are gone."""
    if started is None:
        return 0
    next_start = conn.execute(
        select(func.min(issues.c.send_started_at)).where(
            issues.c.week > week, issues.c.send_started_at.is_not(None)
        )
    ).scalar_one_or_none()
    query = (
        select(func.count())
        .select_from(deliveries.join(subscribers, deliveries.c.subscriber_id == subscribers.c.id))
        .where(
            deliveries.c.issue_id == issue_id,
            deliveries.c.status == "sent",
            subscribers.c.unsubscribed_at >= started,
        )
    )
    if next_start is not None:
        query = query.where(subscribers.c.unsubscribed_at < next_start)
    return _count(conn, query)
