"""CSV import of torn and mis-encoded files: a broken file is refused whole, never half-read.

A stray quote makes the csv reader swallow the rest of the file into one cell; a file that is
not UTF-8 stops the decoder part-way. Either way the import must say where the damage starts,
how much of the file it could not read and what to do, import nothing, and exit non-zero.
"""

from __future__ import annotations

import codecs
import io
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import patch

from hypothesis import assume, given, note
from typer.testing import CliRunner

from digest.store.subscriber_csv import import_csv
from digest.store.subscribers import get_subscriber, list_subscribers
from tests.test_fuzz import STATEFUL, _clear, csv_files

NOW = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
runner = CliRunner()


def digest(*args: str):  # type: ignore[no-untyped-def]
    from digest.cli import app

    return runner.invoke(app, list(args))


def big_file(rows: int, *, header: str = "email,name\n") -> list[str]:
    """The lines of a subscriber file (header + `rows` rows); line n is `lines[n - 1]`."""
    return [header] + [f"p{n}@example.org,Person {n}\n" for n in range(1, rows + 1)]


def text_lines(text: str) -> io.StringIO:
    return io.StringIO(text, newline="")


# --------------------------------------------------------------------------- torn quotes


def test_a_stray_quote_on_line_11_of_a_large_file_refuses_it_naming_the_line_and_the_unread_lines(
    engine,
):
    lines = big_file(20_000)
    lines[10] = 'p10@example.org,"Person 10\n'  # line 11: the quote never closes
    report = import_csv(engine, text_lines("".join(lines)), confirmed=True, now=NOW)
    assert report.refused
    assert (report.added, report.updated, report.unchanged) == (0, 0, 0)
    [error] = report.errors
    assert error.line == 11
    assert "lines 12–20001 (19990 lines) could not be read" in error.message
    assert error.message.endswith("fix the quote on line 11 and import again; nothing was imported")
    assert list_subscribers(engine) == []


def test_a_torn_file_makes_the_cli_exit_non_zero_and_say_nothing_was_imported(
    settings_env, engine, tmp_path
):
    lines = big_file(20_000)
    lines[10] = 'p10@example.org,"Person 10\n'
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("".join(lines), encoding="utf-8")
    result = digest("subscribers", "import", str(csv_file), "--confirmed")
    assert result.exit_code == 1
    shown = result.output.splitlines()
    assert shown[0].startswith(f"{csv_file}:11: the quote that opens a cell on this line ")
    assert "(19990 lines) could not be read" in shown[0]
    assert shown[-1] == "nothing imported, 1 error"
    assert list_subscribers(engine) == []


def test_fixing_the_quote_and_importing_again_imports_every_row_once(engine):
    lines = big_file(30)
    lines[10] = 'p10@example.org,"Person 10\n'
    assert import_csv(engine, lines, confirmed=True, now=NOW).refused
    lines[10] = 'p10@example.org,"Person 10"\n'
    fixed = import_csv(engine, lines, confirmed=True, now=NOW)
    assert (fixed.refused, fixed.added, fixed.errors) == (False, 30, [])
    again = import_csv(engine, lines, confirmed=True, now=NOW)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 30)


def test_a_stray_quote_closed_by_a_later_quoted_cell_is_reported_where_it_opens(engine):
    text = (
        "email,name\n"
        "ann@example.org,Ann\n"
        'bob@example.org,"Bob\n'  # line 3: the stray quote
        "cy@example.org,Cy\n"
        'di@example.org,"Smith, Di"\n'  # line 5: its quote closes line 3's, then text follows
        "ed@example.org,Ed\n"
    )
    report = import_csv(engine, text_lines(text), confirmed=True, now=NOW)
    assert report.refused
    [error] = report.errors
    assert error.line == 3
    assert "runs on to line 5" in error.message
    assert "lines 4–6 (3 lines) could not be read" in error.message
    assert list_subscribers(engine) == []


def test_a_quote_still_open_where_the_cell_outgrows_the_field_limit_is_reported_where_it_opens(
    engine,
):
    # Before, the csv module's "field larger than field limit" ended the import quietly there.
    lines = big_file(8_000)
    lines[2] = 'p2@example.org,"Person 2\n'
    report = import_csv(engine, lines, confirmed=True, now=NOW)
    [error] = report.errors
    assert (report.refused, error.line) == (True, 3)
    assert "131072 characters" in error.message
    assert "lines 4–8001 (7998 lines) could not be read" in error.message


