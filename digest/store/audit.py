"""The audit log: every editor action, from the desk or the CLI, written once and never edited.

Editors share one newsletter; when an issue went out with the wrong subject, the first question
is who changed it and when. Actions are short dotted names (`issue.approve`), targets the thing
acted on (a week, a slug, an address), so the dashboard can list them without decoding.
"""

from __future__ import annotations

import getpass
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select

from digest.model.audit import AuditEntry
from digest.store.db import audit_log

__all__ = ["cli_actor", "recent", "record"]

_MAX_DETAIL = 2000


def cli_actor() -> str:
    """Who a command run at a terminal acts as: the operating-system user, as `cli:<user>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown"
    return f"cli:{user}"


def record(
    engine: Engine | Connection,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    detail: str | None = None,
    now: datetime,
) -> None:
    """Write one entry. Long details are cut: the log says what happened, not every byte."""
    values = {
        "at": now,
        "actor": actor[:320],
        "action": action[:64],
        "target": None if target is None else target[:200],
        "detail": None if detail is None else detail[:_MAX_DETAIL],
    }
    statement = insert(audit_log).values(**values)
    if isinstance(engine, Connection):
        engine.execute(statement)
        return
    with engine.begin() as conn:
        conn.execute(statement)


def recent(
    engine: Engine | Connection,
    *,
    limit: int = 20,
    target: str | None = None,
    action_prefix: str | None = None,
) -> list[AuditEntry]:
    """The latest entries, newest first; only those about `target` / of `action_prefix` if given."""
    query = select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit)
    if target is not None:
        query = query.where(audit_log.c.target == target)
    if action_prefix is not None:
        query = query.where(audit_log.c.action.startswith(action_prefix, autoescape=True))
    if isinstance(engine, Connection):
        rows = engine.execute(query).all()
    else:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    return [AuditEntry(**dict(row._mapping)) for row in rows]
