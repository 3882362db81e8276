"""The `digest` command: parses arguments, calls the library, prints.

Every command is a thin wrapper over a function in a domain module, so what the CLI does can be
done from Python (and is tested there); this file only turns arguments into calls and results
into text.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine

from digest import db
from digest.config import CONFIG_FILE_ENV, Settings, get_settings
from digest.glossary import Glossary, InvalidGlossary, load_glossary, read_glossary
from digest.issues import featured_history
from digest.queue import (
    AlreadyFeatured,
    QueueError,
    add_to_queue,
    list_queue,
    move_in_queue,
    remove_from_queue,
)
from digest.selection import first_open_week, plan
from digest.weeks import IsoWeek, current_week, parse_week

app = typer.Typer(
    help="digest: a weekly 'term of the week' newsletter built from an AI glossary.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
terms_app = typer.Typer(help="Browse and validate the glossary in terms/.", no_args_is_help=True)
app.add_typer(terms_app, name="terms")
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@app.callback()
def _main(
    terms: Annotated[
        Path | None,
        typer.Option("--terms", help="Terms folder (env DIGEST_TERMS_DIR, default ./terms)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Settings file (env DIGEST_CONFIG, default ./digest.toml)."),
    ] = None,
) -> None:
    # Options become the matching env vars, so one settings object serves library and CLI alike.
    if terms is not None:
        os.environ["DIGEST_TERMS_DIR"] = str(terms)
    if config is not None:
        os.environ[CONFIG_FILE_ENV] = str(config)
    get_settings.cache_clear()


def settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        fail(f"invalid settings: {exc}")
        raise  # unreachable; keeps type checkers happy


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def glossary() -> Glossary:
    """The glossary, or exit 1 with every error in it."""
    try:
        return load_glossary(settings().terms_dir)
    except InvalidGlossary as exc:
        for problem in exc.errors:
            err.print(str(problem), markup=False, soft_wrap=True)
        fail(f"the glossary is invalid ({exc}); run 'digest terms validate'")
        raise


def engine() -> Engine:
    """The database engine, with the schema brought up to date first."""
    eng = db.make_engine(settings().database_url)
    db.upgrade(eng)
    return eng


# --------------------------------------------------------------------------- terms


@terms_app.command("list")
def terms_list(
    category: Annotated[str | None, typer.Option(help="Only this category.")] = None,
) -> None:
    """List terms: slug, title, category, difficulty, week added."""
    gloss = glossary()
    terms = gloss.in_category(category) if category else list(gloss)
    if category and not terms:
        fail(f"no category {category!r}; categories: {', '.join(gloss.categories())}")
    table = Table("slug", "title", "category", "difficulty", "added", box=None)
    for term in terms:
        table.add_row(term.slug, term.title, term.category, term.difficulty, str(term.added))
    console.print(table)
    console.print(f"{len(terms)} terms")


@terms_app.command("show")
def terms_show(slug: str) -> None:
    """Show one term (by slug, title or alias)."""
    gloss = glossary()
    term = gloss.lookup(slug)
    if term is None:
        fail(f"no term {slug!r}")
        return
    console.print(f"[bold]{term.title}[/bold]  ({term.slug})", markup=True)
    console.print(f"{term.category} · {term.difficulty} · added {term.added}")
    if term.aliases:
        names = [f"{a.name} ({a.lang})" if a.lang else a.name for a in term.aliases]
        console.print("Also known as: " + ", ".join(names))
    console.print()
    console.print(term.definition)
    for section in term.sections:
        console.print()
        console.print(f"[bold]{section.title}[/bold]", markup=True)
        console.print(Markdown(section.markdown))
    console.print()
    console.print("[bold]Related[/bold]", markup=True)
    for other in gloss.related(term.slug):
        console.print(f"  {other.slug}: {other.summary}", markup=False)
    console.print("[bold]Sources[/bold]", markup=True)
    for source in term.sources:
        console.print(f"  {source.title} <{source.url}>", markup=False)


@terms_app.command("validate")
def terms_validate(
    path: Annotated[
        Path | None, typer.Argument(help="Folder to check (default: the terms folder).")
    ] = None,
) -> None:
    """Check every term file; print each problem as path:line: field: message."""
    folder = path or settings().terms_dir
    gloss, errors = read_glossary(folder)
    for problem in errors:
        console.print(str(problem), markup=False, soft_wrap=True)
    if errors:
        files = len({e.path for e in errors})
        console.print(
            f"{len(errors)} error{'s' * (len(errors) != 1)} in {files} file{'s' * (files != 1)}"
        )
        raise typer.Exit(1)
    parts = gloss.components()
    console.print(f"{len(gloss)} terms, 0 errors")
    if len(parts) > 1:
        console.print(
            f"note: the related graph has {len(parts)} separate groups; "
            f"smallest: {', '.join(sorted(parts[-1]))}"
        )


# --------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema (every command also does this on start)."""
    eng = engine()
    console.print(f"database at revision {db.current_revision(eng)} ({eng.url.render_as_string()})")


