"""`digest queue` (the editors' queue: add, pin, list, remove, move) and `digest plan`.

`plan` shows what the queue, pins and rotation will feature, so it lives with the queue it reads;
both show built issues as built (`campaign.plan.coming_weeks`, the one view of the coming weeks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from digest.cli._common import (
    Invocation,
    console,
    db,
    err,
    fail,
    invocation,
    lazy_module,
    week_option,
)
from digest.model.glossary import Glossary

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from digest.campaign import plan
    from digest.campaign.plan import PlannedWeek
    from digest.store import audit, issues, queue
else:  # loaded by the commands that use them: they bring SQLAlchemy
    plan = lazy_module("digest.campaign.plan")
    audit = lazy_module("digest.store.audit")
    issues = lazy_module("digest.store.issues")
    queue = lazy_module("digest.store.queue")

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
        entry = queue.add_to_queue(
            eng,
            gloss,
            slug,
            week=pinned,
            note=note,
            force=force,
            this_week=inv.this_week(),
            now=db.utcnow(),
        )
    except queue.AlreadyFeatured as exc:
        err.print(f"[yellow]warning:[/yellow] {exc}; add --force to queue it again", soft_wrap=True)
        raise typer.Exit(1) from None
    except queue.QueueError as exc:
        fail(str(exc))
        return
    pinned_to = f", pinned to {entry.week}" if entry.week else ""
    _audit(eng, "queue.add", entry.slug, f"position {entry.position}{pinned_to}")
    console.print(f"queued {entry.slug} at position {entry.position}{pinned_to}", markup=False)


@app.command("pin")
def queue_pin(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="Term slug (or title, or alias).")],
    week: Annotated[str, typer.Option("--week", help="The ISO week to feature it, e.g. 2026-W50.")],
    force: Annotated[
        bool, typer.Option("--force", help="Pin it even if it was featured before.")
    ] = False,
) -> None:
    """Pin a term to a week: a queued one keeps its place and note, another is queued pinned."""
    pinned = week_option("--week", week)
    assert pinned is not None  # the option is required
    inv = invocation(ctx)
    gloss, eng = inv.glossary(), inv.engine()
    try:
        entry = queue.pin(eng, gloss, slug, pinned, this_week=inv.this_week(), force=force)
    except queue.AlreadyFeatured as exc:
        err.print(f"[yellow]warning:[/yellow] {exc}; add --force to pin it again", soft_wrap=True)
        raise typer.Exit(1) from None
    except queue.QueueError as exc:
        fail(str(exc))
        return
    _audit(eng, "queue.pin", entry.slug, f"week {entry.week}, position {entry.position}")
    console.print(f"pinned {entry.slug} to {entry.week} (position {entry.position})", markup=False)


@app.command("list")
def queue_list(ctx: typer.Context) -> None:
    """Show the coming built issues, then the queue in order, with pins and notes."""
    # A partly invalid glossary still lists: the queue is what an editor checks while fixing it.
    inv = invocation(ctx)
    gloss, eng = inv.glossary(), inv.engine()
    built = _coming_built(eng, inv, gloss)
    if built:
        console.print("built (coming issues: out of the queue already)", markup=False)
        table = Table(box=None)
        for column in ("week", "slug", "title", "state", "source"):
            table.add_column(column, no_wrap=column in ("week", "slug"))
        for coming in built:
            table.add_row(
                str(coming.week), coming.slug, Text(coming.title or ""), coming.state, coming.source
            )
        console.print(table)
    entries = queue.list_queue(eng)
    if not entries:
        console.print("the queue is empty")
        return
    if built:
        console.print("queue", markup=False)
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
        if term is not None:
            title = term.title
        elif entry.slug in gloss.left_out:
            title = "(its file has errors: skipped until fixed)"
        else:
            title = "(gone from the glossary: skipped)"
        pinned = str(entry.week) if entry.week else ""
        if entry.week is not None and entry.week < week:
            pinned += " (missed)"  # waits its turn like an unpinned entry
        row: list[str | Text] = [str(entry.position), entry.slug, Text(title), pinned]
        table.add_row(*row, *([Text(entry.note or "")] if notes else []))
    console.print(table)


def _coming_built(eng: Engine, inv: Invocation, gloss: Glossary) -> list[PlannedWeek]:
    """The stored issues from this week on that have not gone out: built, approved, held,
    sending, paused or failed — their terms left the queue when they were built."""
    this_week = inv.this_week()
    weeks = [i.week for i in issues.list_issues(eng, newest_first=False) if i.week >= this_week]
    if not weeks:
        return []
    span = weeks[-1].weeks_since(this_week) + 1
    rows = plan.coming_weeks(
        eng, inv.settings(), gloss, start=this_week, weeks=span, now=db.utcnow()
    )
    return [r for r in rows if r.issue is not None and r.state != "sent"]


@app.command("remove")
def queue_remove(ctx: typer.Context, slug: str) -> None:
    """Take a term out of the queue."""
    eng = invocation(ctx).engine()
    try:
        entry = queue.remove_from_queue(eng, slug)
    except queue.QueueError as exc:
        fail(str(exc))
        return
    _audit(eng, "queue.remove", entry.slug, None)
    console.print(f"removed {entry.slug} from the queue", markup=False)


@app.command("move")
def queue_move(
    ctx: typer.Context,
    slug: str,
    to: Annotated[int, typer.Option("--to", help="New position, 1 = next.")],
) -> None:
    """Move a queued term to another position."""
    eng = invocation(ctx).engine()
    try:
        entry = queue.move_in_queue(eng, slug, to)
    except queue.QueueError as exc:
        fail(str(exc))
        return
    _audit(eng, "queue.move", entry.slug, f"position {entry.position}")
    console.print(f"moved {entry.slug} to position {entry.position}", markup=False)


def plan_command(
    ctx: typer.Context,
    weeks: Annotated[int, typer.Option("--weeks", min=1, max=520, help="How many weeks.")] = 12,
    start: Annotated[
        str | None,
        typer.Option("--from", help="First week (default: the next issue to go out)."),
    ] = None,
) -> None:
    """Show the coming weeks: built, approved, held and sent issues as they are, and the terms
    the pins, queue and rotation will feature in the rest; changes nothing."""
    first = week_option("--from", start)
    inv = invocation(ctx)
    gloss, eng = inv.glossary(), inv.engine()
    try:
        rows = plan.coming_weeks(
            eng, inv.settings(), gloss, start=first, weeks=weeks, now=db.utcnow()
        )
    except ValueError as exc:
        fail(str(exc))
        return
    # Slugs never wrap (they are what `queue add` takes); category and note wrap instead.
    notes = any(r.note for r in rows)
    table = Table(box=None)
    table.add_column("week", no_wrap=True)
    table.add_column("term", no_wrap=True, min_width=max(len(r.slug) for r in rows))
    table.add_column("category")
    table.add_column("difficulty", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("state", no_wrap=True)
    if notes:
        table.add_column("note", overflow="fold")
    for row in rows:
        term = gloss.get(row.slug)
        cells: list[str | Text] = [
            str(row.week),
            row.slug,
            Text(term.category if term else "(not in the glossary)"),
            term.difficulty if term else "",
            row.source,
            row.state,
        ]
        table.add_row(*cells, *([Text(row.note or "")] if notes else []))
    console.print(table)


def _audit(eng: Engine, action: str, slug: str, detail: str | None) -> None:
    audit.record(
        eng, actor=audit.cli_actor(), action=action, target=slug, detail=detail, now=db.utcnow()
    )
