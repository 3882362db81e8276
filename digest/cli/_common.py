"""What every `digest` command shares: the global options, and what they build.

The options live on the Click context (`ctx.obj`), not in os.environ, so a command's settings come
from its own invocation; also here: failing with a message, week arguments and the exit codes.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from digest.model.glossary import Glossary, InvalidGlossary
from digest.model.weeks import IsoWeek, current_week, parse_week
from digest.store.terms import read_glossary

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from digest.config import Settings
    from digest.store import db as db


def lazy_module(name: str) -> ModuleType:
    """The module `name`, loaded on first use of one of its attributes, not now.

    `digest --help` and every command pay for what the command modules import: SQLAlchemy
    alone (through `digest.store.db`) was a third of a second, for commands that print help or
    never touch the database. The module object is the real one (what `import` gives later).
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent], child, module)
    return module


if not TYPE_CHECKING:
    db = lazy_module("digest.store.db")

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


@dataclass(slots=True)
class Invocation:
    """One run of `digest`: its global options, and the settings built from them once.

    The app's callback puts it on the context (`ctx.obj`); a command gets it with `invocation`.
    """

    terms: Path | None = None
    config: Path | None = None
    _settings: Settings | None = field(default=None, init=False, repr=False)
    _glossary: Glossary | None = field(default=None, init=False, repr=False)

    def settings(self) -> Settings:
        """The settings, or exit 1 saying which value is wrong."""
        if self._settings is None:
            # An option beats its env var (DIGEST_TERMS_DIR, DIGEST_CONFIG) and the settings file.
            overrides = {"terms_dir": self.terms} if self.terms is not None else {}
            from digest.config import get_settings  # pydantic-settings: only when asked

            try:
                self._settings = get_settings(config_file=self.config, **overrides)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                fail(f"invalid settings: {exc}")
                raise  # unreachable; keeps type checkers happy
        return self._settings

    def ops_settings(self) -> Settings:
        """Settings, with structured logging set up as they say (run, status and issue log events)."""
        from digest.logs import configure_logging

        conf = self.settings()
        configure_logging(conf.log_level, conf.log_format)
        return conf

    def glossary(self) -> Glossary:
        """The glossary's valid terms, with a warning naming each error of the files left out
        (a broken file costs its own term, not the command); exit 1 only when no term is left."""
        if self._glossary is None:
            glossary, errors = read_glossary(self.settings().terms_dir)
            for problem in errors:
                err.print(f"warning: {problem}", markup=False, soft_wrap=True)
            if errors:
                summary = InvalidGlossary(errors)
                if len(glossary) == 0:
                    fail(f"the glossary has no valid term ({summary}); run 'digest terms validate'")
                left = len({e.path for e in errors})
                err.print(
                    f"warning: {summary}; {left} term file{'s' * (left != 1)} left out, "
                    f"{len(glossary)} term{'s' * (len(glossary) != 1)} used; "
                    "run 'digest terms validate'",
                    markup=False,
                    soft_wrap=True,
                )
            self._glossary = glossary
        return self._glossary

    def engine(self) -> Engine:
        """The database engine, with the schema brought up to date first."""
        eng = db.make_engine(self.settings().database_url)
        db.upgrade(eng)
        return eng

    def this_week(self) -> IsoWeek:
        return current_week(db.utcnow(), self.settings().zone)

    def week_or_this(self, week: str | None) -> IsoWeek:
        """A `--week` value, or this week in the settings' time zone."""
        return week_argument(week) if week is not None else self.this_week()


def invocation(ctx: typer.Context) -> Invocation:
    """The running command's invocation; one called without the app's callback gets defaults."""
    return ctx.find_object(Invocation) or Invocation()


def week_option(name: str, value: str | None) -> IsoWeek | None:
    """An optional week option's value; a bad one fails naming the option."""
    if value is None:
        return None
    try:
        return parse_week(value)
    except ValueError as exc:
        fail(f"{name} {exc}")
        raise


def week_argument(text: str) -> IsoWeek:
    try:
        return parse_week(text)
    except ValueError as exc:
        fail(str(exc))
        raise


def send_exit_code(status: str) -> int:
    """The exit status of a send (`send`, `send --retry-failed`, `issue resume`) ending in `status`.

    0 sent; 1 failed; 2 anything else (paused, busy in another process): run it again.
    """
    if status == "sent":
        return 0
    return 1 if status == "failed" else 2
