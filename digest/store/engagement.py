"""Opens and clicks as stored: one row per (issue, kind, link, keyed reader, machine?), counted.

The smallest version the click redirect needs (record, last_click_at); the "events" side of
issue 16 owns this module and its issue_numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from digest.store.db import engagement

__all__ = ["Kind", "last_click_at", "record"]

Kind = Literal["open", "click"]


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
    """Count one open or click; True when this (issue, kind, link, reader, machine) row is new.

    One statement (INSERT … ON CONFLICT DO UPDATE), so two requests at once count twice and
    never fail; a new row starts at hits 1, which is how RETURNING tells new from counted.
    """
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(engagement).values(
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
    upsert = stmt.on_conflict_do_update(
        index_elements=["issue_id", "kind", "link_index", "reader_key", "machine"],
        set_={"hits": engagement.c.hits + 1, "last_at": now},
    ).returning(engagement.c.hits)
    with engine.begin() as conn:
        hits = conn.execute(upsert).scalar_one()
    return bool(hits == 1)


def last_click_at(
    engine: Engine, issue_id: int, reader_key: str, *, other_than: int | None = None
) -> datetime | None:
    """When this reader's latest click in the issue (human or machine) was counted: the burst
    rule compares the next click with it. `other_than`: leave that link's clicks out (a reader
    clicking one link twice is no burst of links)."""
    query = select(func.max(engagement.c.last_at)).where(
        engagement.c.issue_id == issue_id,
        engagement.c.kind == "click",
        engagement.c.reader_key == reader_key,
    )
    if other_than is not None:
        query = query.where(engagement.c.link_index != other_than)
    with engine.connect() as conn:
        latest: datetime | None = conn.execute(query).scalar_one()
    return latest
