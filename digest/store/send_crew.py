"""The crew of a shared send: one `send_crew` row per process sending an issue, with its lease.

On PostgreSQL several `digest send` / `digest run` replicas send one issue together; each holds
its own lease here (renewed while it sends, released when it leaves) instead of the issue's one
lease, and stamps the ledger rows it claims with its token. A row whose lease has ended — or
whose process is provably gone — is what tells the others that its claimed batches are theirs
to take over (`digest.delivery.crew`).

Joining is refused while the issue's exclusive lease (`issues.claimed_by`, which `digest send
--retry-failed` takes) is held by someone live, and that lease is refused while a crew member
is live (`live_members`), so a retry never runs beside a shared send. The join reads the issue
row FOR UPDATE, which a claim of the exclusive lease (an UPDATE of that row) waits on, so of
the two racing only one can see the other absent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, insert, select, update

from digest.model.issue import LeaseHolder
from digest.model.owner import Owner
from digest.owner import Liveness
from digest.store.db import issues, send_crew

__all__ = [
    "CrewMember",
    "Joined",
    "drop_member",
    "join",
    "leave",
    "live_members",
    "members",
    "renew",
    "send_leases",
]


@dataclass(frozen=True, slots=True)
class CrewMember:
    """One sender of an issue as its row says: its lease, and the time zones it sends to."""

    lease: LeaseHolder
    zones: frozenset[str | None] | None  # None: every reader (an unrestricted send)

    @property
    def token(self) -> str:
        return self.lease.token


@dataclass(frozen=True, slots=True)
class Joined:
    """What `join` did: true when the caller is a member now; else who holds the issue
    exclusively (`holder`, with what was judged of it), or the live members whose time zones
    differ (`others`). Won after clearing a dead exclusive holder: `holder` is that holder and
    `liveness` why (its open batch is the caller's to settle)."""

    won: bool
    holder: LeaseHolder | None = None
    liveness: Liveness | None = None
    others: tuple[CrewMember, ...] = ()

    def __bool__(self) -> bool:
        return self.won


def join(
    engine: Engine,
    issue_id: int,
    owner: str | Owner,
    zones: frozenset[str | None] | None,
    lease: timedelta,
    *,
    now: datetime,
    judge_holder: Callable[[Owner | None], Liveness],
) -> Joined:
    """Become a member of `issue_id`'s send for `lease`, unless it is held exclusively by a
    live holder, or live members send to other time zones (a local-time tick's crew and an
    unrestricted send must not mix: the second would reach zones not due yet).

    An exclusive holder whose lease ended, or that `judge_holder` proves gone (a retry killed
    mid-batch, or a sender of a digest from before shared sends), is cleared in the same
    transaction: its open batches then belong to no member and are taken over."""
    token, facts = _owner_values(owner)
    taken: tuple[LeaseHolder, Liveness | None] | None = None
    with engine.begin() as conn:
        row = conn.execute(
            select(issues.c.claimed_by, issues.c.claimed_until, issues.c.claimed_owner)
            .where(issues.c.id == issue_id)
            .with_for_update()
        ).first()
        if row is not None and row[0] is not None and row[0] != token:
            found = Owner.from_json(row[2])
            holder = LeaseHolder(row[0], row[1], found if found and found.token == row[0] else None)
            verdict = None if holder.lapsed(now) else judge_holder(holder.owner)
            if verdict is not None and not verdict.gone:
                return Joined(False, holder=holder, liveness=verdict)
            conn.execute(
                update(issues)
                .where(issues.c.id == issue_id)
                .values(claimed_by=None, claimed_until=None, claimed_owner=None)
            )
            if verdict is not None:  # taken before its lease ended: say so, as claim_send does
                taken = (holder, verdict)
        others = tuple(
            m for m in live_members(conn, issue_id, now) if m.token != token and m.zones != zones
        )
        if others:
            return Joined(False, others=others)
        values = {
            "owner": facts,
            "zones": None if zones is None else _zones_json(zones),
            "until": now + lease,
        }
        renewed = conn.execute(
            update(send_crew)
            .where(send_crew.c.issue_id == issue_id, send_crew.c.token == token)
            .values(**values)
        )
        if renewed.rowcount == 0:
            conn.execute(
                insert(send_crew).values(issue_id=issue_id, token=token, joined_at=now, **values)
            )
    if taken is not None:
        return Joined(True, holder=taken[0], liveness=taken[1])
    return Joined(True)


def renew(engine: Engine, issue_id: int, token: str, lease: timedelta, *, now: datetime) -> bool:
    """Extend a member's lease; False when its row is gone (another member judged it dead and
    took its batches: it must stop, as a single sender that lost its lease does)."""
    with engine.begin() as conn:
        result = conn.execute(
            update(send_crew)
            .where(send_crew.c.issue_id == issue_id, send_crew.c.token == token)
            .values(until=now + lease)
        )
    return result.rowcount == 1


def leave(engine: Engine, issue_id: int, token: str) -> None:
    """Drop a member's row: it settled its batches (or left them for others to take over)."""
    with engine.begin() as conn:
        conn.execute(
            delete(send_crew).where(send_crew.c.issue_id == issue_id, send_crew.c.token == token)
        )


def members(engine: Engine | Connection, issue_id: int) -> list[CrewMember]:
    """Every member row of `issue_id`'s send, live or not, oldest first."""
    query = (
        select(send_crew.c.token, send_crew.c.until, send_crew.c.owner, send_crew.c.zones)
        .where(send_crew.c.issue_id == issue_id)
        .order_by(send_crew.c.joined_at, send_crew.c.token)
    )
    if isinstance(engine, Connection):
        rows: Sequence[tuple[object, ...]] = engine.execute(query).all()
    else:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    return [_member(*row) for row in rows]


def live_members(engine: Engine | Connection, issue_id: int, now: datetime) -> list[CrewMember]:
    """Members whose lease has not ended at `now` (whether they still run is the caller's to
    judge: `digest.owner` can prove a member on this host gone before its lease ends)."""
    return [m for m in members(engine, issue_id) if not m.lease.lapsed(now)]


def drop_member(engine: Engine, issue_id: int, member: CrewMember) -> bool:
    """Remove a member judged dead, if its row is still as it was judged (same lease end): a
    member that renewed meanwhile was not dead, and keeps its place. True when dropped."""
    until = member.lease.until
    with engine.begin() as conn:
        result = conn.execute(
            delete(send_crew).where(
                send_crew.c.issue_id == issue_id,
                send_crew.c.token == member.token,
                send_crew.c.until == until if until is not None else send_crew.c.until.is_(None),
            )
        )
    return result.rowcount == 1


def _member(token: object, until: object, owner: object, zones: object) -> CrewMember:
    found = Owner.from_json(owner)
    lease = LeaseHolder(
        str(token),
        until if isinstance(until, datetime) else None,
        found if found is not None and found.token == token else None,
    )
    return CrewMember(lease, _zones_from_json(zones))


def _owner_values(owner: str | Owner) -> tuple[str, dict[str, object] | None]:
    if isinstance(owner, Owner):
        return owner.token, owner.to_json()
    return owner, None


def _zones_json(zones: frozenset[str | None]) -> list[str | None]:
    """Zones as a stable JSON list: named zones sorted, None (readers without one) last."""
    named: list[str | None] = [*sorted(z for z in zones if z is not None)]
    return named + ([None] if None in zones else [])


def _zones_from_json(data: object) -> frozenset[str | None] | None:
    if not isinstance(data, list):
        return None
    return frozenset(z if isinstance(z, str) else None for z in data)


def send_leases(engine: Engine, issue_id: int) -> list[LeaseHolder]:
    """Every lease on `issue_id`'s send as stored: the exclusive holder's, then the crew's."""
    with engine.connect() as conn:
        row = conn.execute(
            select(issues.c.claimed_by, issues.c.claimed_until, issues.c.claimed_owner).where(
                issues.c.id == issue_id
            )
        ).first()
        crew = members(conn, issue_id)
    exclusive = []
    if row is not None and row[0] is not None:
        found = Owner.from_json(row[2])
        exclusive = [
            LeaseHolder(row[0], row[1], found if found and found.token == row[0] else None)
        ]
    return exclusive + [m.lease for m in crew]