# --------------------------------------------------------------------------- queue and plan

queue_app = typer.Typer(
    help="Editors' queue: terms to feature next, optionally pinned to a week.",
    no_args_is_help=True,
)
app.add_typer(queue_app, name="queue")


def _this_week() -> IsoWeek:
    return current_week(db.utcnow(), settings().zone)


def _week_option(name: str, value: str | None) -> IsoWeek | None:
    if value is None:
        return None
    try:
        return parse_week(value)
    except ValueError as exc:
        fail(f"{name} {exc}")
        raise


@queue_app.command("add")
def queue_add(
    slug: Annotated[str, typer.Argument(help="Term slug (or title, or alias).")],
    week: Annotated[
        str | None, typer.Option("--week", help="Pin to this ISO week, e.g. 2026-W49.")
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="A note for the editors.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Queue it even if it was featured before.")
    ] = False,
) -> None:
    """Queue a term to feature next, or pin it to a week."""
    pinned = _week_option("--week", week)
    gloss, eng = glossary(), engine()
    try:
        entry = add_to_queue(
            eng, gloss, slug, week=pinned, note=note, force=force, this_week=_this_week()
        )
    except AlreadyFeatured as exc:
        err.print(f"[yellow]warning:[/yellow] {exc}; add --force to queue it again", soft_wrap=True)
        raise typer.Exit(1) from None
    except QueueError as exc:
        fail(str(exc))
        return
    pin = f", pinned to {entry.week}" if entry.week else ""
    console.print(f"queued {entry.slug} at position {entry.position}{pin}", markup=False)


@queue_app.command("list")
def queue_list() -> None:
    """Show the queue in order, with pins and notes."""
    # A partly invalid glossary still lists: the queue is what an editor checks while fixing it.
    gloss, _errors = read_glossary(settings().terms_dir)
    entries = list_queue(engine())
    if not entries:
        console.print("the queue is empty")
        return
    this_week = _this_week()
    notes = any(e.note for e in entries)
    table = Table(box=None)
    table.add_column("#", justify="right")
    table.add_column("slug", no_wrap=True)
    table.add_column("title")
    table.add_column("pinned", no_wrap=True)
    if notes:
        table.add_column("note", overflow="fold")
    for entry in entries:
        term = gloss.get(entry.slug)
        title = term.title if term else "(gone from the glossary: skipped)"
        pinned = str(entry.week) if entry.week else ""
        if entry.week is not None and entry.week < this_week:
            pinned += " (missed)"  # waits its turn like an unpinned entry
        row: list[str | Text] = [str(entry.position), entry.slug, Text(title), pinned]
        table.add_row(*row, *([Text(entry.note or "")] if notes else []))
    console.print(table)


@queue_app.command("remove")
def queue_remove(slug: str) -> None:
    """Take a term out of the queue."""
    try:
        entry = remove_from_queue(engine(), slug)
    except QueueError as exc:
        fail(str(exc))
        return
    console.print(f"removed {entry.slug} from the queue", markup=False)


@queue_app.command("move")
def queue_move(
    slug: str,
    to: Annotated[int, typer.Option("--to", help="New position, 1 = next.")],
) -> None:
    """Move a queued term to another position."""
    try:
        entry = move_in_queue(engine(), slug, to)
    except QueueError as exc:
        fail(str(exc))
        return
    console.print(f"moved {entry.slug} to position {entry.position}", markup=False)


