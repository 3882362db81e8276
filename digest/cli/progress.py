"""The progress bar of every command that can take long (import, export, send): the rate and the
time left on a terminal, and not one byte in a log, a pipe or CI.

It draws on stderr, so what a command writes to stdout (export's CSV) is the same with or without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich import filesize
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from digest.cli._common import err

__all__ = ["Bar", "progress_bar", "shows_bar"]

# Where bars are drawn unless a caller passes a console: tests put a forced terminal here.
bar_console: Console = err


def shows_bar(console: Console, *, quiet: bool = False) -> bool:
    """A bar is drawn on a terminal only, and not with `--quiet` or under CI (`CI` set, as every
    CI service sets it), whose logs would keep every redraw."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return console.is_terminal and not quiet and not ci


class Bar:
    """What a command's work reports to: `update(done, total)`; a no-op when no bar is drawn."""

    def __init__(self, progress: Progress | None = None, task: TaskID | None = None) -> None:
        self._progress = progress
        self._task = task

    def update(self, done: float, total: float | None = None, *, note: str = "") -> None:
        if self._progress is None or self._task is None:
            return
        if total is None:
            self._progress.update(self._task, completed=done, note=note)
        else:
            self._progress.update(self._task, completed=done, total=total, note=note)


class _RateColumn(ProgressColumn):
    """`1,234 rows/s` or `1.2 MB/s`, and `? rows/s` before there is a rate (rich's own speed
    column speaks only of bytes and shows a bare `?`)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self._unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if self._unit == "bytes":
            shown = "? B" if speed is None else filesize.decimal(int(speed))
            return Text(f"{shown}/s", style="progress.data.speed")
        shown = "?" if speed is None else f"{speed:,.0f}"
        return Text(f"{shown} {self._unit}/s", style="progress.data.speed")


@contextmanager
def progress_bar(
    description: str,
    *,
    total: float | None = None,
    unit: str = "rows",
    quiet: bool = False,
    console: Console | None = None,
) -> Iterator[Bar]:
    """A bar for the work inside the `with`, gone when it ends (the command's own lines stay).

    `unit` "bytes" shows sizes and MB/s (for a file being read); any other unit counts and a rate
    in that unit. Without a bar (see `shows_bar`) nothing is set up and nothing is written.
    """
    target = console if console is not None else bar_console
    if not shows_bar(target, quiet=quiet):
        yield Bar()
        return
    count = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        count,
        _RateColumn(unit),
        TextColumn("{task.fields[note]}"),
        TimeRemainingColumn(),
        console=target,
        transient=True,
        # rich would otherwise swap sys.stdout for a proxy into the bar's console: export's CSV
        # would go to stderr, between the redraws.
        redirect_stdout=False,
        redirect_stderr=False,
    )
    task = progress.add_task(description, total=total, note="")
    with progress:
        yield Bar(progress, task)
