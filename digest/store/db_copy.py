"""Copying a whole digest database into an empty one (SQLite up to PostgreSQL, or back): every
table in one target transaction, checked row for row before it commits.

`digest db copy` is how a deployment moves from its SQLite file to PostgreSQL. The copy keeps
every primary key, so deliveries, events and engagement still point at the same issues and
readers, and so links already mailed (which name ids) keep working.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Table,
    Text,
    bindparam,
    cast,
    false,
    func,
    insert,
    inspect,
    select,
    text,
    type_coerce,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from digest.store import db
from digest.store.jobs import JOBS_TABLE, make_jobstore

__all__ = [
    "CopyFailed",
    "CopyRefused",
    "CopyReport",
    "Progress",
    "TableCopy",
    "copy_database",
    "shown_url",
]

# Rows per read from the source and per executemany on the target: large enough that the
# round trips do not dominate, small enough that memory stays flat however long the table is.
CHUNK = 2000

# `progress(note, done, total)`: work units are rows, each counted when written and again when
# read back for the check, so `total` is twice the source's rows.
Progress = Callable[[str, int, int], None]

_HASH_BITS = 128


class CopyRefused(Exception):
    """The copy was not started, and nothing was written to the target; the message says why."""


class CopyFailed(Exception):
    """The copy went wrong and its transaction was rolled back: the target holds no row."""


@dataclass(frozen=True, slots=True)
class TableCopy:
    """One table's copy as checked: its rows and checksum in the source and in the target.

    The checksum is an order-independent sum of a hash of every whole row, as SQLAlchemy reads
    it (datetimes as aware UTC values, JSON as its stored text), so equal sums mean the same set
    of rows, every column of every row, not just as many of them.
    """

    name: str
    rows: int
    copied: int
    source_sum: int
    target_sum: int

    @property
    def verified(self) -> bool:
        return self.rows == self.copied and self.source_sum == self.target_sum

    @property
    def checksum(self) -> str:
        return f"{self.target_sum:032x}"[:12]


@dataclass(frozen=True, slots=True)
class CopyReport:
    tables: tuple[TableCopy, ...]

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def shown_url(url: str | URL) -> str:
    """A database URL fit for a terminal or a log: its password masked."""
    return make_url(url).render_as_string(hide_password=True)


def copy_database(
    source: Engine,
    target: Engine,
    *,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy every digest table (and the scheduler's stored job) from `source` into `target`.

    `target` is first brought to the schema head; a target whose tables hold any row is refused
    before anything is written to it. The rows go in foreign-key order in one transaction,
    which commits only when every table reads back with the source's row count and checksum;
    on PostgreSQL the id sequences are then moved past the copied ids. Raises `CopyRefused`
    (nothing written) or `CopyFailed` (rolled back); a database error mid-copy propagates
    after the rollback, leaving the target's tables as empty as they were.
    """
    _refuse_same_database(source, target)
    _refuse_unmigrated(source)
    tick = progress or (lambda note, done, total: None)
    with source.connect() as src:
        _one_snapshot(src)
        tables = _tables(src)
        occupied = _occupied(target, tables)
        if occupied:
            raise CopyRefused(_occupied_message(occupied))
        _prepare_schema(target, tables)
        totals = {t.name: _count(src, t) for t in tables}
        total = 2 * sum(totals.values())
        done = 0
        sums: dict[str, int] = {}
        with target.begin() as dst:
            _lock(dst)
            occupied = _occupied(dst, tables)  # a writer got in between: still nothing written
            if occupied:
                raise CopyRefused(_occupied_message(occupied))
            for table in tables:
                sums[table.name] = 0
                for rows in _chunks(src, table, chunk):
                    _insert(dst, table, rows)
                    sums[table.name] = _add(sums[table.name], rows)
                    done += len(rows)
                    tick(table.name, done, total)
            if dst.dialect.name == "postgresql":
                _reset_sequences(dst)
            checked = []
            for table in tables:
                copied, target_sum = 0, 0
                for rows in _chunks(dst, table, chunk, ordered=False):
                    copied += len(rows)
                    target_sum = _add(target_sum, rows)
                    done += len(rows)
                    tick(f"checking {table.name}", done, total)
                checked.append(
                    TableCopy(table.name, totals[table.name], copied, sums[table.name], target_sum)
                )
            wrong = [t for t in checked if not t.verified]
            if wrong:
                raise CopyFailed(
                    "the target does not read back as the source: "
                    + ", ".join(
                        f"{t.name} ({t.rows} rows in the source, {t.copied} copied)" for t in wrong
                    )
                )
    return CopyReport(tuple(checked))


