"""How one run holds its send: alone, under the issue's lease, or as one of a crew that sends
the issue together.

On PostgreSQL every `digest send` / `digest run` that reaches a due issue joins its crew
(`digest.store.send_crew`): each member claims pages of readers with SKIP LOCKED, so K members
send about K times as fast against a slow provider, and each renews only its own lease. A
member that dies loses only its lease: its claimed batches are taken over by another member
once that lease ends, or at once when its process is provably gone (`digest.owner`), and are
settled by lookup or by `DIGEST_AMBIGUOUS_BATCHES` exactly as a single run settles a batch
a crashed run left open.

On SQLite (one writer at a time, one machine) a run holds the issue's lease alone, as before;
so does `digest send --retry-failed` everywhere, since re-sending failed rows is one walk that
must not run twice. Both kinds of seat answer the same questions for `BatchRun`: renew, which
open batches are mine to take over, are there others still sending.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, select

from digest.delivery import ledger
from digest.delivery.lease import LostLease, renew
from digest.logs import get_logger, log_event
from digest.model.issue import IssueRecord
from digest.model.owner import Owner
from digest.owner import owner_liveness
from digest.store import send_crew
from digest.store.db import issues, utcnow
from digest.store.issues import lease_holder
from digest.store.send_crew import CrewMember

__all__ = ["Orphan", "Seat", "shares_sends"]

log = get_logger("digest.delivery.crew")

Clock = Callable[[], datetime]


def shares_sends(engine: Engine) -> bool:
    """Whether several processes may send one issue together on this database: PostgreSQL's
    row locks (SKIP LOCKED) make that safe; SQLite has one writer and stays one sender."""
    return engine.dialect.name == "postgresql"


@dataclass(frozen=True, slots=True)
class Orphan:
    """An open batch this run may take over: who claimed it, and until when that sender's
    lease ran if it was proven dead before (a lookup's "not found" is no proof until then)."""

    batch: int
    claimer: str | None
    inherited_until: datetime | None = None
    # Who it was taken from, in words, when that sender was proven dead before its lease ended.
    took_over: str | None = None


@dataclass
class Seat:
    """One run's hold on `issue`'s send: `shared` as a crew member, else alone; and when to
    renew it (the run's thread, and the worker threads of batches in flight, one at a time)."""

    engine: Engine
    issue: IssueRecord
    owner: str | Owner
    lease: timedelta
    shared: bool
    clock: Clock = utcnow  # the real clock leases are stamped with
    attempt_seconds: float = 0.0  # one request and one backoff: what a renewal must outlast
    # A crew member's last look at the issue when it was no longer `sending`: (status, reason).
    moved_on: tuple[str, str | None] | None = None
    _renewed_at: float = field(default=float("-inf"), init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def token(self) -> str:
        return self.owner.token if isinstance(self.owner, Owner) else self.owner

    def renew(self) -> None:
        """Extend this run's lease (LostLease when it was taken). A crew member also looks at
        the issue: another member may have paused, failed or sent it (`moved_on`)."""
        with self._lock:
            now = self.clock()
            if not self.shared:
                renew(self.engine, self.issue.week, self.owner, self.lease, now)
            elif not send_crew.renew(self.engine, self.issue.id, self.token, self.lease, now=now):
                raise LostLease()
            else:
                with self.engine.connect() as conn:
                    status, reason = conn.execute(
                        select(issues.c.status, issues.c.status_reason).where(
                            issues.c.id == self.issue.id
                        )
                    ).one()
                if status != "sending" and self.moved_on is None:
                    self.moved_on = (str(status), reason)
            self._renewed_at = time.monotonic()

    def renew_if_due(self, interval: float) -> None:
        """Renew the lease when it was last renewed `interval` seconds ago or more."""
        if time.monotonic() - self._renewed_at >= interval:
            self.renew()

    def main_interval(self) -> float:
        """How often the run's thread renews while batches wait: a third of the lease, and at
        least as often as a worker would before its own next attempt."""
        return min(self.lease.total_seconds() / 3, self.attempt_interval())

    def attempt_interval(self) -> float:
        """How old a renewal may be for an attempt to go ahead on it: the lease must outlast
        one request and one backoff after it, as when it is renewed right before (`lease_length`
        makes the lease at least that long)."""
        return max(0.0, self.lease.total_seconds() - self.attempt_seconds)

    def renew_for_attempt(self) -> None:
        """Before an attempt of a batch in flight (on its worker thread): the run's thread
        renews the lease as it waits, so this renews only when that renewal is too old."""
        self.renew_if_due(self.attempt_interval())

    def orphans(
        self, now: datetime, statuses: tuple[str, ...] = ("claimed", "failed")
    ) -> list[Orphan]:
        """The open batches this run may take over now. Alone: every one not its own (its
        lease says no other run is sending). In a crew: those whose sender is no live member;
        members found dead are dropped from the crew first, so if one was only slow its next
        renewal fails and it stops instead of settling a batch that is no longer its own."""
        open_batches = [
            (batch, claimer)
            for batch, claimer in ledger.open_batch_owners(self.engine, self.issue, statuses)
            if claimer != self.token
        ]
        if not self.shared or not open_batches:
            return [Orphan(batch, claimer) for batch, claimer in open_batches]
        verdicts: dict[str | None, Orphan | None] = {}
        found: list[Orphan] = []
        for batch, claimer in open_batches:
            if claimer not in verdicts:
                verdicts[claimer] = self._judge(claimer, now)
            verdict = verdicts[claimer]
            if verdict is not None:
                found.append(Orphan(batch, claimer, verdict.inherited_until, verdict.took_over))
        return found

    def others_sending(self, now: datetime) -> list[CrewMember]:
        """The crew's other live members: whoever still carries the send if this run leaves."""
        if not self.shared:
            return []
        return [
            m
            for m in send_crew.live_members(self.engine, self.issue.id, now)
            if m.token != self.token and not owner_liveness(m.lease.owner).gone
        ]

    def leave(self) -> None:
        if self.shared:
            send_crew.leave(self.engine, self.issue.id, self.token)

    def _judge(self, claimer: str | None, now: datetime) -> Orphan | None:
        """Whether `claimer`'s batches are free to take (an Orphan with batch 0 standing for
        all of them), or None while it is a live member."""
        crew = {m.token: m for m in send_crew.members(self.engine, self.issue.id)}
        member = crew.get(claimer) if claimer is not None else None
        if member is None:
            # It left, or was dropped, with the batch still open — unless it holds the issue's
            # own lease: a retry, or (claimer None) a sender of a digest from before shared
            # sends, still running beside this one during a rolling upgrade.
            holder = lease_holder(self.engine, self.issue.week)
            if (
                holder is not None
                and claimer in (None, holder.token)
                and not holder.lapsed(now)
                and not owner_liveness(holder.owner).gone
            ):
                return None
            return Orphan(0, claimer)
        if member.lease.lapsed(now):
            proof, until = "its lease ended", None
        else:
            verdict = owner_liveness(member.lease.owner)
            if not verdict.gone:
                return None
            proof, until = verdict.reason, member.lease.until
        if not send_crew.drop_member(self.engine, self.issue.id, member):
            still = {m.token for m in send_crew.members(self.engine, self.issue.id)}
            if member.token in still:
                return None  # it renewed meanwhile: not dead
        who = member.lease.describe()
        log_event(
            log,
            "send_member_taken_over",
            level=logging.WARNING,
            week=str(self.issue.week),
            member=who,
            reason=proof,
        )
        took_over = (
            f"took over the batches of {who}, which is no longer running ({proof})"
            if until is not None
            else None
        )
        return Orphan(0, claimer, until, took_over)