def test_an_unclosed_quote_on_the_last_line_refuses_the_file(engine):
    for ending in ("\n", ""):
        text = f'email,name\nann@example.org,Ann\nbob@example.org,"Bob{ending}'
        report = import_csv(engine, text_lines(text), confirmed=True, now=NOW)
        assert report.refused, ending
        [error] = report.errors
        assert error.line == 3
        assert "is never closed" in error.message
        assert "could not be read" not in error.message  # no line after it
        assert error.message.endswith("nothing was imported")
        assert list_subscribers(engine) == []


def test_an_unclosed_quote_in_the_header_refuses_the_file_on_line_1(engine):
    report = import_csv(engine, text_lines('email,"name\nann@example.org,Ann\n'), now=NOW)
    assert report.refused
    assert [e.line for e in report.errors] == [1]
    assert "line 2 could not be read" in report.errors[0].message


def test_row_errors_before_a_torn_quote_are_still_listed(engine):
    text = 'email,name\nnope,Ann\nbob@example.org,"Bob\ncy@example.org,Cy\n'
    report = import_csv(engine, text_lines(text), confirmed=True, now=NOW)
    assert report.refused
    assert [e.line for e in report.errors] == [2, 3]
    assert list_subscribers(engine) == []


def test_a_quoted_cell_with_a_comma_or_doubled_quotes_is_still_one_cell(engine):
    text = (
        "email,name\n"
        'ann@example.org,"Smith, Ann"\n'
        'bob@example.org,"Bob ""the builder"" Jones"\n'
        'cy@example.org,Cy "C" Young\n'  # a quote inside an unquoted cell is an ordinary character
    )
    report = import_csv(engine, text_lines(text), confirmed=True, now=NOW)
    assert (report.refused, report.added, report.errors) == (False, 3, [])
    assert get_subscriber(engine, "ann@example.org").name == "Smith, Ann"
    assert get_subscriber(engine, "bob@example.org").name == 'Bob "the builder" Jones'
    assert get_subscriber(engine, "cy@example.org").name == 'Cy "C" Young'


def test_text_after_a_closing_quote_is_a_bad_row_and_the_rest_of_the_file_is_read(engine):
    # Before, "Ann" Smith silently became `Ann Smith`; now the row is reported, the rest imported.
    text = 'email,name\nann@example.org,"Ann" Smith\nbob@example.org,Bob\n'
    report = import_csv(engine, text_lines(text), confirmed=True, now=NOW)
    assert not report.refused
    [error] = report.errors
    assert error.line == 2
    assert "quote the whole cell and double any quote inside it" in error.message
    assert [s.email for s in list_subscribers(engine)] == ["bob@example.org"]


def test_a_line_the_csv_reader_gives_up_on_no_longer_ends_the_import_there(engine):
    lines = big_file(5)
    lines[2] = f'p2@example.org,"{"x" * 200_000}"\n'  # one line, but one cell over the field limit
    report = import_csv(engine, lines, confirmed=True, now=NOW)
    assert not report.refused
    assert [e.line for e in report.errors] == [3]
    assert "field limit" in report.errors[0].message
    assert report.added == 4  # the rows after line 3 were read too


def test_the_cli_shows_which_line_a_row_spanning_lines_runs_to(settings_env, engine, tmp_path):
    # Two stray quotes can pair up and hide the lines between them in one cell; the row is bad
    # (no column allows a line break) and the CLI says how far it runs, so that is visible.
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        'email,name\nann@example.org,"Ann\nbob@example.org,Bob\ncy@example.org,Cy"\n'
        "di@example.org,Di\n",
        encoding="utf-8",
    )
    result = digest("subscribers", "import", str(csv_file), "--confirmed")
    assert result.exit_code == 1
    first = result.output.splitlines()[0]
    assert first.startswith(f"{csv_file}:2: name: ")
    assert first.endswith(
        "(the row runs on to line 4 inside a quoted cell; check the quotes on line 2)"
    )
    assert [s.email for s in list_subscribers(engine)] == ["di@example.org"]


# --------------------------------------------------------------------------- encodings


def latin1_deep_in_the_file() -> tuple[bytes, int]:
    """A UTF-8 file with multi-byte names early on and one Latin-1 byte on line 1500."""
    lines = [f"p{n}@example.org,Zoë {n}\n" for n in range(1, 2001)]
    lines[1498] = "p1499@example.org,Zo\udce9\n"  # line 1500 (header is line 1): a lone 0xE9
    data = ("email,name\n" + "".join(lines)).encode("utf-8", "surrogateescape")
    return data, data.index(b"Zo\xe9") + 2