# --------------------------------------------------------------------------- refusals


def _refuse_same_database(source: Engine, target: Engine) -> None:
    """Copying a database onto itself would find it "not empty" at best; say what it is.

    Compared by what each server says it is, not by URL: `localhost` and `127.0.0.1`, or two
    spellings of one path, are the same database.
    """
    if _identity(source, "source") == _identity(target, "target"):
        raise CopyRefused(f"the target is the source database itself ({shown_url(target.url)})")


def _identity(engine: Engine, role: str) -> tuple[object, ...]:
    name = engine.url.database
    if engine.dialect.name == "sqlite":
        if not name or name == ":memory:":
            return ("sqlite memory", id(engine))
        path = Path(name).resolve()
        if role == "source" and not path.exists():
            raise CopyRefused(f"there is no source database at {path}")
        with _reach(engine, role):
            return ("sqlite", str(path))
    with _reach(engine, role) as conn:
        if engine.dialect.name != "postgresql":
            return (engine.url.render_as_string(hide_password=False),)
        row = conn.execute(
            text(
                "SELECT current_database(), current_schema(), pg_postmaster_start_time(),"
                " current_setting('port')"
            )
        ).one()
    return ("postgresql", *row)


@contextmanager
def _reach(engine: Engine, role: str) -> Iterator[Connection]:
    """A connection to `engine`, or `CopyRefused` naming the database that cannot be reached."""
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines() or [type(exc.orig).__name__]
        raise CopyRefused(
            f"cannot reach the {role} database {shown_url(engine.url)}: {reason[0]}"
        ) from None
    try:
        yield conn
    finally:
        conn.close()


def _refuse_unmigrated(source: Engine) -> None:
    """Only a source at this digest's head is copied: the target is built at head, and a
    source behind or ahead of it would not fit that schema column for column."""
    stored = db.stored_revisions(source)
    if not stored:
        raise CopyRefused(
            f"{shown_url(source.url)} holds no digest schema (no alembic_version); "
            "is DIGEST_DATABASE_URL the database digest ran on?"
        )
    if stored != [db.HEAD_REVISION]:
        raise CopyRefused(
            f"the source is at schema revision {', '.join(stored)}, this digest's is "
            f"{db.HEAD_REVISION}: run `digest db upgrade` on it first (with the digest that "
            "will run on the target)"
        )


def _occupied(target: Engine | Connection, tables: Iterable[Table]) -> dict[str, int]:
    """The target's digest tables that hold rows, and how many (tables not there yet: none)."""
    names = {t.name for t in tables} | {JOBS_TABLE}
    if isinstance(target, Connection):
        return _counts(target, names)
    with _reach(target, "target") as conn:
        return _counts(conn, names)


def _counts(conn: Connection, names: set[str]) -> dict[str, int]:
    present = set(inspect(conn).get_table_names()) & names
    known = {t.name: t for t in db.metadata.sorted_tables} | {JOBS_TABLE: _jobs_table(conn)}
    found = {}
    for name in sorted(present):
        table = known[name]
        n = conn.execute(select(func.count()).select_from(table)).scalar_one()
        if n:
            found[name] = int(n)
    return found


def _occupied_message(occupied: dict[str, int]) -> str:
    held = ", ".join(f"{name}: {n:,} row{'s' * (n != 1)}" for name, n in occupied.items())
    return f"the target database is not empty ({held}); copy only into an empty database"


# --------------------------------------------------------------------------- the copy


def _one_snapshot(src: Connection) -> None:
    """Read every table of the source as of one moment, so counts, rows and foreign keys agree
    even if a writer was left running. pysqlite begins no transaction for a SELECT by itself."""
    if src.dialect.name == "sqlite":
        src.exec_driver_sql("BEGIN")
    elif src.dialect.name == "postgresql":
        src.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))


