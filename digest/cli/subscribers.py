"""`digest subscribers`: add, import, export, list, count and remove (GDPR erase) readers.

Each command is one call into the readers and store layers; what it prints is the whole of the work here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from digest.cli._common import console, db, err, fail, invocation

app = typer.Typer(
    help="Subscribers: add, import, export, list, count, remove (GDPR erase).",
    no_args_is_help=True,
)


def _status_option(status: str | None) -> str | None:
    from digest.model.subscriber import STATUSES

    if status is not None and status not in STATUSES:
        fail(f"no status {status!r}; statuses: {', '.join(STATUSES)}")
    return status


@app.command("add")
def subscribers_add(
    ctx: typer.Context,
    email: str,
    name: Annotated[str | None, typer.Option("--name", help="Display name (optional).")] = None,
    confirmed: Annotated[
        bool,
        typer.Option(
            "--confirmed", help="They already opted in: add as active, send no confirmation."
        ),
    ] = False,
) -> None:
    """Add a subscriber; without --confirmed they get a confirmation mail first."""
    from digest.model.subscriber import AlreadySuppressed, InvalidSubscriber
    from digest.readers.signup import subscribe
    from digest.store.subscribers import add_confirmed

    inv = invocation(ctx)
    conf, eng = inv.settings(), inv.engine()
    try:
        if confirmed:
            sub, changed = add_confirmed(eng, email, name=name, source="cli", now=db.utcnow())
            done = "added as active" if changed else "already active; nothing changed"
            console.print(f"{sub.email}: {done}", markup=False)
            return
        result = subscribe(eng, conf, email, name=name, source="cli", now=db.utcnow())
    except (InvalidSubscriber, AlreadySuppressed) as exc:
        fail(str(exc))
        return
    except Exception as exc:  # the transport's error: the subscriber is stored, the mail is not
        fail(f"confirmation mail not sent: {type(exc).__name__}: {exc}")
        return
    sub = result.subscriber
    if result.mail is not None:
        console.print(f"{sub.email}: pending; confirmation mail sent", markup=False)
    elif sub.status == "pending":
        when = f"{sub.confirm_sent_at:%Y-%m-%d %H:%M} UTC"
        console.print(
            f"{sub.email}: pending; a confirmation mail went out at {when}, so none was sent "
            f"now (at most one per {conf.confirm_resend_interval} s)",
            markup=False,
            soft_wrap=True,
        )
    else:
        console.print(f"{sub.email}: already {sub.status}; no mail sent", markup=False)


@app.command("import")
def subscribers_import(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a header row.")
    ],
    confirmed: Annotated[
        bool,
        typer.Option(
            "--confirmed", help="They already opted in: rows without a status are active."
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar, even on a terminal.")
    ] = False,
) -> None:
    """Import email[,name][,status][,timezone] rows; bad rows are listed, good ones imported.

    A file that cannot be read to its end (a quote left open, a byte that is not UTF-8) is
    refused whole: nothing is imported, and the error says which line to fix. No mail is sent.
    Unsubscribed, bounced and complained addresses are never brought back, so importing the
    same file twice changes nothing the second time. On a terminal a progress bar (stderr)
    shows how far into the file the import is.
    """
    from digest.cli.progress import progress_bar
    from digest.store.subscriber_csv import import_csv

    eng = invocation(ctx).engine()
    # Binary: import_csv decodes it, so a byte that is not UTF-8 is named by line and offset.
    with (
        open(file, "rb") as fh,
        progress_bar(
            f"importing {file.name}", total=os.fstat(fh.fileno()).st_size, unit="bytes", quiet=quiet
        ) as bar,
    ):
        report = import_csv(
            eng,
            fh,
            confirmed=confirmed,
            now=db.utcnow(),
            progress=lambda read, rows: bar.update(read, note=f"{rows:,} rows"),
        )
    for problem in report.errors:
        where = f"{file}:{problem.line}: {problem.message}"
        if problem.end_line is not None:
            # Two stray quotes pair up and hide the lines between them in one bad row.
            where += (
                f" (the row runs on to line {problem.end_line} inside a quoted cell; check the "
                f"quotes on line {problem.line})"
            )
        err.print(where, markup=False, soft_wrap=True)
    errors = len(report.errors)
    plural = "s" * (errors != 1)
    if report.refused:
        # Not the usual "added 0, ..." line: a torn file must not read like a small success.
        console.print(f"nothing imported, {errors} error{plural}", markup=False)
        raise typer.Exit(1)
    console.print(
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"kept unsubscribed/bounced/complained {report.kept_suppressed}, {errors} error{plural}",
        markup=False,
        soft_wrap=True,
    )
    if errors:
        raise typer.Exit(1)


@app.command("export")
def subscribers_export(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar, even on a terminal.")
    ] = False,
) -> None:
    """Write subscribers as CSV (email,name,status,timezone,language) to stdout; import reads it back.

    A progress bar, on a terminal, goes to stderr: stdout holds the CSV and nothing else.
    """
    from digest.cli.progress import progress_bar
    from digest.store.subscriber_csv import export_csv

    wanted = _status_option(status)
    out = sys.stdout  # taken before the bar starts: the CSV goes here and nowhere else
    with progress_bar("exporting", unit="rows", quiet=quiet) as bar:
        export_csv(
            invocation(ctx).engine(),
            out,
            wanted,  # type: ignore[arg-type]
            progress=bar.update,
        )


@app.command("list")
def subscribers_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
) -> None:
    """List subscribers: id, email, name, status, time zone, created."""
    from digest.store.subscribers import list_subscribers

    rows = list_subscribers(invocation(ctx).engine(), _status_option(status))  # type: ignore[arg-type]
    table = Table("id", "email", "name", "status", "timezone", "created", box=None)
    for sub in rows:
        table.add_row(
            str(sub.id),
            Text(sub.email),
            Text(sub.name or ""),
            sub.status,
            sub.timezone or "",
            f"{sub.created_at:%Y-%m-%d}",
        )
    console.print(table)
    console.print(f"{len(rows)} subscriber{'s' * (len(rows) != 1)}")


@app.command("count")
def subscribers_count(ctx: typer.Context) -> None:
    """How many subscribers there are in each status."""
    from digest.store.subscribers import count_by_status

    counts = count_by_status(invocation(ctx).engine())
    for status, n in counts.items():
        console.print(f"{status:<13}{n:>8}", markup=False)
    console.print(f"{'total':<13}{sum(counts.values()):>8}", markup=False)


@app.command("remove")
def subscribers_remove(ctx: typer.Context, email: str) -> None:
    """Erase a subscriber and their personal data (GDPR); delivery counts are kept."""
    from digest.store.subscribers import erase

    if not erase(invocation(ctx).engine(), email):
        fail(f"no subscriber {email.strip()!r}")
    console.print(
        f"removed {email.strip()}; delivery records keep their counts without the address",
        markup=False,
        soft_wrap=True,
    )