@app.command("plan")
def plan_command(
    weeks: Annotated[int, typer.Option("--weeks", min=1, max=520, help="How many weeks.")] = 12,
    start: Annotated[
        str | None,
        typer.Option("--from", help="First week (default: the first week without an issue)."),
    ] = None,
) -> None:
    """Show the coming weeks' featured terms (pins, queue, rotation); changes nothing."""
    first = _week_option("--from", start)
    gloss, eng = glossary(), engine()
    history = featured_history(eng)
    first = first or first_open_week(history, _this_week())
    try:
        picks = plan(gloss, history, list_queue(eng), first, weeks)
    except ValueError as exc:
        fail(str(exc))
        return
    # Slugs never wrap (they are what `queue add` takes); category and note wrap instead.
    notes = any(p.note for p in picks)
    table = Table(box=None)
    table.add_column("week", no_wrap=True)
    table.add_column("term", no_wrap=True, min_width=max(len(p.slug) for p in picks))
    table.add_column("category")
    table.add_column("difficulty", no_wrap=True)
    table.add_column("source", no_wrap=True)
    if notes:
        table.add_column("note", overflow="fold")
    for pick in picks:
        term = gloss[pick.slug]
        row: list[str | Text] = [
            str(pick.week),
            pick.slug,
            Text(term.category),
            term.difficulty,
            pick.source,
        ]
        table.add_row(*row, *([Text(pick.note or "")] if notes else []))
    console.print(table)


# --------------------------------------------------------------------------- run, status, issue

issue_app = typer.Typer(
    help="One issue's life: resume a stopped send, cancel.", no_args_is_help=True
)
app.add_typer(issue_app, name="issue")


def _ops_settings() -> Settings:
    """Settings, with structured logging set up as they say (run, status and issue log events)."""
    from digest.logs import configure_logging

    conf = settings()
    configure_logging(conf.log_level, conf.log_format)
    return conf


@app.command("run")
def run_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    now: Annotated[
        bool, typer.Option("--now", help="Also run the weekly job once, right after start.")
    ] = False,
) -> None:
    """Serve the web app and run the weekly job in one process; SIGTERM or Ctrl-C stops it cleanly."""
    from digest.schedule import serve

    serve(_ops_settings(), host=host, port=port, fire_now=now)


@app.command("status")
def status_command() -> None:
    """Show when the weekly job fires next, the latest issue and its deliveries, and subscribers."""
    from datetime import UTC

    from digest.status import gather_status

    conf = settings()
    report = gather_status(engine(), conf, db.utcnow())
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
    for n, zone in enumerate(report.zones):  # local-time delivery: one line per time zone
        name = zone.zone if zone.stored is not None else f"{zone.zone} (not set)"
        when = f"{zone.send_at:%a %H:%M} ({zone.send_at.astimezone(UTC):%a %H:%M} UTC)"
        rows.append(("zones" if n == 0 else "", f"{name}  {when}  {zone.sent}/{zone.readers} sent"))
    rows.append(("queue", f"{report.queue_length} term{'s' * (report.queue_length != 1)}"))
    people = ", ".join(f"{n} {status}" for status, n in sorted(report.subscribers.items()))
    rows.append(("subscribers", people or "none"))
    table = Table(box=None, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, Text(value))
    console.print(table)


@issue_app.command("resume")
def issue_resume(week: Annotated[str, typer.Argument(help="ISO week, e.g. 2026-W17.")]) -> None:
    """Send a paused issue on from where it stopped; nobody gets it twice. Ctrl-C pauses again.

    Exit status: 0 sent, 2 paused or busy in another process, 1 failed.
    """
    import signal
    import threading

    from digest.delivery.personalise import SendError
    from digest.issues import InvalidTransition
    from digest.schedule import send_week

    wk = _parse_week_arg(week)
    conf = _ops_settings()
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = send_week(conf, wk, stop=stop)
    except (InvalidTransition, SendError) as exc:
        fail(str(exc))
        return
    finally:
        signal.signal(signal.SIGINT, previous)
    summary = result.summary
    assert summary is not None
    console.print(
        f"{wk}: {summary.status} — {summary.sent} sent, {summary.skipped} skipped, "
        f"{summary.failed} failed this run; {summary.total_sent} sent in all"
        + (f" ({summary.reason})" if summary.reason else ""),
        markup=False,
    )
    if summary.status != "sent":  # the same exit codes as `digest send`
        raise typer.Exit(1 if summary.status == "failed" else 2)


