"""The `digest` command: parses arguments, calls the library, prints.

Every command is a thin wrapper over a function in a domain module, so what the CLI does can be
done from Python (and is tested there); this file only turns arguments into calls and results
into text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from digest import db
from digest.config import CONFIG_FILE_ENV, Settings, get_settings
from digest.glossary import Glossary, InvalidGlossary, load_glossary, read_glossary

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
        Path | None, typer.Option("--terms", help="Terms folder [env DIGEST_TERMS_DIR].")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Settings file [default ./digest.toml].")
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
        console.print(section.markdown, markup=False)
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
        Path | None, typer.Argument(help="Folder to check [default: terms dir].")
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


if __name__ == "__main__":  # pragma: no cover
    app()
