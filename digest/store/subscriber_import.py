"""The writing half of a CSV import: checked rows into the subscribers table, a chunk at a time,
with the counts exact and the never-resurrect rules of `digest.model.subscriber` applied.

`digest.store.subscriber_csv` reads and checks the file and hands the good rows here in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from digest.model.subscriber import (
    SUPPRESSED,
    SubscriberStatus,
    imported,
    next_status,
    outcome,
)
from digest.store.db import subscribers

__all__ = ["CHUNK_ROWS", "BulkImport", "ImportRow", "bulk_import"]

# Rows per round trip: large enough that a statement's fixed cost vanishes, small enough that a
# chunk (its rows, the rows it matches, the statements' parameters) stays a few MB.
CHUNK_ROWS = 5000

_SEEN = "digest_import_seen"
_INSERTED = (
    "email",
    "name",
    "status",
    "source",
    "timezone",
    "language",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "updated_at",
)


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One checked row of the file: `email` normalised, `line` where the row starts."""

    line: int
    email: str
    name: str | None
    status: SubscriberStatus
    timezone: str | None
    end_line: int | None = None  # the last line of a row that runs on inside a quoted cell
    # The reader's language (a locale with a catalogue); None keeps what they chose, if anything.
    language: str | None = None


class BulkImport:
    """The import's writes on one connection, in its one transaction: `write` a chunk at a time.

    Each chunk costs a few statements whatever its size: the chunk's addresses are looked up
    in one SELECT, the new ones inserted with one COPY (PostgreSQL) or executemany (SQLite) and
    the changed ones updated with one executemany, through the DBAPI with `now` converted by
    the column's own type once, not per row (SQLAlchemy's per-row bind processing cost more
    than the database's work). The decisions
    are made here in Python from `TRANSITIONS`, exactly as for a single address.

    An address that appears twice in the file is reported at its second line; the lines of
    addresses already written live in a temporary table, not in memory, so a file of ten
    million rows needs no more memory than one of ten thousand.
    """

    def __init__(self, conn: Connection, now: datetime) -> None:
        self.added = self.updated = self.unchanged = self.kept_suppressed = 0
        self._conn = conn
        self._sqlite = conn.dialect.name == "sqlite"
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        self._now = _bound(conn, now)
        self._insert = (
            f"INSERT INTO subscribers ({', '.join(_INSERTED)}) VALUES "
            f"({', '.join([mark] * len(_INSERTED))})"
        )
        # None keeps a column as it is: only what changed is written.
        self._update = (
            f"UPDATE subscribers SET name = COALESCE({mark}, name), "
            f"timezone = COALESCE({mark}, timezone), language = COALESCE({mark}, language), "
            f"status = COALESCE({mark}, status), "
            f"confirmed_at = COALESCE({mark}, confirmed_at), "
            f"unsubscribed_at = COALESCE({mark}, unsubscribed_at), updated_at = {mark} "
            f"WHERE id = {mark}"
        )
        # One parameter for the whole chunk: SQLite caps a statement's parameters (999 in older
        # builds), PostgreSQL takes an array.
        among = "IN (SELECT value FROM json_each(?))" if self._sqlite else "= ANY(%s)"
        self._existing = (
            f"SELECT id, email, name, status, timezone, language FROM subscribers "
            f"WHERE email {among}"
        )
        self._seen_lines = f"SELECT email, line FROM {_SEEN} WHERE email {among}"
        self._remember = f"INSERT INTO {_SEEN} (email, line) VALUES ({mark}, {mark})"

    def open(self) -> None:
        # SQLite keeps a temporary table per connection, and a pooled connection may still hold
        # one from an import that was rolled back; PostgreSQL drops it with the transaction.
        if self._sqlite:
            self._sql(f"DROP TABLE IF EXISTS temp.{_SEEN}")
            self._sql(f"CREATE TEMP TABLE {_SEEN} (email TEXT PRIMARY KEY, line INTEGER NOT NULL)")
        else:
            self._sql(
                f"CREATE TEMP TABLE {_SEEN} (email TEXT PRIMARY KEY, line INTEGER NOT NULL) "
                "ON COMMIT DROP"
            )

    def close(self) -> None:
        if self._sqlite:
            self._sql(f"DROP TABLE IF EXISTS temp.{_SEEN}")

    def write(self, rows: Sequence[ImportRow]) -> list[tuple[ImportRow, int]]:
        """Import `rows` (in file order); returns the rows left out as repeats, each with the
        line where its address first appeared."""
        first: dict[str, ImportRow] = {}
        repeats: list[tuple[ImportRow, int]] = []
        later: list[ImportRow] = []
        for row in rows:
            if row.email in first:
                later.append(row)
            else:
                first[row.email] = row
        if not first:
            return repeats
        emails = list(first)
        earlier = dict(self._sql(self._seen_lines, self._among(emails)).all())
        for row in later:
            repeats.append((row, earlier.get(row.email, first[row.email].line)))
        for email, line in earlier.items():
            repeats.append((first.pop(email), line))
        if not first:
            return repeats
        self._many(
            self._remember, _SEEN, ("email", "line"), [(r.email, r.line) for r in first.values()]
        )
        existing = {
            email: (sid, name, status, zone, language)
            for sid, email, name, status, zone, language in self._sql(
                self._existing, self._among(list(first))
            )
        }
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        now = self._now
        for row in first.values():
            event = imported(row.status)
            found = existing.get(row.email)
            if found is None:
                status = outcome(event)  # a new address takes the file's status
                inserts.append(
                    (
                        row.email,
                        row.name,
                        status,
                        "import",
                        row.timezone,
                        row.language,
                        now,
                        now if status == "active" else None,
                        now if status == "unsubscribed" else None,
                        now,
                    )
                )
                continue
            sid, name, current, zone, language = found
            if current in SUPPRESSED:  # never brought back, nor its name or zone changed
                if row.status != current:
                    self.kept_suppressed += 1
                else:
                    self.unchanged += 1
                continue
            new_name = row.name if row.name is not None and row.name != name else None
            new_zone = row.timezone if row.timezone is not None and row.timezone != zone else None
            new_language = row.language if row.language not in (None, language) else None
            # Status moves forward only: pending → active, anything → suppressed; never
            # active → pending.
            moved = next_status(current, event)
            if new_name is None and new_zone is None and new_language is None and moved is None:
                self.unchanged += 1
                continue
            updates.append(
                (
                    new_name,
                    new_zone,
                    new_language,
                    moved,
                    now if moved == "active" else None,
                    now if moved == "unsubscribed" else None,
                    now,
                    sid,
                )
            )
        if inserts:
            self._many(self._insert, "subscribers", _INSERTED, inserts)
            self.added += len(inserts)
        if updates:
            self._conn.exec_driver_sql(self._update, updates)
            self.updated += len(updates)
        return repeats

    def _many(
        self, statement: str, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> None:
        """Insert `rows`: with COPY on PostgreSQL, where even a pipelined executemany costs a
        round of the protocol per row (most of the import's time in the database), else with
        `statement` through executemany."""
        if self._sqlite:
            self._conn.exec_driver_sql(statement, rows)
            return
        raw: Any = self._conn.connection.driver_connection
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def _among(self, emails: list[str]) -> tuple[Any]:
        return (orjson.dumps(emails).decode(),) if self._sqlite else (emails,)

    def _sql(self, statement: str, params: tuple[Any, ...] = ()) -> Any:
        return self._conn.exec_driver_sql(statement, params)


@contextmanager
def bulk_import(conn: Connection, now: datetime) -> Iterator[BulkImport]:
    """A `BulkImport` on `conn`, its temporary table made first and dropped after."""
    writer = BulkImport(conn, now)
    writer.open()
    yield writer
    writer.close()


def _bound(conn: Connection, now: datetime) -> Any:
    """`now` as the DBAPI takes it for a timestamp column (a string on SQLite)."""
    kind = subscribers.c.created_at.type
    process: Callable[[Any], Any] | None = kind.dialect_impl(conn.dialect).bind_processor(
        conn.dialect
    )
    return process(now) if process is not None else now
