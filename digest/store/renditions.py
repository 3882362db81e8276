"""An issue's renditions: its mail in each other language its readers chose, stored beside it.

The issue row keeps the newsletter's own language; a rendition is written with it by the build
(`replace_renditions`, in the same transaction as the issue) and read by the send. Like the
issue's content it is frozen once sending starts: a build can no longer replace it then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, insert, select

from digest.store.db import issue_renditions

__all__ = ["Rendition", "get_renditions", "replace_renditions"]


@dataclass(frozen=True, slots=True)
class Rendition:
    """One issue's mail (and archive page) in `locale`, with its per-reader markers in place."""

    locale: str
    subject: str
    preheader: str
    html: str
    text: str
    archive_html: str | None = None


def replace_renditions(conn: Connection, issue_id: int, renditions: Sequence[Rendition]) -> None:
    """Make `renditions` the issue's, in the caller's transaction (a build's save)."""
    conn.execute(delete(issue_renditions).where(issue_renditions.c.issue_id == issue_id))
    if renditions:
        conn.execute(
            insert(issue_renditions),
            [
                {
                    "issue_id": issue_id,
                    "locale": r.locale,
                    "subject": r.subject,
                    "preheader": r.preheader,
                    "html": r.html,
                    "text": r.text,
                    "archive_html": r.archive_html,
                }
                for r in renditions
            ],
        )


def get_renditions(engine: Engine | Connection, issue_id: int) -> dict[str, Rendition]:
    """The issue's renditions by locale (empty: every reader gets the issue's own)."""
    query = select(
        issue_renditions.c.locale,
        issue_renditions.c.subject,
        issue_renditions.c.preheader,
        issue_renditions.c.html,
        issue_renditions.c.text,
        issue_renditions.c.archive_html,
    ).where(issue_renditions.c.issue_id == issue_id)
    if isinstance(engine, Connection):
        rows = engine.execute(query).all()
    else:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    return {row[0]: Rendition(*row) for row in rows}
