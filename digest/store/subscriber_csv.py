"""CSV import and export of subscribers: the file format, the checks of a row, and the reading
that refuses a torn file whole (a quote left open, a byte that is not UTF-8) by line and offset.

An import changes statuses only as `digest.model.subscriber.TRANSITIONS` allows (the writes are
`digest.store.subscriber_import`'s); it sends no mail.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, TextIO, cast

from sqlalchemy import ColumnElement, Connection, Engine, case, func, literal, select

from digest.core.reader_input import clean_language, clean_name, clean_timezone, normalise_email
from digest.model.subscriber import STATUSES, InvalidSubscriber, SubscriberStatus
from digest.store.db import subscribers
from digest.store.subscriber_import import CHUNK_ROWS, BulkImport, ImportRow, bulk_import

__all__ = ["CSV_COLUMNS", "ImportReport", "RowError", "export_csv", "import_csv"]

CSV_COLUMNS = ("email", "name", "status", "timezone", "language")
# Spreadsheets run a cell starting with one of these as a formula (CSV injection); export
# prefixes such a cell with an apostrophe and import takes it off again, so files round-trip.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    message: str
    # The last line of a row that runs on over several lines inside a quoted cell, else None.
    # No column allows a line break, so such a row is always bad, and two stray quotes that
    # pair up hide every line between them in it: showing where it ends makes that visible.
    end_line: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportReport:
    """What an import did, row by row; `errors` name each bad row's line."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    # unsubscribed / bounced / complained addresses the file would have brought back
    kept_suppressed: int = 0
    errors: list[RowError] = field(default_factory=list)
    # The file as a whole could not be read (no usable header, a torn quote, a byte that is not
    # UTF-8), so nothing was imported; `errors` ends with the reason.
    refused: bool = False