def test_a_latin1_byte_deep_in_the_file_is_named_by_its_line_and_file_offset(engine):
    data, offset = latin1_deep_in_the_file()
    assert offset > 16_384  # past the text decoder's chunks, whose own offsets were reported
    report = import_csv(engine, io.BytesIO(data), confirmed=True, now=NOW)
    assert report.refused
    [error] = report.errors
    assert error.line == 1500
    assert f"byte 0xE9 at offset {offset} in the file (line 1500, column 21)" in error.message
    assert "save the file as UTF-8" in error.message
    assert error.message.endswith("nothing was imported")
    assert list_subscribers(engine) == []


def test_the_cli_names_the_line_and_file_offset_of_a_byte_that_is_not_utf8(
    settings_env, engine, tmp_path
):
    data, offset = latin1_deep_in_the_file()
    csv_file = tmp_path / "latin1.csv"
    csv_file.write_bytes(data)
    result = digest("subscribers", "import", str(csv_file), "--confirmed")
    assert result.exit_code == 1
    first = result.output.splitlines()[0]
    assert first.startswith(f"{csv_file}:1500: not UTF-8 text: byte 0xE9 at offset {offset} ")
    assert "save the file as UTF-8" in first
    assert result.output.splitlines()[-1] == "nothing imported, 1 error"
    assert list_subscribers(engine) == []


def test_a_utf8_bom_is_accepted_and_counted_in_byte_offsets(settings_env, engine, tmp_path):
    csv_file = tmp_path / "bom.csv"
    csv_file.write_bytes(codecs.BOM_UTF8 + "email,name\nann@example.org,Zoë\n".encode())
    result = digest("subscribers", "import", str(csv_file), "--confirmed")
    assert result.exit_code == 0, result.output
    assert get_subscriber(engine, "ann@example.org").name == "Zoë"
    broken = codecs.BOM_UTF8 + b"email,name\nbob@example.org,Zo\xeb\n"
    report = import_csv(engine, io.BytesIO(broken), confirmed=True, now=NOW)
    assert "byte 0xEB at offset 32 in the file (line 2, column 19)" in report.errors[0].message
    only_a_bom = import_csv(engine, io.BytesIO(codecs.BOM_UTF8), now=NOW)
    assert "the file is empty" in only_a_bom.errors[0].message


def test_a_file_read_as_bytes_counts_lone_cr_and_crlf_line_ends_like_text(engine):
    for newline in ("\r", "\r\n", "\n"):
        text = newline.join(["email,name", "ann@example.org,Ann", "nope,Bob", 'cy@x.org,"C', 'y"'])
        report = import_csv(engine, io.BytesIO(text.encode()), confirmed=True, now=NOW)
        assert [(e.line, e.message.split(":")[0]) for e in report.errors] == [
            (3, "email"),
            (4, "name"),
        ], repr(newline)
        assert [e.end_line for e in report.errors] == [None, 5]


@STATEFUL
@given(csv_files())
def test_a_file_read_as_bytes_is_imported_exactly_as_the_same_text(engine, csv_file):
    text, confirmed = csv_file[:2]
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        assume(False)  # a lone surrogate: no file holds one
    _clear(engine)
    as_text = import_csv(engine, text_lines(text), confirmed=confirmed, now=NOW)
    _clear(engine)
    as_bytes = import_csv(engine, io.BytesIO(data), confirmed=confirmed, now=NOW)
    note(f"text: {as_text}\nbytes: {as_bytes}")
    assert as_bytes == as_text


def test_the_cli_reads_a_file_that_needs_no_repair_exactly_as_before(
    settings_env, engine, tmp_path: Path
):
    csv_file = tmp_path / "list.csv"
    csv_file.write_bytes(b'email,name\r\nann@example.org,"Smith, Ann"\r\nbob@example.org,\r\n')
    result = digest("subscribers", "import", str(csv_file), "--confirmed")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "added 2, updated 0, unchanged 0, kept unsubscribed/bounced/complained 0, 0 errors\n"
    )


# --------------------------------------------------------------------------- streamed in chunks


