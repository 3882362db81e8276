"""`digest editors`: the accounts that may log in to the desk at /admin/ (add, list, remove).

A password is only ever read from standard input (`--password-stdin`), never from an argument
that would sit in the shell's history and in every process listing.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from digest.cli._common import console, db, fail, invocation, lazy_module

if TYPE_CHECKING:
    from digest.campaign import editors
    from digest.store import audit
    from digest.store import editors as stored
else:  # loaded by the commands that use them: password hashing, SQLAlchemy, email-validator
    editors = lazy_module("digest.campaign.editors")
    audit = lazy_module("digest.store.audit")
    stored = lazy_module("digest.store.editors")

app = typer.Typer(
    help="Editors: the accounts that log in to the desk at /admin/.",
    no_args_is_help=True,
)


@app.command("add")
def editors_add(
    ctx: typer.Context,
    email: str,
    name: Annotated[str | None, typer.Option("--name", help="Shown in the desk.")] = None,
    role: Annotated[
        str, typer.Option("--role", help="editor, or admin (may also import and erase readers).")
    ] = "editor",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Add an editor; the password comes from standard input (its first line)."""
    if not password_stdin:
        fail("give the password on standard input with --password-stdin")
    # One line, as `docker login --password-stdin` reads it: the newline that `echo` adds is
    # not part of the password.
    password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    try:
        added = editors.add_editor(
            invocation(ctx).engine(),
            email,
            password=password,
            name=name,
            role=role,
            actor=audit.cli_actor(),
            now=db.utcnow(),
        )
    except editors.EditorError as exc:
        fail(str(exc))
        return
    console.print(f"added {added.role} {added.email}", markup=False)


@app.command("list")
def editors_list(ctx: typer.Context) -> None:
    """Show every editor with their role and last login."""
    found = stored.list_editors(invocation(ctx).engine())
    if not found:
        console.print("no editors yet; add one with: digest editors add EMAIL --password-stdin")
        return
    table = Table(box=None)
    for column in ("email", "name", "role", "last login (UTC)"):
        table.add_column(column, no_wrap=column != "name")
    for editor in found:
        login = f"{editor.last_login_at:%Y-%m-%d %H:%M}" if editor.last_login_at else "never"
        table.add_row(Text(editor.email), Text(editor.name or ""), editor.role, login)
    console.print(table)


@app.command("remove")
def editors_remove(ctx: typer.Context, email: str) -> None:
    """Remove an editor; their desk sessions end at once."""
    try:
        gone = editors.remove_editor(
            invocation(ctx).engine(), email, actor=audit.cli_actor(), now=db.utcnow()
        )
    except editors.EditorError as exc:
        fail(str(exc))
        return
    console.print(f"removed {gone.email}; their sessions are ended", markup=False)