def export_csv(
    engine: Engine | Connection,
    out: TextIO,
    status: SubscriberStatus | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write subscribers as CSV (email,name,status,timezone,language) to `out`; returns the row count.

    The file is what `import_csv` reads, so export → import round-trips. The rows are read in
    pages of `CHUNK_ROWS` from one cursor (server-side on PostgreSQL), so the memory an export
    needs does not grow with the list and the file is one snapshot of it. `progress(done,
    total)` is called after each page.
    """
    c = subscribers.c
    query = select(
        _csv_safe_sql(c.email), _csv_safe_sql(c.name), c.status, _csv_safe_sql(c.timezone),
        _csv_safe_sql(c.language),
    ).order_by(c.id)  # fmt: skip
    counting = select(func.count()).select_from(subscribers)
    if status is not None:
        query = query.where(subscribers.c.status == status)
        counting = counting.where(subscribers.c.status == status)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    written = 0
    with _reading(engine) as conn:
        total = int(conn.execute(counting).scalar_one()) if progress is not None else 0
        result = conn.execution_options(yield_per=CHUNK_ROWS).execute(query)
        for page in result.partitions():
            writer.writerows(page)
            written += len(page)
            if progress is not None:
                progress(written, max(total, written))
    return written


def import_csv(
    engine: Engine,
    lines: Iterable[str] | BinaryIO,
    *,
    confirmed: bool = False,
    now: datetime,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import subscribers from CSV with a header row (email[,name][,status][,timezone][,language]).

    `lines` is a binary file (decoded as UTF-8 here, so a bad byte is reported by its line and
    its offset in the file; a BOM is fine) or text lines as a file opened with `newline=""`
    yields them. `progress(read, rows)` is called after each chunk with how far into the file
    the import is (bytes of a binary file, characters of text) and how many good rows it read.

    Each bad row is reported with its line number and left out; the good ones are imported in
    one transaction. A file that cannot be read to its end is refused whole and nothing is
    imported (`ImportReport.refused`): a quote left open swallows every line after it into one
    cell, and a byte that is not UTF-8 stops the decoding, so importing the rows before the
    damage would pass a torn file off as a small success.

    The file is streamed: read, checked and written `CHUNK_ROWS` rows at a time, so memory
    stays flat however long it is. Refusing it whole is then the transaction's job: every chunk
    is written in the one transaction, which is rolled back when the damage shows, so a
    refused file leaves the database as it was. (A first pass that only checks the file would
    need a source that can be read twice, a pipe or an upload cannot, and would decode and
    parse every row twice.) The price is that the write lock is held while the rest of the
    file is read, as it was held while every row was written one statement at a time before.

    Rows without a status become `active` with `confirmed=True` (the operator vouches they
    opted in) and `pending` otherwise; `active` in the file needs `confirmed`. Existing
    addresses are updated, except that an unsubscribed, bounced or complained address is never
    brought back, and an active one is never set back to pending. No mail is sent. Importing
    the same file twice changes nothing the second time, so a refused file is fixed and
    imported again.
    """
    report = ImportReport()
    source = _CsvLines(lines)
    try:
        with engine.begin() as conn, bulk_import(conn, now) as writer:
            chunk: list[ImportRow] = []
            rows = 0
            for row in _read_rows(source, confirmed, report):
                chunk.append(row)
                if len(chunk) == CHUNK_ROWS:
                    _write(writer, chunk, report)
                    rows += len(chunk)
                    chunk = []
                    if progress is not None:
                        progress(source.position, rows)
            _write(writer, chunk, report)
            if progress is not None:
                progress(source.position, rows + len(chunk))
    except _BadFile as exc:
        report.errors.append(RowError(exc.line, str(exc)))
        report.errors.sort(key=lambda e: e.line)
        report.refused = True
        return report
    report.added, report.updated = writer.added, writer.updated
    report.unchanged, report.kept_suppressed = writer.unchanged, writer.kept_suppressed
    report.errors.sort(key=lambda e: e.line)
    return report


def _write(writer: BulkImport, chunk: list[ImportRow], report: ImportReport) -> None:
    for row, first in writer.write(chunk):
        report.errors.append(
            RowError(row.line, f"email: {row.email} already appears on line {first}", row.end_line)
        )


@contextmanager
def _reading(engine: Engine | Connection) -> Iterator[Connection]:
    if isinstance(engine, Connection):
        yield engine
        return
    with engine.connect() as conn:
        yield conn


class _BadFile(Exception):
    """The file cannot be read as a whole; the message says where, why and what to do."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


_NOTHING_IMPORTED = "nothing was imported"


class _CsvLines:
    """The lines the csv reader reads, one at a time, with what is needed to report a torn file.

    Lines end where a file opened with `newline=""` ends them: at `\\n`, `\\r\\n` and a lone
    `\\r`, so line numbers are the same whether the caller passes bytes or text. Bytes are
    decoded line by line, which keeps the absolute offset of a bad byte at hand (a text file's
    decoder reports offsets within its own read chunk) and reads the file lazily, as a text
    file would.
    """

    def __init__(self, source: Iterable[str] | BinaryIO) -> None:
        self.ended = False  # the source ran out (the csv reader asked for a line past the end)
        self.position = 0  # bytes (or characters of text) handed to the csv reader so far
        self._raw: Iterator[Any]
        self._lines: Iterator[str]
        if isinstance(source, io.RawIOBase | io.BufferedIOBase):
            self._raw = _split_lines(cast(BinaryIO, source))
            self._lines = self._decode(self._raw)
        else:
            self._raw = iter(cast(Iterable[str], source))
            self._lines = self._count(self._raw)

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        try:
            return next(self._lines)
        except StopIteration:
            self.ended = True
            raise

    def count_rest(self) -> int:
        """How many lines are left, counted without decoding or parsing them."""
        return sum(1 for _ in self._raw)

    def _count(self, lines: Iterator[str]) -> Iterator[str]:
        for text in lines:
            self.position += len(text)
            yield text

    def _decode(self, raw: Iterator[tuple[int, bytes]]) -> Iterator[str]:
        for number, (offset, data) in enumerate(raw, start=1):
            if number == 1 and data.startswith(codecs.BOM_UTF8):
                data, offset = data[len(codecs.BOM_UTF8) :], offset + len(codecs.BOM_UTF8)
                if not data:
                    return  # nothing but a BOM: an empty file
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(data[: exc.start].decode("utf-8")) + 1
                raise _BadFile(
                    number,
                    f"not UTF-8 text: byte 0x{data[exc.start]:02X} at offset "
                    f"{offset + exc.start} in the file (line {number}, column {column}) cannot "
                    "be decoded (the file is probably Latin-1 or Windows-1252); save the file as "
                    "UTF-8 (a spreadsheet's “CSV UTF-8”) and import again; "
                    f"{_NOTHING_IMPORTED}",
                ) from None
            self.position = offset + len(data)
            yield text


# Where a file opened with newline="" ends a line that binary reading (which splits at b"\n"
# only) leaves joined: after each lone CR. UTF-8 never uses these bytes inside a character.
_AFTER_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")


def _split_lines(source: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(offset in the file, bytes) of each line, line ending included."""
    offset = 0
    for chunk in source:
        for line in _AFTER_LONE_CR.split(chunk) if b"\r" in chunk else (chunk,):
            if line:
                yield offset, line
                offset += len(line)


def _next_cells(reader: Any, lines: _CsvLines, line: int) -> list[str] | None:
    """The next record's cells, None at the end of the file, or `_BadFile` for a torn quote.

    The reader is strict about quotes, so a quote that opens a cell must close it right before a
    comma or the end of a line. A quote left open therefore ends up in one of three errors, each
    raised on a later line than the record's first or at the end of the input: a quote followed
    by other text (a stray quote pairs up with the next quote in the file, which almost always
    has text after it), the field size limit, or the end of the data. Errors confined to one
    line are that row's problem (`csv.Error`); the reader starts afresh on the next line.
    """
    try:
        cells: list[str] = next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        if not lines.ended and reader.line_num == line:
            raise
        total = reader.line_num + lines.count_rest()
        if lines.ended:
            how = "is never closed"
        elif str(exc).startswith("field larger than field limit"):
            how = (
                f"is not closed: the cell runs on to line {reader.line_num}, where it outgrows "
                f"the limit of {csv.field_size_limit()} characters"
            )
        else:
            how = (
                f"is not closed properly: the cell runs on to line {reader.line_num}, where a "
                "quote is followed by other text"
            )
        if total == line:
            unread = " (the file ends inside it)"
        elif total == line + 1:
            unread = f", so line {total} could not be read"
        else:
            unread = f", so lines {line + 1}–{total} ({total - line} lines) could not be read"
        raise _BadFile(
            line,
            f"the quote that opens a cell on this line {how}{unread}; fix the quote on line "
            f"{line} and import again; {_NOTHING_IMPORTED}",
        ) from None
    return cells


def _csv_problem(exc: csv.Error) -> str:
    if str(exc) == "',' expected after '\"'":
        return (
            "not valid CSV: a quoted cell must end at its closing quote, but text follows it; "
            'quote the whole cell and double any quote inside it, as in "Ann ""A"" Smith"'
        )
    return f"not valid CSV: {exc}"


def _read_rows(lines: _CsvLines, confirmed: bool, report: ImportReport) -> Iterator[ImportRow]:
    """The file's good rows in order; each bad one goes into `report` (an address that appears
    twice is found by `BulkImport`, which remembers the addresses written)."""
    reader = csv.reader(lines, strict=True)
    try:
        first = _next_cells(reader, lines, 1)
    except csv.Error as exc:
        raise _BadFile(1, _csv_problem(exc)) from None
    if first is None:
        raise _BadFile(1, "the file is empty; expected a header row such as 'email,name'")
    header = [h.strip().lower().lstrip("\ufeff") for h in first]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if "email" not in header or unknown or len(set(header)) != len(header):
        raise _BadFile(
            1,
            f"the header must name the columns {', '.join(CSV_COLUMNS)} (email required, each "
            f"at most once); got {','.join(header)!r}",
        )
    while True:
        # A quoted cell may span lines; a row is reported on the line where it starts, which is
        # where an editor finds it (`line_num` after reading is the line where it ends).
        line = reader.line_num + 1
        try:
            cells = _next_cells(reader, lines, line)
        except csv.Error as exc:
            report.errors.append(RowError(line, _csv_problem(exc)))
            continue
        if cells is None:
            return
        end_line = reader.line_num if reader.line_num > line else None
        if not any(c.strip() for c in cells):
            continue  # blank lines are not rows
        if len(cells) != len(header):
            report.errors.append(
                RowError(line, f"expected {len(header)} columns, found {len(cells)}", end_line)
            )
            continue
        values = {h: _csv_unsafe(c) for h, c in zip(header, cells, strict=True)}
        try:
            row = _parse_row(values, confirmed, line, end_line)
        except InvalidSubscriber as exc:
            report.errors.append(RowError(line, str(exc), end_line))
            continue
        yield row


def _parse_row(
    values: dict[str, str], confirmed: bool, line: int, end_line: int | None
) -> ImportRow:
    email = normalise_email(values["email"])
    status = values.get("status", "").strip().lower() or ("active" if confirmed else "pending")
    if status not in STATUSES:
        raise InvalidSubscriber("status", f"must be one of {', '.join(STATUSES)} (got {status!r})")
    if status == "active" and not confirmed:
        raise InvalidSubscriber(
            "status", "active needs --confirmed (vouch that these people opted in)"
        )
    return ImportRow(
        line=line,
        end_line=end_line,
        email=email,
        name=clean_name(values.get("name")),
        status=status,  # type: ignore[arg-type]
        timezone=clean_timezone(values.get("timezone")),
        language=clean_language(values.get("language")),
    )


def _csv_safe_sql(column: ColumnElement[str | None]) -> ColumnElement[str]:
    """The cell of `column` as export writes it, computed by the database: '' for NULL, and a
    leading `'` before a formula character. In SQL, so the rows go to csv.writer as they come
    and no Python runs per cell (that was most of an export's own time)."""
    cell = func.coalesce(column, "")
    return case(
        (func.substr(cell, 1, 1).in_(_FORMULA_START), literal("'") + cell), else_=cell
    ).label(column.key or "cell")


def _csv_unsafe(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA_START) else value
