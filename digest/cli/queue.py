"""`digest queue` (the editors' queue: add, list, remove, move) and `digest plan`.

`plan` shows what the queue, pins and rotation will feature, so it lives with the queue it reads.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from digest.cli._common import console, err, fail, invocation, week_option
from digest.core.selection import first_open_week, plan
from digest.store import db
from digest.store.issues import featured_history
from digest.store.queue import (
    AlreadyFeatured,
    QueueError,
    add_to_queue,
    list_queue,
    move_in_queue,
    remove_from_queue,
)
from digest.store.terms import read_glossary

app = typer.Typer(
    help="Editors' queue: terms to feature next, optionally pinned to a week.",
    no_args_is_help=True,
)


@app.command("add")
def queue_add(
    ctx: typer.Context,
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
    pinned = week_option("--week", week)
    inv = invocation(ctx)
    gloss, eng = inv.glossary(), inv.engine()
    try:
        entry = add_to_queue(
            eng,
            gloss,
            slug,
            week=pinned,
            note=note,
            force=force,
            this_week=inv.this_week(),
            now=db.utcnow(),
        )
    except AlreadyFeatured as exc:
        err.print(f"[yellow]warning:[/yellow] {exc}; add --force to queue it again", soft_wrap=True)
        raise typer.Exit(1) from None
    except QueueError as exc:
        fail(str(exc))
        return
    pin = f", pinned to {entry.week}" if entry.week else ""
    console.print(f"queued {entry.slug} at position {entry.position}{pin}", markup=False)


@app.command("list")
def queue_list(ctx: typer.Context) -> None:
    """Show the queue in order, with pins and notes."""
    # A partly invalid glossary still lists: the queue is what an editor checks while fixing it.
    inv = invocation(ctx)
    gloss, _errors = read_glossary(inv.settings().terms_dir)
    entries = list_queue(inv.engine())
    if not entries:
        console.print("the queue is empty")
        return
    week = inv.this_week()
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
        if entry.week is not None and entry.week < week:
            pinned += " (missed)"  # waits its turn like an unpinned entry
        row: list[str | Text] = [str(entry.position), entry.slug, Text(title), pinned]
        table.add_row(*row, *([Text(entry.note or "")] if notes else []))
    console.print(table)


@app.command("remove")
def queue_remove(ctx: typer.Context, slug: str) -> None:
    """Take a term out of the queue."""
    try:
        entry = remove_from_queue(invocation(ctx).engine(), slug)
    except QueueError as exc:
        fail(str(exc))
        return
    console.print(f"removed {entry.slug} from the queue", markup=False)


@app.command("move")
def queue_move(
    ctx: typer.Context,
    slug: str,
    to: Annotated[int, typer.Option("--to", help="New position, 1 = next.")],
) -> None:
    """Move a queued term to another position."""
    try:
        entry = move_in_queue(invocation(ctx).engine(), slug, to)
    except QueueError as exc:
        fail(str(exc))
        return
    console.print(f"moved {entry.slug} to position {entry.position}", markup=False)


def plan_command(
    ctx: typer.Context,
    weeks: Annotated[int, typer.Option("--weeks", min=1, max=520, help="How many weeks.")] = 12,
    start: Annotated[
        str | None,
        typer.Option("--from", help="First week (default: the first week without an issue)."),
    ] = None,
) -> None:
    """Show the coming weeks' featured terms (pins, queue, rotation); changes nothing."""
    first = week_option("--from", start)
    inv = invocation(ctx)
    gloss, eng = inv.glossary(), inv.engine()
    history = featured_history(eng)
    first = first or first_open_week(history, inv.this_week())
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