def _lock(dst: Connection) -> None:
    """On SQLite, take the write lock now: the emptiness check and every insert are then one
    transaction (pysqlite would begin it only at the first INSERT)."""
    if dst.dialect.name == "sqlite":
        dst.exec_driver_sql("BEGIN IMMEDIATE")


def _tables(src: Connection) -> list[Table]:
    """digest's tables parents first, then APScheduler's job table if a scheduler ever ran."""
    tables = list(db.metadata.sorted_tables)
    if inspect(src).has_table(JOBS_TABLE):
        tables.append(_jobs_table(src))
    return tables


def _jobs_table(conn: Connection) -> Table:
    # APScheduler's own definition of its table; the store is never started (nothing connects).
    return make_jobstore(conn.engine).jobs_t  # type: ignore[no-any-return]


def _prepare_schema(target: Engine, tables: Sequence[Table]) -> None:
    """The target at digest's head revision, and the job table made as APScheduler makes it."""
    try:
        db.upgrade(target)
    except Exception as exc:
        raise CopyRefused(
            f"the target's schema cannot be brought to revision {db.HEAD_REVISION}: {exc}"
        ) from exc
    for table in tables:
        if table.name == JOBS_TABLE:
            with target.begin() as conn:
                table.create(conn, checkfirst=True)


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _read_column(column: Column[Any], dialect: str) -> ColumnElement[Any]:
    """A column as it is copied: JSON as its stored text, so SQL NULL and JSON `null` (which
    SQLAlchemy both reads as None) stay what they were, and the document keeps its bytes."""
    if isinstance(column.type, JSON):
        as_text = cast(column, Text) if dialect == "postgresql" else type_coerce(column, Text)
        return as_text.label(column.name)
    return column


def _written_column(column: Column[Any], dialect: str) -> ColumnElement[Any]:
    param = bindparam(
        f"p_{column.name}", type_=Text() if isinstance(column.type, JSON) else column.type
    )
    if isinstance(column.type, JSON) and dialect == "postgresql":
        return cast(param, column.type)  # text into a json column needs the cast on PostgreSQL
    return param


def _chunks(
    conn: Connection, table: Table, size: int, *, ordered: bool = True
) -> Iterable[list[tuple[Any, ...]]]:
    """`table`'s rows in lists of up to `size`, streamed (a server-side cursor on PostgreSQL)."""
    query = select(*(_read_column(c, conn.dialect.name) for c in table.columns))
    if ordered:
        query = query.order_by(*table.primary_key.columns)
    result = conn.execution_options(yield_per=size).execute(query)
    for part in result.partitions():
        yield [tuple(row) for row in part]


def _insert(dst: Connection, table: Table, rows: list[tuple[Any, ...]]) -> None:
    statement = insert(table).values(
        {c.name: _written_column(c, dst.dialect.name) for c in table.columns}
    )
    keys = [f"p_{c.name}" for c in table.columns]
    dst.execute(statement, [dict(zip(keys, row, strict=True)) for row in rows])


def _add(total: int, rows: list[tuple[Any, ...]]) -> int:
    """`total` plus the hashes of `rows`, modulo 2**128: a checksum independent of row order
    (PostgreSQL and SQLite may order text keys differently)."""
    for row in rows:
        shown = repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row))
        digest = hashlib.blake2b(shown.encode("utf-8", "surrogatepass"), digest_size=16)
        total = (total + int.from_bytes(digest.digest())) % (1 << _HASH_BITS)
    return total


def _reset_sequences(dst: Connection) -> None:
    """Move each id sequence past the copied ids: rows were inserted with their ids, which
    leaves the sequences at 1, and the first new subscriber would collide with the first copied."""
    for table in db.metadata.sorted_tables:
        column = table.autoincrement_column
        if column is None:
            continue
        sequence = func.pg_get_serial_sequence(table.name, column.name)
        moved = dst.execute(
            select(func.setval(sequence, func.coalesce(func.max(column), 0) + 1, false()))
        ).scalar_one()
        if moved is None:
            raise CopyFailed(f"{table.name}.{column.name} has no sequence on the target")
