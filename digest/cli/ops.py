"""Running digest: `run`, `serve`, `status`, and `digest db` (upgrade, backup, copy).

The long-running commands hand over to the service at once; `status` and `db` read and print.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from digest.cli._common import console, db, fail, invocation

if TYPE_CHECKING:  # imported by the command itself: `digest --help` stays quick
    from digest.campaign.status import StatusReport

db_app = typer.Typer(
    help="Database schema, backups and moving to another database.", no_args_is_help=True
)


def run_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    now: Annotated[
        bool, typer.Option("--now", help="Also run the weekly job once, right after start.")
    ] = False,
) -> None:
    """Serve the web app and run the weekly job in one process; SIGTERM or Ctrl-C stops it cleanly."""
    from digest.service import serve

    serve(invocation(ctx).ops_settings(), host=host, port=port, fire_now=now)


def serve_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
) -> None:
    """Run the web service (subscribe, confirm, unsubscribe, archive, feed) with uvicorn."""
    import uvicorn

    from digest.web import create_app

    conf = invocation(ctx).settings()
    console.print(f"serving {conf.newsletter_name} on http://{host}:{port}/", markup=False)
    uvicorn.run(create_app(conf), host=host, port=port)


def status_command(ctx: typer.Context) -> None:
    """Show when the weekly job fires next, the latest issue and its deliveries, and subscribers."""
    from datetime import UTC

    from digest.campaign.status import gather_status

    inv = invocation(ctx)
    conf = inv.settings()
    report = gather_status(inv.engine(), conf, db.utcnow())
    rows: list[tuple[str, str]] = [("schedule", f"{report.schedule} ({report.timezone})")]
    if report.next_fire is None:
        rows.append(("next run", "never (the schedule has no future fire time)"))
    else:
        local = report.next_fire.strftime("%a %Y-%m-%d %H:%M %Z")
        utc = report.next_fire.astimezone(UTC).strftime("%H:%M UTC")
        note = ""
        if report.overdue:
            note = "  (overdue: no `digest run` is running, or it is firing now)"
        elif not report.scheduled:
            note = "  (computed: `digest run` has not stored the job yet)"
        rows.append(("next run", f"{local} ({utc}){note}"))
    if report.issue is None:
        rows.append(("issue", "none yet"))
    else:
        issue = report.issue.issue
        state = issue.status + (f": {issue.status_reason}" if issue.status_reason else "")
        if report.issue.lease:  # never just "sending": who holds it, and whether to wait
            state += f" — {report.issue.lease}"
        rows.append(("issue", f"{issue.week} {issue.featured_slug} — {state}"))
        counts = report.issue.deliveries
        shown = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
        rows.append(("deliveries", shown))
    rows.append(("next issue", _next_issue(report)))
    if report.leader is not None:  # PostgreSQL: which replica fires the jobs
        leader = report.leader.removeprefix("digest-leader ")
        rows.append(("scheduler", f"led by {leader}" if leader else _NO_LEADER))
    for n, zone in enumerate(report.zones):  # local-time delivery: one line per time zone
        name = zone.zone if zone.stored is not None else f"{zone.zone} (not set)"
        when = f"{zone.send_at:%a %H:%M} ({zone.send_at.astimezone(UTC):%a %H:%M} UTC)"
        rows.append(("zones" if n == 0 else "", f"{name}  {when}  {zone.sent}/{zone.readers} sent"))
    rows.append(("queue", f"{report.queue_length} term{'s' * (report.queue_length != 1)}"))
    people = ", ".join(f"{n} {status}" for status, n in sorted(report.subscribers.items()))
    rows.append(("subscribers", people or "none"))
    health = report.glossary
    errors = len(health.errors)
    rows.append(("glossary", f"{health.terms} terms, {errors} error{'s' * (errors != 1)}"))
    rows.extend(("", str(problem)) for problem in health.errors)  # path:line: field: message
    table = Table(box=None, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, Text(value))
    console.print(table)


_NO_LEADER = "no replica leads: no `digest run` is running against this database"


def _next_issue(report: StatusReport) -> str:
    """`2026-W50 encoder-decoder (queue) — approved; goes out Mon 2026-12-07 09:00 CET`."""
    coming = report.next_issue
    if coming is None:
        return "none (no usable term to pick; see glossary)"
    row = coming.planned
    shown = f"{row.week} {row.slug} ({row.source}) — {row.state}"
    if row.issue is not None and row.issue.status_reason:
        shown += f": {row.issue.status_reason}"
    if coming.missed and coming.send_at is not None:
        shown += (
            f"; its send time ({coming.send_at:%a %Y-%m-%d %H:%M %Z}) has passed: "
            f"`digest send --week {row.week}` sends it now"
        )
    elif coming.send_at is not None and row.state != "sent":
        shown += f"; goes out {coming.send_at:%a %Y-%m-%d %H:%M %Z}"
    if row.note:
        shown += f" ({row.note})"
    return shown


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the database schema (every command also does this on start)."""
    eng = invocation(ctx).engine()
    console.print(f"database at revision {db.current_revision(eng)} ({eng.url.render_as_string()})")