@issue_app.command("cancel")
def issue_cancel(
    week: Annotated[str, typer.Argument(help="ISO week, e.g. 2026-W17.")],
    reason: Annotated[str, typer.Option(help="Why; shown by `digest status`.")] = "cancelled",
) -> None:
    """Mark an issue failed so no job sends it (planned, built, sending or paused)."""
    from digest.issues import InvalidTransition, transition

    wk = _parse_week_arg(week)
    try:
        issue = transition(engine(), wk, "failed", reason)
    except InvalidTransition as exc:
        fail(str(exc))
        return
    console.print(f"{issue.week}: failed ({issue.status_reason})", markup=False)


def _parse_week_arg(text: str) -> IsoWeek:
    try:
        return parse_week(text)
    except ValueError as exc:
        fail(str(exc))
        raise


# --------------------------------------------------------------------------- send


@app.command("send")
def send_command(
    week: Annotated[
        str | None, typer.Option("--week", help="ISO week, e.g. 2026-W17 (default: this week).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Count who would get it, size the first request; send nothing."
        ),
    ] = False,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="ADDRESS",
            help="Send one test copy (subject prefixed [TEST]) to ADDRESS; not recorded.",
        ),
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Send again only to readers whose delivery failed; the issue's state stays.",
        ),
    ] = False,
) -> None:
    """Send the week's issue to every subscriber once (building it first if needed).

    Safe to run again: a paused or interrupted send resumes where it stopped, and nobody gets the
    issue twice. Ctrl-C finishes the current batch and pauses. Exit status: 0 sent, 2 paused or
    busy in another process (run again), 1 failed.
    """
    import signal
    import threading

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from digest.delivery import TransportError, make_transport
    from digest.delivery.personalise import SendError
    from digest.delivery.runner import send_issue
    from digest.delivery.samples import plan_send, send_test
    from digest.preflight import send_gate

    if dry_run and to:
        fail("--dry-run and --to do not go together: a test send sends one mail")
    if retry_failed and (dry_run or to):
        fail("--retry-failed goes alone: it re-sends the failed deliveries of an issue")
    conf = settings()
    wk = _week_option("--week", week) or _this_week()
    eng = engine()
    try:
        transport = make_transport(conf)
    except ValueError as exc:
        fail(str(exc))
        return
    if retry_failed:
        _retry_failed(eng, conf, wk)
        return
    _build_if_needed(eng, conf, wk)
    try:
        if to:
            result = send_test(eng, conf, transport, wk, to)
            console.print(
                f"{wk}: test copy sent to {to} via {transport.name}"
                + (f" (message id {result.message_id})" if result.message_id else ""),
                markup=False,
                soft_wrap=True,
            )
            return
        if dry_run:
            plan_ = plan_send(eng, conf, transport, wk, now=db.utcnow())
            console.print(
                f"{wk}: {plan_.recipients:,} subscriber{'s' * (plan_.recipients != 1)} would get "
                f"this issue via {transport.name} ({plan_.already_done:,} already handled), in "
                f"{plan_.batches:,} batch{'es' * (plan_.batches != 1)} of up to "
                f"{plan_.batch_size:,}; first request {plan_.first_batch_bytes:,} bytes",
                markup=False,
                soft_wrap=True,
            )
            return
    except (SendError, TransportError) as exc:
        fail(str(exc))
        return

    stop = threading.Event()
    handlers = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )
    task = bar.add_task(f"sending {wk}", total=None)
    try:
        with bar:
            summary = send_issue(
                eng,
                conf,
                transport,
                wk,
                now=db.utcnow,
                preflight=send_gate(eng, conf),
                stop=stop,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except SendError as exc:
        fail(str(exc))
        return
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if summary.took_over:  # a killed sender's lease, taken over without waiting for it
        console.print(f"{wk}: {summary.took_over}", markup=False, soft_wrap=True)
    counts = f"sent {summary.sent:,}, skipped {summary.skipped:,}, failed {summary.failed:,}"
    if summary.refused:
        counts += f", refused {summary.refused:,} (`digest deliveries ADDRESS` says why)"
    if summary.uncertain:
        counts += f", uncertain {summary.uncertain:,} (not re-sent; see docs/delivery.md)"
    console.print(
        f"{wk}: {counts} in {summary.duration:.1f} s "
        f"({summary.batches} batch{'es' * (summary.batches != 1)}, {summary.api_calls} "
        f"request{'s' * (summary.api_calls != 1)}); {summary.total_sent:,} sent in all",
        markup=False,
        soft_wrap=True,
    )
    if summary.status == "sent":
        console.print(f"{wk}: sent" + (f" ({summary.reason})" if summary.reason else ""))
        return
    if summary.status == "failed":
        fail(f"{wk}: failed: {summary.reason}")
    again = f"run `digest send --week {wk}` again"
    if summary.status == "busy":
        # The holder is alive, on another host, or cannot be checked: its lease decides.
        again = f"{again} once that process has finished or its lease has run out"
    err.print(f"{wk}: {summary.status}: {summary.reason}; {again}", markup=False, soft_wrap=True)
    raise typer.Exit(2)


def _build_if_needed(eng: Engine, conf: Settings, wk: IsoWeek) -> None:
    """Build the week's issue when there is none yet (or only a plan), as `digest build` would."""
    from digest.build import build_issue
    from digest.issues import get_issue

    issue = get_issue(eng, wk)
    if issue is not None and issue.html is not None:
        return
    try:
        build_issue(eng, conf, glossary(), wk, now=db.utcnow())
    except typer.Exit:
        raise
    except Exception as exc:  # the build's own errors say what is wrong; show them as they are
        fail(f"cannot build the issue for {wk}: {exc}")
    console.print(f"{wk}: built")


# --------------------------------------------------------------------------- build and preview


def _week_or_this(week: str | None) -> IsoWeek:
    return _parse_week_arg(week) if week is not None else _this_week()


@app.command("build")
def build_command(
    week: Annotated[
        str | None, typer.Option("--week", help="ISO week, e.g. 2026-W48 (default: this week).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the files to.")] = Path(
        "build"
    ),
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build again, until sending has started.")
    ] = False,
) -> None:
    """Build the week's issue; write the mail, its archive page, the archive index and feed."""
    from digest.build import build_site
    from digest.checks import QualityError
    from digest.issues import InvalidTransition, get_issue
    from digest.render import RenderError

    wk = _week_or_this(week)
    conf, gloss, eng = settings(), glossary(), engine()
    before = get_issue(eng, wk)
    try:
        output = build_site(eng, conf, gloss, wk, out, now=db.utcnow(), rebuild=rebuild)
    except (QualityError, RenderError, InvalidTransition, ValueError) as exc:
        fail(str(exc))
        return
    record = output.record
    if before is not None and before.built_at == record.built_at:
        console.print(f"{wk}: already {record.status}: {record.featured_slug} (--rebuild to redo)")
    else:
        console.print(f"{wk}: built: {record.featured_slug} ({record.pick_source})")
    console.print(f"subject: {record.subject}", markup=False, soft_wrap=True)
    console.print(f"html: {len((record.html or '').encode()) / 1024:.1f} KB")
    for path in output.files:
        console.print(str(path), markup=False, soft_wrap=True)