def test_damage_after_the_first_chunks_were_written_rolls_them_back(engine):
    import_csv(engine, ["email,name\n", "keep@example.org,Keep\n"], confirmed=True, now=NOW)
    before = list_subscribers(engine)
    lines = big_file(12_000)  # chunks of 5,000: two are written before line 11,001 is read
    lines[11_000] = 'p11000@example.org,"Person 11000\n'
    report = import_csv(engine, lines, confirmed=True, now=NOW)
    assert report.refused
    assert (report.added, report.updated, report.unchanged) == (0, 0, 0)
    assert [e.line for e in report.errors] == [11_001]
    assert list_subscribers(engine) == before
    data = "".join(big_file(12_000)).encode()
    bad_byte = data.index(b"Person 11000") + len("Person ")
    broken = data[:bad_byte] + b"\xe9" + data[bad_byte + 1 :]
    report = import_csv(engine, io.BytesIO(broken), confirmed=True, now=NOW)
    assert report.refused
    assert f"at offset {bad_byte} in the file (line 11001" in report.errors[0].message
    assert list_subscribers(engine) == before
    # The same connection imports the fixed file: nothing is left over from the rollback.
    fixed = import_csv(engine, io.BytesIO(data), confirmed=True, now=NOW)
    assert (fixed.refused, fixed.added, fixed.errors) == (False, 12_000, [])


def test_an_address_repeated_in_a_later_chunk_names_the_line_it_first_appeared_on(engine):
    from digest.store import subscriber_csv

    text = (
        "email,name\n"
        "ann@example.org,Ann\n"  # line 2
        "bob@example.org,Bob\n"
        "cy@example.org,Cy\n"
        "ANN@example.org,Ann again\n"  # line 5: chunk 2, first seen in chunk 1
        "bob@example.org,\n"  # line 6: chunk 2
        "ann@example.org,\n"  # line 7: chunk 3, again
        "ann@example.org,\n"  # line 8: chunk 3, twice in one chunk
        "di@example.org,Di\n"
    )
    with patch.object(subscriber_csv, "CHUNK_ROWS", 3):
        report = import_csv(engine, text_lines(text), confirmed=True, now=NOW)
    assert [(e.line, e.message) for e in report.errors] == [
        (5, "email: ann@example.org already appears on line 2"),
        (6, "email: bob@example.org already appears on line 3"),
        (7, "email: ann@example.org already appears on line 2"),
        (8, "email: ann@example.org already appears on line 2"),
    ]
    assert report.added == 4
    assert get_subscriber(engine, "ann@example.org").name == "Ann"


@STATEFUL
@given(csv_files())
def test_a_file_imported_in_chunks_of_two_rows_is_imported_exactly_as_in_one(engine, csv_file):
    from digest.store import subscriber_csv

    text, confirmed = csv_file[:2]
    _clear(engine)
    whole = import_csv(engine, text_lines(text), confirmed=confirmed, now=NOW)
    stored = [(s.email, s.name, s.status, s.timezone) for s in list_subscribers(engine)]
    _clear(engine)
    with patch.object(subscriber_csv, "CHUNK_ROWS", 2):
        chunked = import_csv(engine, text_lines(text), confirmed=confirmed, now=NOW)
    note(f"whole: {whole}\nchunked: {chunked}")
    assert chunked == whole
    assert [(s.email, s.name, s.status, s.timezone) for s in list_subscribers(engine)] == stored


def test_progress_is_reported_after_each_chunk_up_to_the_end_of_the_file(engine):
    data = "".join(big_file(12_000)).encode()
    seen: list[tuple[int, int]] = []
    report = import_csv(
        engine,
        io.BytesIO(data),
        confirmed=True,
        now=NOW,
        progress=lambda read, rows: seen.append((read, rows)),
    )
    assert report.added == 12_000
    assert [rows for _read, rows in seen] == [5_000, 10_000, 12_000]
    assert [read for read, _rows in seen] == sorted({read for read, _rows in seen})
    assert seen[-1][0] == len(data)


def test_the_memory_an_import_needs_does_not_grow_with_the_file(engine):
    from digest.store import subscriber_csv

    def peak(rows: int) -> int:
        _clear(engine)
        data = "".join(big_file(rows)).encode()
        tracemalloc.start()
        try:
            with patch.object(subscriber_csv, "CHUNK_ROWS", 500):
                report = import_csv(engine, io.BytesIO(data), confirmed=True, now=NOW)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert report.added == rows

    small, large = peak(2_000), peak(10_000)
    # Reading the whole file into rows first took about five times as much for five times the rows.
    assert large < 1.5 * small, (small, large)