@db_app.command("backup")
def db_backup(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Where to write the copy, e.g. backups/digest.db.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace PATH if it exists.")
    ] = False,
) -> None:
    """Copy the SQLite database to PATH while digest keeps running (PostgreSQL: use pg_dump)."""
    from digest.store.backup import BackupError, backup_database

    try:
        size = backup_database(invocation(ctx).engine(), path, overwrite=overwrite)
    except BackupError as exc:
        fail(str(exc))
        return
    console.print(
        f"backed up the database to {path} ({size:,} bytes)", markup=False, soft_wrap=True
    )


@db_app.command("copy")
def db_copy(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            help="The empty database to copy into, e.g. postgresql+psycopg://digest@db/digest.",
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Copy without asking first.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar, even on a terminal.")
    ] = False,
) -> None:
    """Copy every table into the empty database at URL (SQLite up to PostgreSQL), checked row for row.

    The source (DIGEST_DATABASE_URL) is only read, and not migrated first: a source behind this
    digest's schema is refused with what to run. Stop every digest process writing to it first.
    """
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from digest.cli.progress import progress_bar
    from digest.store.db_copy import CopyFailed, CopyRefused, copy_database, shown_url

    conf = invocation(ctx).settings()
    try:
        target = db.make_engine(to)
    except (ArgumentError, ImportError) as exc:
        fail(f"--to is not a database URL digest can use: {exc}")
        return
    source = db.make_engine(conf.database_url)  # not db.upgrade: a copy writes nothing here
    console.print(
        f"copying {shown_url(source.url)} → {shown_url(target.url)}", markup=False, soft_wrap=True
    )
    if not yes:
        typer.confirm(
            "every digest process writing to the source is stopped; copy now?", abort=True
        )
    try:
        with progress_bar("copying", quiet=quiet) as bar:
            report = copy_database(
                source,
                target,
                progress=lambda note, done, total: bar.update(done, total, note=note),
            )
    except CopyRefused as exc:
        fail(f"nothing copied: {exc}")
        return
    except CopyFailed as exc:
        fail(f"the copy failed and was rolled back, the target holds no row: {exc}")
        return
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines() or [type(exc.orig).__name__]
        fail(f"the copy failed and was rolled back, the target holds no row: {reason[0]}")
        return
    finally:
        source.dispose()
        target.dispose()
    table = Table(box=None)
    table.add_column("table", style="bold", no_wrap=True)
    table.add_column("rows", justify="right")
    table.add_column("checksum")
    table.add_column("check")
    for copied in report.tables:
        table.add_row(
            copied.name,
            f"{copied.copied:,}",
            copied.checksum,
            "same" if copied.verified else "DIFFERS",
        )
    console.print(table)
    console.print(
        f"copied {report.rows:,} rows; every table reads back as in the source. Next: set "
        f"DIGEST_DATABASE_URL={shown_url(target.url)} (with its password) for every digest "
        "process and start them again; keep the old database until the new one has sent an issue.",
        markup=False,
        soft_wrap=True,
    )