def _gui_browser() -> bool:
    """Whether webbrowser would open a window. Without a display it falls back to console
    browsers (lynx, w3m) that take over the terminal, so then the path is printed instead."""
    if os.environ.get("BROWSER"):
        return True
    if os.name == "posix" and not sys.platform.startswith("darwin"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


@app.command("preview")
def preview_command(
    week: Annotated[
        str | None, typer.Option("--week", help="ISO week, e.g. 2026-W48 (default: this week).")
    ] = None,
) -> None:
    """Render the week's issue into a temporary folder and open it; nothing is stored."""
    import tempfile
    import webbrowser

    from digest.build import preview_issue, write_build
    from digest.render import RenderError

    wk = _week_or_this(week)
    conf, gloss, eng = settings(), glossary(), engine()
    try:
        rendered, problems = preview_issue(eng, conf, gloss, wk, now=db.utcnow())
    except (RenderError, ValueError) as exc:
        fail(str(exc))
        return
    out = Path(tempfile.mkdtemp(prefix=f"digest-preview-{wk}-"))
    write_build(out, rendered)
    for problem in problems:
        err.print(f"warning: {problem}", markup=False, soft_wrap=True)
    console.print(f"{wk}: {rendered.subject}", markup=False, soft_wrap=True)
    email = out / "email.html"
    if _gui_browser() and webbrowser.open(email.as_uri()):
        console.print(f"opened {email}", markup=False, soft_wrap=True)
    else:
        console.print(f"preview: {email}", markup=False, soft_wrap=True)


# --------------------------------------------------------------------------- subscribers and serve

subscribers_app = typer.Typer(
    help="Subscribers: add, import, export, list, count, remove (GDPR erase).",
    no_args_is_help=True,
)
app.add_typer(subscribers_app, name="subscribers")


def _status_option(status: str | None) -> str | None:
    from digest.subscribers import STATUSES

    if status is not None and status not in STATUSES:
        fail(f"no status {status!r}; statuses: {', '.join(STATUSES)}")
    return status


@subscribers_app.command("add")
def subscribers_add(
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
    from digest.subscribers import AlreadySuppressed, InvalidSubscriber, add_confirmed, subscribe

    conf, eng = settings(), engine()
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


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a header row.")
    ],
    confirmed: Annotated[
        bool,
        typer.Option(
            "--confirmed", help="They already opted in: rows without a status are active."
        ),
    ] = False,
) -> None:
    """Import email[,name][,status][,timezone] rows; bad rows are listed, good ones imported.

    A file that cannot be read to its end (a quote left open, a byte that is not UTF-8) is
    refused whole: nothing is imported, and the error says which line to fix. No mail is sent. Unsubscribed, bounced and complained addresses are never brought back, so
    importing the same file twice changes nothing the second time.
    """
    from digest.subscribers import import_csv

    eng = engine()
    # Binary: import_csv decodes it, so a byte that is not UTF-8 is named by line and offset.
    with open(file, "rb") as fh:
        report = import_csv(eng, fh, confirmed=confirmed, now=db.utcnow())
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


