"""Database backups: a consistent copy of the SQLite file, taken while digest keeps running.

SQLite's online backup API (`sqlite3.Connection.backup`) copies committed pages only, so a
send or a subscribe in progress never leaves a torn copy. PostgreSQL has pg_dump for this.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy import Engine

__all__ = ["BackupError", "backup_database"]

PG_DUMP_HINT = (
    "digest backs up SQLite only; for PostgreSQL use pg_dump, e.g. "
    '`pg_dump --format=custom --file=digest.dump "$DIGEST_DATABASE_URL"` '
    '(restore with `pg_restore --clean --if-exists --dbname="$DIGEST_DATABASE_URL" digest.dump`)'
)


class BackupError(Exception):
    """The backup cannot be made as asked; the message says why and what to do."""


def backup_database(engine: Engine, target: Path, *, overwrite: bool = False) -> int:
    """Copy the SQLite database behind `engine` to `target`; return the copy's size in bytes.

    The copy is written beside `target` and moved into place only once it is complete and
    passes `PRAGMA integrity_check`, so `target` is never half a database. An existing
    `target` is replaced only with `overwrite`.
    """
    if engine.dialect.name != "sqlite":
        raise BackupError(PG_DUMP_HINT)
    source = engine.url.database
    if not source or source == ":memory:":
        raise BackupError("the database is in memory; there is no file to back up")
    target = Path(target)
    if target.resolve() == Path(source).resolve():
        raise BackupError(f"{target} is the database itself; choose another path")
    if target.exists() and not overwrite:
        raise BackupError(f"{target} exists; remove it or choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        raw = engine.raw_connection()  # the engine's own pragmas: busy_timeout waits out writers
        try:
            copy = sqlite3.connect(tmp)
            try:
                raw.driver_connection.backup(copy)  # type: ignore[union-attr]
                # One self-contained file (no -wal beside it); digest turns WAL on again when
                # it opens a restored copy.
                copy.execute("PRAGMA journal_mode=DELETE")
                (verdict,) = copy.execute("PRAGMA integrity_check").fetchone()
            finally:
                copy.close()
        finally:
            raw.close()
        if verdict != "ok":
            raise BackupError(f"the copy failed its integrity check: {verdict}")
        os.chmod(tmp, 0o600)  # it holds every subscriber's address
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target.stat().st_size
