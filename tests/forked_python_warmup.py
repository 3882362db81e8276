"""Imported once by tests/forked_python.py's fork server, before it forks any child: all of
digest, and what digest imports only when a command runs, so each child starts with it loaded.

A module that fails to import here is left for the child, which imports it again and says what
is wrong, as a fresh interpreter would.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

__all__: list[str] = []

# What digest imports only when a command runs (migrations, a backend's driver, a transport).
_LAZY_IMPORTS = [
    "alembic.command",
    "alembic.config",
    "alembic.runtime.environment",
    "alembic.runtime.migration",
    "alembic.script",
    "alembic.ddl.postgresql",
    "alembic.ddl.sqlite",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "psycopg",
    "httpx",
    "uvicorn",
    "apscheduler.schedulers.background",
]


def _digest_modules() -> Iterator[str]:
    """Every module of the digest package, found on disk; not the migrations (Alembic runs
    their env.py itself) nor a `__main__` (importing one runs the command line)."""

    def walk(folder: Path, prefix: str) -> Iterator[str]:
        for info in pkgutil.iter_modules([str(folder)]):
            if info.name in ("__main__", "migrations"):
                continue
            yield prefix + info.name
            if info.ispkg:
                yield from walk(folder / info.name, f"{prefix}{info.name}.")

    import digest

    yield "digest"
    for folder in digest.__path__:
        yield from walk(Path(folder), "digest.")


def _warm_up() -> None:
    for name in [*_digest_modules(), *_LAZY_IMPORTS]:
        try:
            importlib.import_module(name)
        except Exception:  # the child imports it again and reports it
            continue


_warm_up()