@subscribers_app.command("export")
def subscribers_export(
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
) -> None:
    """Write subscribers as CSV (email,name,status,timezone) to stdout; import reads it back."""
    from digest.subscribers import export_csv

    export_csv(engine(), sys.stdout, _status_option(status))  # type: ignore[arg-type]


@subscribers_app.command("list")
def subscribers_list(
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
) -> None:
    """List subscribers: id, email, name, status, time zone, created."""
    from digest.subscribers import list_subscribers

    rows = list_subscribers(engine(), _status_option(status))  # type: ignore[arg-type]
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


@subscribers_app.command("count")
def subscribers_count() -> None:
    """How many subscribers there are in each status."""
    from digest.subscribers import count_by_status

    counts = count_by_status(engine())
    for status, n in counts.items():
        console.print(f"{status:<13}{n:>8}", markup=False)
    console.print(f"{'total':<13}{sum(counts.values()):>8}", markup=False)


@subscribers_app.command("remove")
def subscribers_remove(email: str) -> None:
    """Erase a subscriber and their personal data (GDPR); delivery counts are kept."""
    from digest.subscribers import erase

    if not erase(engine(), email):
        fail(f"no subscriber {email.strip()!r}")
    console.print(
        f"removed {email.strip()}; delivery records keep their counts without the address",
        markup=False,
        soft_wrap=True,
    )


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
) -> None:
    """Run the web service (subscribe, confirm, unsubscribe, archive, feed) with uvicorn."""
    import uvicorn

    from digest.web import create_app

    conf = settings()
    console.print(f"serving {conf.newsletter_name} on http://{host}:{port}/", markup=False)
    uvicorn.run(create_app(conf), host=host, port=port)


# --------------------------------------------------------------------------- check


