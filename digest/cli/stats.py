"""`digest stats`: per-issue numbers — recipients, deliveries, human and machine opens and clicks,
clicks per link, unsubscribes, complaints, rates — as a table or as JSON for other tools.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from digest.cli._common import console, fail, invocation, week_option

# Table columns: (heading, key), short enough for 80 columns; `_LEGEND` says what they are.
# Machine opens and clicks stand apart, never added to the readers'.
_COLUMNS = (
    ("week", "week"),
    ("sent", "recipients"),
    ("deliv", "delivered"),
    ("bnc", "bounced"),
    ("open", "opens_unique"),
    ("m.open", "opens_machine"),
    ("click", "clicks_unique"),
    ("m.clk", "clicks_machine"),
    ("unsub", "unsubscribed"),
    ("spam", "complaints"),
    ("open%", "open_rate"),
    ("click%", "click_rate"),
)
_LEGEND = (
    "sent: recipients · deliv: delivered · bnc: bounced · open/click: readers who opened / "
    "clicked · m.open/m.clk: machines (image prefetching, link scanners) · unsub: unsubscribed "
    "after the issue · spam: complaints · rates per delivered mail (per recipient while no "
    "delivery event came in) · —: not tracked"
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
            console.print(_LEGEND, markup=False, style="dim")
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
    table = Table(box=None, padding=(0, 0, 0, 1), pad_edge=False)
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
