"""`digest stats`: per-issue numbers — recipients, deliveries, human and machine opens and clicks,
clicks per link, unsubscribes, complaints, rates — as a table or as JSON for other tools.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from digest.cli._common import console, fail, invocation, week_option

# Table columns: (heading, key). Machine opens and clicks stand apart, never added to readers'.
_COLUMNS = (
    ("week", "week"),
    ("recipients", "recipients"),
    ("delivered", "delivered"),
    ("bounced", "bounced"),
    ("opened", "opens_unique"),
    ("machine opens", "opens_machine"),
    ("clicked", "clicks_unique"),
    ("machine clicks", "clicks_machine"),
    ("unsubscribed", "unsubscribed"),
    ("complaints", "complaints"),
    ("open rate", "open_rate"),
    ("click rate", "click_rate"),
)


def stats_command(
    ctx: typer.Context,
    week: Annotated[
        str | None,
        typer.Option("--week", help="One issue's numbers, e.g. 2026-W17 (default: the last 12)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON: one object with --week, else a list.")
    ] = False,
) -> None:
    """Per-issue numbers: opens and clicks of readers, machines (prefetching, link scanners)
    apart; rates per delivered mail, or per recipient while no delivery events came in."""
    from digest.campaign.engagement import StatsError, issue_stats, recent_stats

    wk = week_option("--week", week)
    inv = invocation(ctx)
    conf, eng = inv.settings(), inv.engine()
    if wk is None:
        rows = recent_stats(eng, conf)
        if as_json:
            typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        elif not rows:
            console.print("no issue has gone out yet", markup=False)
        else:
            console.print(_table(rows))
        return
    try:
        one = issue_stats(eng, conf, wk)
    except StatsError as exc:
        fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(one, indent=2, ensure_ascii=False))
        return
    console.print(_table([one]))
    console.print(f"rates per {one['rate_base']} mail", markup=False)
    for url, readers in one["clicks_by_link"].items():
        console.print(f"{readers:>8}  {url}", markup=False, soft_wrap=True)


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=None)
    for heading, _key in _COLUMNS:
        table.add_column(heading, justify="left" if heading == "week" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(row[key]) for _heading, key in _COLUMNS))
    return table


def _cell(value: object) -> str:
    if value is None:
        return "—"  # not tracked: unknown, not zero
    if isinstance(value, float):
        return f"{value:.1%}"
    return str(value)
