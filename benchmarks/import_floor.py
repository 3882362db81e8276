"""The CSV floors: the least work any import or export of the same file must do, in digest's
place. Nothing of digest is imported here (nor benchmarks.common, which imports digest).

import: csv + email-validator (the normalisation digest applies: syntax only, no SMTPUTF8, lower
case) + one bulk upsert in one transaction: sqlite3 executemany `INSERT … ON CONFLICT DO UPDATE`,
or on PostgreSQL COPY into a temporary table and one `INSERT … SELECT … ON CONFLICT`. The upsert
keeps digest's rules (suppressed addresses untouched, status forward only), so both end with the
same table. export: select the rows in id order and write them with csv.writer.

    python -m benchmarks.import_floor import URL FILE   # prints the counts as JSON
    python -m benchmarks.import_floor export URL        # the CSV on stdout
"""

from __future__ import annotations

import csv
import json
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email

__all__ = ["export_floor", "import_floor"]

_SUPPRESSED = "('unsubscribed', 'bounced', 'complained')"
_STATUSES = frozenset({"pending", "active", "unsubscribed", "bounced", "complained"})


def _upsert(distinct: str, values: str) -> str:
    """The one statement: new rows take the file's status; existing ones move forward only."""
    new = "excluded"
    moves = f"(s.status = 'pending' AND {new}.status = 'active' OR {new}.status IN {_SUPPRESSED})"
    return f"""
INSERT INTO subscribers AS s (email, name, status, source, timezone, created_at, confirmed_at,
    unsubscribed_at, updated_at)
{values}
ON CONFLICT (email) DO UPDATE SET
    name = coalesce({new}.name, s.name),
    timezone = coalesce({new}.timezone, s.timezone),
    status = CASE WHEN {moves} THEN {new}.status ELSE s.status END,
    confirmed_at = CASE WHEN {new}.status = 'active' AND s.status = 'pending'
        THEN {new}.updated_at ELSE s.confirmed_at END,
    unsubscribed_at = CASE WHEN {new}.status = 'unsubscribed' THEN {new}.updated_at
        ELSE s.unsubscribed_at END,
    updated_at = {new}.updated_at
WHERE s.status NOT IN {_SUPPRESSED} AND (
    {new}.name IS NOT NULL AND {new}.name {distinct} s.name
    OR {new}.timezone IS NOT NULL AND {new}.timezone {distinct} s.timezone
    OR {moves})
"""


def _rows(path: str, counts: dict[str, int]) -> Iterator[tuple[str, str | None, str, str | None]]:
    """(email, name, status, timezone) of each good row; bad rows and repeats are counted."""
    seen: set[str] = set()
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, strict=True)
        header = [h.strip().lower() for h in next(reader)]
        at = {h: i for i, h in enumerate(header)}
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            try:
                email = validate_email(
                    cells[at["email"]].strip(), check_deliverability=False, allow_smtputf8=False
                ).normalized.lower()
            except EmailNotValidError:
                counts["errors"] += 1
                continue
            status = cells[at["status"]].strip().lower() if "status" in at else ""
            if status and status not in _STATUSES:
                counts["errors"] += 1
                continue
            if email in seen:
                counts["errors"] += 1
                continue
            seen.add(email)
            name = cells[at["name"]].strip() or None if "name" in at else None
            zone = cells[at["timezone"]].strip() or None if "timezone" in at else None
            counts["good"] += 1
            yield email, name, status or "active", zone


def _stamps(status: str, stamp: str) -> tuple[str | None, str | None]:
    """confirmed_at and unsubscribed_at of a new row."""
    return (stamp if status == "active" else None, stamp if status == "unsubscribed" else None)


def import_floor(url: str, path: str) -> dict[str, int]:
    """Import the file at `path` into the database at `url`; the counts, as digest reports them
    (the upsert cannot tell an unchanged row from a suppressed one it kept, so those are one)."""
    counts = {"good": 0, "errors": 0}
    if url.startswith("sqlite:///"):
        before, written, after = _import_sqlite(url, path, counts)
    else:
        before, written, after = _import_postgres(url, path, counts)
    added = after - before
    return {
        "added": added,
        "updated": written - added,
        "unchanged_or_kept": counts["good"] - written,
        "errors": counts["errors"],
    }


def _import_sqlite(url: str, path: str, counts: dict[str, int]) -> tuple[int, int, int]:
    # The text SQLAlchemy stores for a UTC datetime on SQLite.
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    before = int(conn.execute("SELECT count(*) FROM subscribers").fetchone()[0])
    changes = conn.total_changes
    statement = _upsert("IS NOT", "VALUES (?, ?, ?, 'import', ?, ?, ?, ?, ?)")
    with conn:
        conn.executemany(
            statement,
            ((e, n, s, z, stamp, *_stamps(s, stamp), stamp) for e, n, s, z in _rows(path, counts)),
        )
    written = conn.total_changes - changes
    after = int(conn.execute("SELECT count(*) FROM subscribers").fetchone()[0])
    conn.close()
    return before, written, after


def _import_postgres(url: str, path: str, counts: dict[str, int]) -> tuple[int, int, int]:
    import psycopg

    def count(pg: psycopg.Connection[Any]) -> int:
        row = pg.execute("SELECT count(*) FROM subscribers").fetchone()
        return int(row[0]) if row else 0

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as pg:
        before = count(pg)
        pg.execute(
            "CREATE TEMP TABLE incoming (line serial, email text, name text, status text, "
            "timezone text) ON COMMIT DROP"
        )
        with pg.cursor().copy("COPY incoming (email, name, status, timezone) FROM STDIN") as copy:
            for row in _rows(path, counts):
                copy.write_row(row)
        values = (
            "SELECT email, name, status, 'import', timezone, %(now)s, CASE WHEN status = "
            "'active' THEN %(now)s::timestamptz END, CASE WHEN status = 'unsubscribed' THEN "
            "%(now)s::timestamptz END, %(now)s FROM incoming ORDER BY line"
        )
        written = pg.execute(_upsert("IS DISTINCT FROM", values), {"now": datetime.now(UTC)})
        return before, written.rowcount, count(pg)


def export_floor(url: str, out: Any) -> int:
    """Write every subscriber as CSV to `out`, in id order; returns the row count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("email", "name", "status", "timezone", "language"))
    query = "SELECT email, name, status, timezone, language FROM subscribers ORDER BY id"
    written = 0
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        cursor = conn.execute(query)
        while page := cursor.fetchmany(5000):
            writer.writerows((e, n or "", s, z or "", lang or "") for e, n, s, z, lang in page)
            written += len(page)
        conn.close()
        return written
    import psycopg

    with (
        psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as pg,
        pg.cursor(name="export") as named,
    ):
        named.itersize = 5000
        named.execute(query)
        while page := named.fetchmany(5000):
            writer.writerows((e, n or "", s, z or "", lang or "") for e, n, s, z, lang in page)
            written += len(page)
    return written


def main(argv: list[str]) -> None:
    if argv[:1] == ["import"] and len(argv) == 3:
        print(json.dumps(import_floor(argv[1], argv[2])), flush=True)
    elif argv[:1] == ["export"] and len(argv) == 2:
        export_floor(argv[1], sys.stdout)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