@app.command("check")
def check_command(
    week: Annotated[
        str | None, typer.Option("--week", help="ISO week, e.g. 2026-W17 (default: this week).")
    ] = None,
) -> None:
    """Check the week's built issue as `digest send` will; exit 1 listing every problem.

    The mail (size, lang, absolute links, image alt text, the text part), its archive page, the
    first batch's real messages (List-Unsubscribe headers, markers, signed links) and the feed.
    """
    from digest.preflight import check_issue

    wk = _week_or_this(week)
    notes: list[str] = []
    problems = check_issue(engine(), settings(), wk, now=db.utcnow(), notes=notes)
    for note in notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    for problem in problems:
        console.print(f"- {problem}", markup=False, soft_wrap=True)
    if problems:
        fail(f"{wk}: {len(problems)} problem{'s' * (len(problems) != 1)}")
    console.print(f"{wk}: no problems found", markup=False)


@db_app.command("backup")
def db_backup(
    path: Annotated[Path, typer.Argument(help="Where to write the copy, e.g. backups/digest.db.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace PATH if it exists.")
    ] = False,
) -> None:
    """Copy the SQLite database to PATH while digest keeps running (PostgreSQL: use pg_dump)."""
    from digest.backup import BackupError, backup_database

    try:
        size = backup_database(engine(), path, overwrite=overwrite)
    except BackupError as exc:
        fail(str(exc))
        return
    console.print(
        f"backed up the database to {path} ({size:,} bytes)", markup=False, soft_wrap=True
    )


# --------------------------------------------------------------------------- deliveries


@app.command("deliveries")
def deliveries_command(
    email: Annotated[
        str | None, typer.Argument(help="A reader's address: what they received and when.")
    ] = None,
    week: Annotated[
        str | None, typer.Option("--week", help="ISO week, e.g. 2026-W17 (default: this week).")
    ] = None,
) -> None:
    """The delivery log: an issue's deliveries by status, or one reader's history.

    Without EMAIL: counts for the week's issue (bounced = readers with a bounce or drop event
    for it, or who got it and are bounced now). With EMAIL: each issue they were due, its
    status, when it went out, the provider's message id and events (--week: only that week).
    """
    from digest.delivery.log import issue_deliveries, reader_log

    wk = _week_option("--week", week)
    eng = engine()
    if email is None:
        wk = wk or _this_week()
        counts = issue_deliveries(eng, wk)
        if counts is None:
            fail(f"there is no issue for {wk}")
            return
        console.print(f"{wk}: issue {counts.issue_status}", markup=False)
        shown = [("sent", counts.sent), ("failed", counts.failed), ("skipped", counts.skipped)]
        shown += [("bounced", counts.bounced)]
        if counts.refused:
            shown.append(("refused", counts.refused))
        if counts.claimed:
            shown.append(("in flight", counts.claimed))
        for label, n in shown:
            console.print(f"{label:<13}{n:>8}", markup=False)
        return
    history = reader_log(eng, email)
    if history is None:
        fail(f"no subscriber {email.strip()!r}")
        return
    sub = history.subscriber
    console.print(f"{sub.email}: {sub.status}", markup=False)
    rows = [d for d in history.deliveries if wk is None or d.week == wk]
    if not rows:
        console.print("no deliveries" + (f" for {wk}" if wk else ""))
    for d in rows:  # one line each, never cut: message ids are for pasting into the provider
        line = f"{d.week}  {d.status:<7}  "
        line += f"{d.sent_at:%Y-%m-%d %H:%M} UTC" if d.sent_at else "not sent"
        if d.message_id:
            line += f"  id {d.message_id}"
        if d.events:
            line += "  events: " + ", ".join(
                f"{e.kind} {e.occurred_at:%Y-%m-%d %H:%M}" for e in d.events
            )
        if d.error:
            line += f"  ({d.error})"
        console.print(line, markup=False, soft_wrap=True)
    loose = [e for e in history.events if e.week is None]
    for event in loose:
        detail = f" ({event.detail})" if event.detail else ""
        console.print(
            f"event: {event.kind} {event.occurred_at:%Y-%m-%d %H:%M}{detail}",
            markup=False,
            soft_wrap=True,
        )


