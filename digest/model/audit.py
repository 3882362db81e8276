"""One line of the audit log: who did what to which thing, and when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["AuditEntry"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str  # an editor's address, or "cli:<user>" for a command run at a terminal
    action: str  # dotted, e.g. "issue.approve", "queue.pin", "issue.test_send"
    target: str | None  # what it was done to: a week, a slug, an address
    detail: str | None
