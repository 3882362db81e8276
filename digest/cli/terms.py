"""`digest terms`: list, show and validate the glossary's term files.

Reading only: these commands never open the database, so they work on a fresh checkout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from digest.cli._common import console, fail, invocation
from digest.store.terms import read_glossary

app = typer.Typer(help="Browse and validate the glossary in terms/.", no_args_is_help=True)


@app.command("list")
def terms_list(
    ctx: typer.Context,
    category: Annotated[str | None, typer.Option(help="Only this category.")] = None,
) -> None:
    """List terms: slug, title, category, difficulty, week added."""
    gloss = invocation(ctx).glossary()
    terms = gloss.in_category(category) if category else list(gloss)
    if category and not terms:
        fail(f"no category {category!r}; categories: {', '.join(gloss.categories())}")
    table = Table("slug", "title", "category", "difficulty", "added", box=None)
    for term in terms:
        table.add_row(term.slug, term.title, term.category, term.difficulty, str(term.added))
    console.print(table)
    console.print(f"{len(terms)} terms")


@app.command("show")
def terms_show(ctx: typer.Context, slug: str) -> None:
    """Show one term (by slug, title or alias)."""
    from rich.markdown import Markdown  # markdown-it and pygments: only to show a term

    gloss = invocation(ctx).glossary()
    term = gloss.lookup(slug)
    if term is None:
        errors = gloss.left_out.get(slug.strip().casefold())
        if errors:  # say so, rather than "no term": the file is there and needs fixing
            fail(f"{slug!r} is left out of the glossary: " + "; ".join(map(str, errors)))
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


@app.command("validate")
def terms_validate(
    ctx: typer.Context,
    path: Annotated[
        Path | None, typer.Argument(help="Folder to check (default: the terms folder).")
    ] = None,
) -> None:
    """Check every term file; print each problem as path:line: field: message."""
    folder = path or invocation(ctx).settings().terms_dir
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
