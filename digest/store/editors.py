"""The editors table: who may use the desk. Reading only, for now; accounts are added by
`digest editors add` (see the desk's own functions for passwords and sessions)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, select

from digest.model.editor import Editor
from digest.store.db import editors

__all__ = ["list_editors"]


def list_editors(engine: Engine | Connection) -> list[Editor]:
    """Every editor, by address."""
    query = select(*_PUBLIC).order_by(editors.c.email)
    if isinstance(engine, Connection):
        return [_editor(row) for row in engine.execute(query)]
    with engine.connect() as conn:
        return [_editor(row) for row in conn.execute(query)]


# Every column but the password hash: an Editor never carries it.
_PUBLIC = (
    editors.c.id,
    editors.c.email,
    editors.c.name,
    editors.c.role,
    editors.c.created_at,
    editors.c.last_login_at,
)


def _editor(row: Any) -> Editor:
    return Editor(**dict(row._mapping))
