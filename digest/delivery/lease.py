"""The send lease as a run holds it: taking it (over a dead holder's at once), renewing it, and
saying who holds it when a run cannot.

Leases are stamped with the real clock, whatever instant a run is told it runs at, so every `now`
here comes from the runner's lease clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine

from digest.config import Settings
from digest.model.owner import Owner
from digest.model.weeks import IsoWeek
from digest.owner import owner_liveness
from digest.store.issues import Claim, claim_send, describe_lease, lease_holder

__all__ = [
    "LostLease",
    "busy_reason",
    "first_claim",
    "inherited_until",
    "lease_length",
    "lost_reason",
    "one_attempt",
    "renew",
    "took_over",
]


class LostLease(Exception):
    """Another process took over the send (our lease lapsed, or it claimed our rows)."""


def one_attempt(settings: Settings) -> float:
    """Seconds of one request and one backoff after it: what a lease must outlast."""
    return settings.sendgrid_timeout + settings.retry_max_delay


def lease_length(settings: Settings) -> timedelta:
    """How long a claim lives between renewals."""
    # A lease shorter than one attempt plus one backoff would lapse while we still send.
    return timedelta(seconds=max(settings.send_lease, one_attempt(settings)))


def first_claim(
    engine: Engine, week: IsoWeek, owner: str | Owner, lease: timedelta, now: datetime
) -> Claim:
    """A first claim: takes over at once from a holder on this host that is provably gone."""
    return claim_send(engine, week, owner, lease, now=now, judge_holder=owner_liveness)


def renew(
    engine: Engine, week: IsoWeek, owner: str | Owner, lease: timedelta, now: datetime
) -> None:
    """Extend the lease between batches; LostLease when another process holds it now."""
    if not claim_send(engine, week, owner, lease, now=now):
        raise LostLease()


def busy_reason(claim: Claim, now: datetime) -> str:
    """Why a run is busy, naming the holder and how long its lease runs."""
    if claim.holder is None:
        return "another process is sending this issue"
    return "another process is sending this issue: " + describe_lease(
        claim.holder, claim.liveness, now
    )


def lost_reason(engine: Engine, week: IsoWeek, now: datetime) -> str:
    """Why a run stopped on losing its lease, naming who holds it now."""
    holder = lease_holder(engine, week)
    if holder is None:
        return "another process took over this send"
    return "another process took over this send: " + describe_lease(holder, None, now)


def took_over(claim: Claim) -> str | None:
    """What a run that took a dead sender's lease at once tells the operator (None: it did not)."""
    if not claim.took_over or claim.holder is None or claim.liveness is None:
        return None
    return (
        f"took the send over at once from {claim.holder.describe()}, which is no longer "
        f"running ({claim.liveness.reason})"
    )


def inherited_until(claim: Claim) -> datetime | None:
    """The taken-over lease's end, if it had not lapsed yet (see `BatchRun.inherited_until`)."""
    if not claim.took_over or claim.holder is None:
        return None
    return claim.holder.until
