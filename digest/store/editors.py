"""The editors table and their desk sessions: accounts, password hashes, and who is logged in.

A session's cookie carries a random id; only its SHA-256 is stored, so a copy of the database
cannot be replayed as a login. The hash of a password never leaves this module but to be
verified (`password_hash`), and an `Editor` never carries it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from digest.model.editor import Editor, Role
from digest.store.db import editor_sessions, editors

__all__ = [
    "DuplicateEditor",
    "add_editor",
    "create_session",
    "delete_session",
    "get_editor",
    "list_editors",
    "password_hash",
    "record_login",
    "remove_editor",
    "session_editor",
    "set_password_hash",
]


class DuplicateEditor(ValueError):
    """An editor with this address exists already."""


def list_editors(engine: Engine | Connection) -> list[Editor]:
    """Every editor, by address."""
    with _connect(engine) as conn:
        return [_editor(row) for row in conn.execute(select(*_PUBLIC).order_by(editors.c.email))]


def get_editor(engine: Engine | Connection, email: str) -> Editor | None:
    """The editor with this address (compared without regard to case), or None."""
    with _connect(engine) as conn:
        row = conn.execute(select(*_PUBLIC).where(_same_email(email))).first()
    return _editor(row) if row is not None else None


def add_editor(
    engine: Engine, email: str, *, name: str | None, role: Role, password_hash: str, now: datetime
) -> Editor:
    """Store a new account; `DuplicateEditor` when the address has one (in any case)."""
    try:
        with engine.begin() as conn:
            if conn.execute(select(editors.c.id).where(_same_email(email))).first() is not None:
                raise DuplicateEditor(f"{email} is already an editor")
            conn.execute(
                insert(editors).values(
                    email=email,
                    name=name,
                    role=role,
                    password_hash=password_hash,
                    created_at=now,
                    updated_at=now,
                )
            )
            row = conn.execute(select(*_PUBLIC).where(editors.c.email == email)).one()
    except IntegrityError:  # the same address added at the same moment by another process
        raise DuplicateEditor(f"{email} is already an editor") from None
    return _editor(row)


def remove_editor(engine: Engine, email: str) -> Editor | None:
    """Delete an account and end every session of it; the removed editor, or None if unknown."""
    with engine.begin() as conn:
        row = conn.execute(select(*_PUBLIC).where(_same_email(email))).first()
        if row is None:
            return None
        # The foreign key cascades too; deleted here as well so no backend setting is relied on.
        conn.execute(delete(editor_sessions).where(editor_sessions.c.editor_id == row.id))
        conn.execute(delete(editors).where(editors.c.id == row.id))
    return _editor(row)


def password_hash(engine: Engine | Connection, email: str) -> tuple[Editor, str] | None:
    """The editor and their stored hash, to verify a login; None for an unknown address."""
    with _connect(engine) as conn:
        row = conn.execute(
            select(*_PUBLIC, editors.c.password_hash).where(_same_email(email))
        ).first()
    if row is None:
        return None
    values = dict(row._mapping)
    stored = values.pop("password_hash")
    return Editor(**values), str(stored)


def set_password_hash(engine: Engine, editor_id: int, hashed: str, *, now: datetime) -> None:
    """Replace a hash (a rehash with today's parameters after a successful login)."""
    with engine.begin() as conn:
        conn.execute(
            update(editors)
            .where(editors.c.id == editor_id)
            .values(password_hash=hashed, updated_at=now)
        )


def record_login(engine: Engine, editor_id: int, *, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(editors).where(editors.c.id == editor_id).values(last_login_at=now))


def create_session(engine: Engine, editor_id: int, *, now: datetime, max_age: int) -> str:
    """A new session for the editor; returns its id, which only the cookie will hold."""
    session_id = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(
            insert(editor_sessions).values(
                id_hash=_hash(session_id),
                editor_id=editor_id,
                created_at=now,
                expires_at=now + timedelta(seconds=max_age),
                last_seen_at=now,
            )
        )
    return session_id


def session_editor(
    engine: Engine, session_id: str, *, now: datetime, max_age: int
) -> Editor | None:
    """The editor logged in with this session id, its expiry moved `max_age` on; None when
    the session is unknown, expired (then deleted) or its editor removed."""
    key = _hash(session_id)
    with engine.begin() as conn:
        row = conn.execute(
            select(*_PUBLIC, editor_sessions.c.expires_at)
            .select_from(editor_sessions.join(editors))
            .where(editor_sessions.c.id_hash == key)
        ).first()
        if row is None:
            return None
        values = dict(row._mapping)
        if values.pop("expires_at") <= now:
            conn.execute(delete(editor_sessions).where(editor_sessions.c.id_hash == key))
            return None
        conn.execute(
            update(editor_sessions)
            .where(editor_sessions.c.id_hash == key)
            .values(expires_at=now + timedelta(seconds=max_age), last_seen_at=now)
        )
    return Editor(**values)


def delete_session(engine: Engine, session_id: str) -> None:
    """End one session (logout, or the old session replaced at a new login)."""
    with engine.begin() as conn:
        conn.execute(delete(editor_sessions).where(editor_sessions.c.id_hash == _hash(session_id)))


# Every column but the password hash: an Editor never carries it.
_PUBLIC = (
    editors.c.id,
    editors.c.email,
    editors.c.name,
    editors.c.role,
    editors.c.created_at,
    editors.c.last_login_at,
)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _same_email(email: str) -> ColumnElement[bool]:
    return func.lower(editors.c.email) == email.lower()


def _editor(row: Any) -> Editor:
    return Editor(**dict(row._mapping))


@contextmanager
def _connect(engine: Engine | Connection) -> Iterator[Connection]:
    if isinstance(engine, Connection):
        yield engine
        return
    with engine.connect() as conn:
        yield conn
