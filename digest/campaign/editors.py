"""Editor accounts and logging in: the rules for addresses, roles and passwords, and the check
of a password that says nothing about whether the address exists.

The CLI (`digest editors …`) and the desk's login both come here; the store keeps the rows.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Engine

from digest.model.editor import ROLES, Editor, Role
from digest.store import audit
from digest.store import editors as store

__all__ = [
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "EditorError",
    "add_editor",
    "authenticate",
    "check_password",
    "normalise_email",
    "remove_editor",
]

MIN_PASSWORD = 12
# Argon2 takes any length, but hashing megabytes per attempt would be a cheap way to load us.
MAX_PASSWORD = 1024
_NAME_MAX = 200


class EditorError(ValueError):
    """An account change was refused; the message says why, fit to show the person."""


@cache
def _hasher() -> PasswordHasher:
    # argon2-cffi's defaults are RFC 9106's low-memory Argon2id profile; check_needs_rehash
    # moves old hashes to whatever a newer argon2-cffi chooses.
    return PasswordHasher()


@cache
def _decoy_hash() -> str:
    """A hash to verify against when the address is unknown, so that answer costs the same."""
    return _hasher().hash("not the password of anyone: a decoy for unknown addresses")


def normalise_email(address: str) -> str:
    """The address as stored: validated and lower-cased, as subscribers' are (so an editor's
    test copy finds them if they also read the newsletter); EditorError saying what is wrong."""
    try:
        return validate_email(address.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise EditorError(f"{address!r} is not a valid address: {exc}") from None


def check_password(password: str) -> str:
    """`password` if it is long enough to keep; EditorError otherwise."""
    if not password.strip():
        raise EditorError("the password is empty")
    if len(password) < MIN_PASSWORD:
        raise EditorError(f"the password must be at least {MIN_PASSWORD} characters long")
    if len(password) > MAX_PASSWORD:
        raise EditorError(f"the password must be at most {MAX_PASSWORD} characters long")
    return password


def add_editor(
    engine: Engine,
    email: str,
    *,
    password: str,
    name: str | None = None,
    role: str = "editor",
    actor: str,
    now: datetime,
) -> Editor:
    """Create an account with an Argon2id hash of `password`; audit "editor.add"."""
    address = normalise_email(email)
    if role not in ROLES:
        raise EditorError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    name = (name or "").strip() or None
    if name is not None and (len(name) > _NAME_MAX or any(c in name for c in "\r\n\0")):
        raise EditorError(f"the name must be one line of at most {_NAME_MAX} characters")
    hashed = _hasher().hash(check_password(password))
    checked_role: Role = "admin" if role == "admin" else "editor"
    try:
        editor = store.add_editor(
            engine, address, name=name, role=checked_role, password_hash=hashed, now=now
        )
    except store.DuplicateEditor as exc:
        raise EditorError(str(exc)) from None
    audit.record(engine, actor=actor, action="editor.add", target=address, detail=role, now=now)
    return editor


def remove_editor(engine: Engine, email: str, *, actor: str, now: datetime) -> Editor:
    """Delete an account and end its sessions at once; audit "editor.remove"."""
    removed = store.remove_editor(engine, email.strip())
    if removed is None:
        raise EditorError(f"no editor {email.strip()!r}")
    audit.record(engine, actor=actor, action="editor.remove", target=removed.email, now=now)
    return removed


def authenticate(engine: Engine, email: str, password: str, *, now: datetime) -> Editor | None:
    """The editor whose address and password these are, or None.

    An unknown address is verified against a decoy hash, so it takes as long as a wrong
    password and gives the same None: neither the answer nor its timing tells them apart.
    A hash made with older parameters is replaced on the way in.
    """
    found = store.password_hash(engine, email.strip()) if len(password) <= MAX_PASSWORD else None
    stored = found[1] if found is not None else _decoy_hash()
    try:
        _hasher().verify(stored, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        return None
    if found is None:  # the decoy's own text was typed: still nobody
        return None
    editor, _ = found
    if _hasher().check_needs_rehash(stored):
        store.set_password_hash(engine, editor.id, _hasher().hash(password), now=now)
    store.record_login(engine, editor.id, now=now)
    return editor
