"""The SMTP transport's journal: what the relay answered each recipient of a batch.

SMTP has no batches: a batch of 1,000 readers is 1,000 transactions, and a crash can fall
between any two. The ledger settles a batch as a whole, so the transport keeps its own record
per recipient — written *before* a message's DATA ends ("sending") and after the relay's answer
("accepted", "refused", "deferred") — and a run that resumes the batch settles each reader by
it: accepted ones as sent, refused ones as refused, never-tried ones sent now, and only a
reader left "sending" (killed between DATA and the 250) is the ambiguous case.

Recipients are keyed by a hash of the address (as the outbox names its files): the journal
holds no personal data. Rows older than `KEEP_DAYS` are dropped when a transport starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Engine, delete, select, text
from sqlalchemy.dialects import postgresql, sqlite

from digest.store.db import smtp_journal

__all__ = ["KEEP_DAYS", "Entry", "SmtpJournal", "State", "address_tag"]

State = Literal["sending", "accepted", "refused", "deferred"]
# A week's batches are settled within the week; a month leaves room for a paused send.
KEEP_DAYS = 30
_REPLY_MAX = 500


def address_tag(email: str) -> str:
    """A stable stand-in for an address (the address itself is personal data)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Entry:
    state: State
    reply: str | None


class SmtpJournal:
    """Reads and writes `smtp_journal` on its own engine connections (worker threads write
    their batch's lines while the run's thread writes the ledger)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    def read(self, batch_key: str, emails: Iterable[str]) -> dict[str, Entry]:
        """What the journal says of each of `emails` in batch `batch_key` (absent: never tried)."""
        by_tag = {address_tag(email): email for email in emails}
        if not by_tag:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(smtp_journal.c.recipient, smtp_journal.c.state, smtp_journal.c.reply).where(
                    smtp_journal.c.batch_key == batch_key
                )
            ).all()
        return {by_tag[tag]: Entry(state, reply) for tag, state, reply in rows if tag in by_tag}

    def write(
        self,
        batch_key: str,
        entries: Mapping[str, Entry] | Sequence[tuple[str, Entry]],
        at: datetime,
    ) -> None:
        """Record `entries` (address → entry) for `batch_key` in one transaction.

        On PostgreSQL the commit does not wait for the server's disk (synchronous_commit off,
        for this transaction alone): a killed sender loses nothing, since the server has the
        rows; only a crash of the database server itself could lose the last few, and the
        sender's lease would be gone with it. That keeps a line per message affordable.
        """
        items = list(entries.items()) if isinstance(entries, Mapping) else list(entries)
        if not items:
            return
        insert = postgresql.insert if self._postgres else sqlite.insert
        rows = [
            {
                "batch_key": batch_key,
                "recipient": address_tag(email),
                "state": entry.state,
                "reply": entry.reply[:_REPLY_MAX] if entry.reply else None,
                "at": at,
            }
            for email, entry in items
        ]
        stmt = insert(smtp_journal)
        stmt = stmt.on_conflict_do_update(
            index_elements=[smtp_journal.c.batch_key, smtp_journal.c.recipient],
            set_={
                "state": stmt.excluded.state,
                "reply": stmt.excluded.reply,
                "at": stmt.excluded.at,
            },
        )
        with self.engine.begin() as conn:
            if self._postgres:
                conn.execute(text("SET LOCAL synchronous_commit = off"))
            conn.execute(stmt, rows)

    def forget_before(self, cutoff: datetime) -> int:
        """Drop lines older than `cutoff`: their batches were settled long ago."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(delete(smtp_journal).where(smtp_journal.c.at < cutoff)).rowcount
            )

    def forget_old(self, now: datetime) -> int:
        return self.forget_before(now - timedelta(days=KEEP_DAYS))