def _retry_failed(eng: Engine, conf: Settings, wk: IsoWeek) -> None:
    """`digest send --retry-failed`: re-send failed rows only; exit codes as `digest send`."""
    import signal
    import threading

    from digest.delivery import make_transport
    from digest.delivery.personalise import SendError
    from digest.delivery.runner import retry_failed

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        summary = retry_failed(eng, conf, make_transport(conf), wk, now=db.utcnow, stop=stop)
    except SendError as exc:
        fail(str(exc))
        return
    finally:
        signal.signal(signal.SIGINT, previous)
    console.print(
        f"{wk}: retried failed deliveries: sent {summary.sent:,}, skipped {summary.skipped:,}, "
        f"failed {summary.failed:,}; {summary.total_sent:,} sent in all ({summary.reason})",
        markup=False,
        soft_wrap=True,
    )
    if summary.status == "failed":
        raise typer.Exit(1)
    if summary.status != "sent":
        raise typer.Exit(2)


# --------------------------------------------------------------------------- init


@app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the newsletter; made if missing.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Add what is missing to a folder that is not empty; never overwrites."
        ),
    ] = False,
) -> None:
    """Start a newsletter in DIRECTORY: starter terms/, digest.toml, templates/, .gitignore."""
    import shlex

    from digest.scaffold import ScaffoldError, scaffold

    try:
        done = scaffold(directory, force=force)
    except ScaffoldError as exc:
        fail(str(exc))
        return
    except OSError as exc:  # a read-only or full disk: say which path, not a traceback
        fail(f"cannot write {exc.filename or directory}: {exc.strerror or exc}")
        return
    for path in done.created:
        console.print(f"created {path}", markup=False, soft_wrap=True)
    for path in done.kept:
        console.print(f"kept {path} (already there)", markup=False, soft_wrap=True)
    console.print(
        f"next: cd {shlex.quote(str(directory))} && digest demo", markup=False, soft_wrap=True
    )


# --------------------------------------------------------------------------- demo

DEMO_READERS = (
    ("ada@example.com", "Ada"),
    ("grace@example.com", "Grace"),
    ("alan@example.com", "Alan"),
)


@app.command("demo")
def demo() -> None:
    """Seed three demo readers, then build and send this week's issue (the weekly job, now).

    On the embedded defaults that means SQLite under subscribers/ and .eml files in outbox/,
    so a fresh checkout shows the whole pipeline without an API key. Safe to run again: the
    readers are added once and an issue is never sent twice.
    """
    import contextlib

    from digest.issues import get_issue
    from digest.schedule import run_weekly
    from digest.subscribers import AlreadySuppressed, add_confirmed

    conf = settings()
    if not conf.terms_dir.is_dir():  # before engine(): no database left in the wrong folder
        fail(
            f"no glossary here: {conf.terms_dir} is not a folder (in {Path.cwd()}); run "
            "'digest init DIR' to start a newsletter and 'digest demo' inside DIR, or point "
            "--terms / DIGEST_TERMS_DIR at a glossary"
        )
    eng = engine()
    now = db.utcnow()
    for email, name in DEMO_READERS:
        with contextlib.suppress(AlreadySuppressed):
            add_confirmed(eng, email, name=name, source="demo", now=now)
    week = current_week(now, conf.zone)
    result = run_weekly(conf, week, now=now)
    issue = get_issue(eng, week)
    featured = issue.featured_slug if issue else "-"
    console.print(f"{week}: featured {featured}; issue {result.status}", markup=False)
    if result.summary is not None:
        s = result.summary
        console.print(
            f"sent {s.sent:,}, skipped {s.skipped:,}, failed {s.failed:,} "
            f"({s.total_sent:,} sent in all) in {s.duration:.2f}s",
            markup=False,
        )
    if conf.transport == "outbox":
        files = sorted(Path(conf.outbox_dir).glob("*.eml"))
        console.print(f"{len(files)} message(s) in {conf.outbox_dir}/", markup=False)
    if issue is None or issue.status not in ("sent", "sending"):
        reason = issue.status_reason if issue else "no issue was built"
        fail(f"the issue was not sent: {reason}")


if __name__ == "__main__":  # pragma: no cover
    app()
