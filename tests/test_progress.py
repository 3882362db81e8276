"""The progress bar of long commands: drawn on a terminal (stderr), never in a pipe, CI or --quiet.

A bar is a stream of control codes and redraws; in a log or a pipe that is noise, and on stdout
it would corrupt export's CSV. So piped runs are checked byte for byte, and a forced terminal
(rich's `force_terminal`) stands in for a person watching.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import Engine
from typer.testing import CliRunner

from digest.cli import progress
from digest.cli.progress import progress_bar, shows_bar
from digest.store.subscribers import list_subscribers
from tests.conftest import REPO
from tests.sending import WEEK, build_issue, seed_subscribers

runner = CliRunner()
ROWS = 6_000  # more than one chunk of the import (5,000 rows)


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=140), out


@pytest.fixture
def no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch, no_ci: None) -> io.StringIO:
    """The commands' bars go to a forced terminal; returns what it was sent."""
    console, out = terminal()
    monkeypatch.setattr(progress, "bar_console", console)
    return out


def subscriber_file(folder: Path, rows: int = ROWS) -> Path:
    path = folder / "list.csv"
    lines = "".join(f"p{n}@example.org,Person {n}\n" for n in range(1, rows + 1))
    path.write_text("email,name\n" + lines, encoding="utf-8")
    return path


def digest(*args: str):  # type: ignore[no-untyped-def]
    from digest.cli import app

    return runner.invoke(app, list(args))


# --------------------------------------------------------------------------- the helper


def test_a_terminal_gets_a_bar_with_a_count_a_rate_and_the_time_left(no_ci: None) -> None:
    console, out = terminal()
    with progress_bar("exporting", total=1000, unit="rows", console=console) as bar:
        for done in range(0, 1001, 250):
            bar.update(done)
    shown = out.getvalue()
    assert "exporting" in shown
    assert "━" in shown  # the bar itself
    assert "1000/1000" in shown
    assert "rows/s" in shown
    assert "0:00:00" in shown or "-:--:--" in shown  # the time-left column


def test_a_file_is_counted_in_bytes_with_a_transfer_rate(no_ci: None) -> None:
    console, out = terminal()
    with progress_bar("importing list.csv", total=2_000_000, unit="bytes", console=console) as bar:
        bar.update(2_000_000, note="12,345 rows")
    shown = out.getvalue()
    assert "2.0/2.0 MB" in shown
    assert "12,345 rows" in shown
    assert "/s" in shown


def test_nothing_is_written_off_a_terminal_under_ci_or_with_quiet(
    monkeypatch: pytest.MonkeyPatch, no_ci: None
) -> None:
    plain = Console(file=io.StringIO(), width=140)
    assert not shows_bar(plain)
    tty, _ = terminal()
    assert shows_bar(tty)
    assert not shows_bar(tty, quiet=True)
    for value, shown in (("true", False), ("1", False), ("false", True), ("", True)):
        monkeypatch.setenv("CI", value)
        assert shows_bar(tty) is shown, value
    monkeypatch.setenv("CI", "true")
    for console, out, quiet in ((*terminal(), False), (*terminal(), True)):
        with progress_bar("sending", total=10, console=console, quiet=quiet) as bar:
            bar.update(10)
        assert out.getvalue() == ""
    monkeypatch.delenv("CI")
    out = io.StringIO()
    with progress_bar("sending", total=10, console=Console(file=out)) as bar:
        bar.update(10)
    assert out.getvalue() == ""


# --------------------------------------------------------------------------- on a terminal


def test_import_on_a_terminal_shows_the_bar_on_stderr_and_only_the_summary_on_stdout(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path, watched: io.StringIO
) -> None:
    result = digest("subscribers", "import", str(subscriber_file(tmp_path)), "--confirmed")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"added {ROWS}, updated 0, unchanged 0, kept unsubscribed/bounced/complained 0, 0 errors\n"
    )
    shown = watched.getvalue()
    assert "importing list.csv" in shown
    assert f"{ROWS:,} rows" in shown
    assert "/s" in shown


def test_import_with_quiet_draws_no_bar_even_on_a_terminal(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path, watched: io.StringIO
) -> None:
    result = digest("subscribers", "import", str(subscriber_file(tmp_path)), "--confirmed", "-q")
    assert result.exit_code == 0, result.output
    assert watched.getvalue() == ""
    assert len(list_subscribers(engine)) == ROWS


def test_export_on_a_terminal_keeps_stdout_pure_csv(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path, watched: io.StringIO
) -> None:
    seed_subscribers(engine, 7_000, name=None)
    result = digest("subscribers", "export")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "email,name,status,timezone,language"
    assert lines[1:] == [f"reader{i}@example.org,,active,," for i in range(7_000)]
    shown = watched.getvalue()
    assert "exporting" in shown
    assert "7000/7000" in shown
    assert "rows/s" in shown


def test_send_on_a_terminal_shows_a_bar_of_readers(
    settings_env: dict[str, str], engine: Engine, watched: io.StringIO
) -> None:
    seed_subscribers(engine, 5)
    build_issue(engine)
    result = digest("send", "--week", str(WEEK))
    assert result.exit_code == 0, result.output
    assert "sent 5, skipped 0, failed 0" in result.stdout
    shown = watched.getvalue()
    assert f"sending {WEEK}" in shown
    assert "5/5" in shown
    assert "readers/s" in shown
    assert "sending" not in result.stdout.replace("sent", "")  # the bar is not on stdout


# --------------------------------------------------------------------------- in a pipe


def _piped(settings_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(settings_env, PYTHONPATH=str(REPO), COLUMNS="120")
    return subprocess.run(
        [sys.executable, "-m", "digest.cli", *args],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_piped_import_and_export_write_no_bar_bytes_at_all(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    imported = _piped(settings_env, "subscribers", "import", str(subscriber_file(tmp_path)))
    assert imported.returncode == 0, imported.stderr
    assert imported.stderr == b""
    assert (
        imported.stdout
        == (
            f"added {ROWS}, updated 0, unchanged 0, kept unsubscribed/bounced/complained 0, "
            "0 errors\n"
        ).encode()
    )
    exported = _piped(settings_env, "subscribers", "export")
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr == b""
    lines = exported.stdout.decode().splitlines()
    assert lines[0] == "email,name,status,timezone,language"
    assert len(lines) == ROWS + 1
    assert b"\x1b" not in exported.stdout  # no control code anywhere
