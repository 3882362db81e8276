"""Issues in the database: storing a built issue, moving it along its life, its send lease.

Every move goes through `transition`, a conditional UPDATE on `digest.model.issue.TRANSITIONS`,
so two processes racing to move one issue cannot both win, and a move the state machine does
not allow is refused with a reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, or_, select, update

from digest.logs import get_logger, log_event
from digest.model.issue import FEATURED_STATES, TRANSITIONS, IssueRecord, IssueStatus, LeaseHolder
from digest.model.owner import Owner
from digest.model.snapshot import Snapshot
from digest.model.weeks import IsoWeek, parse_week
from digest.owner import Liveness
from digest.store.db import issues
from digest.store.renditions import Rendition, replace_renditions

__all__ = [
    "Claim",
    "InvalidTransition",
    "NotApproved",
    "approve_issue",
    "claim_send",
    "describe_lease",
    "featured_history",
    "get_issue",
    "hold_issue",
    "issue_links",
    "lease_holder",
    "list_issues",
    "release_send",
    "save_built",
    "save_subject",
    "transition",
]

log = get_logger("digest.store.issues")


class InvalidTransition(Exception):
    """An issue was asked to move where its state machine does not allow."""


class NotApproved(InvalidTransition):
    """A move to sending refused because the issue lost its approval a moment before."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What `claim_send` did; true when the caller holds the lease now.

    Lost: `holder` is who holds it (None if it was released meanwhile) and `liveness` what was
    judged about them. Won by a takeover: `holder` is the dead owner whose lease was taken and
    `liveness` why; the caller must settle that owner's in-flight batch.
    """

    won: bool
    holder: LeaseHolder | None = None
    liveness: Liveness | None = None

    def __bool__(self) -> bool:
        return self.won

    @property
    def took_over(self) -> bool:
        return self.won and self.holder is not None


def get_issue(engine: Engine | Connection, week: IsoWeek) -> IssueRecord | None:
    row = _execute(engine, select(issues).where(issues.c.week == str(week))).first()
    return _record(row) if row else None


def issue_links(engine: Engine | Connection, issue_id: int) -> tuple[str, ...] | None:
    """The tracked link targets stored with the issue `issue_id` (None: no such issue, or
    built without them): what /r/<token> may redirect to, read without the issue's content."""
    row = _execute(engine, select(issues.c.links).where(issues.c.id == issue_id)).first()
    if row is None or not isinstance(row[0], list):
        return None
    return tuple(str(link) for link in row[0])


def list_issues(
    engine: Engine | Connection,
    statuses: Sequence[str] | None = None,
    limit: int | None = None,
    newest_first: bool = True,
) -> list[IssueRecord]:
    query = select(issues).order_by(issues.c.week.desc() if newest_first else issues.c.week)
    if statuses is not None:
        query = query.where(issues.c.status.in_(list(statuses)))
    if limit is not None:
        query = query.limit(limit)
    return [_record(r) for r in _execute(engine, query)]


def featured_history(engine: Engine | Connection) -> list[tuple[IsoWeek, str]]:
    """(week, featured slug) of every issue that was built or sent, oldest first.

    This is what selection's rotation rules read; planned and failed issues never went out and
    do not count as featured.
    """
    query = (
        select(issues.c.week, issues.c.featured_slug)
        .where(issues.c.status.in_(FEATURED_STATES))
        .order_by(issues.c.week)
    )
    return [(parse_week(w), s) for w, s in _execute(engine, query)]


def save_built(
    engine: Engine,
    *,
    week: IsoWeek,
    featured_slug: str,
    related_slugs: Sequence[str],
    pick_source: str,
    subject: str,
    preheader: str,
    html: str,
    text: str,
    archive_html: str,
    snapshot: Snapshot,
    now: datetime,
    links: Sequence[str] | None = None,
    renditions: Sequence[Rendition] = (),
) -> IssueRecord:
    """Store a built issue (create it, or rebuild one that has not started sending), with its
    `renditions` in other languages (replacing the last build's) in the same transaction.

    `links`: the mail's tracked link targets (`core.tracking.tracked_links`), the only places a
    click token of this issue redirects to; None stores none (nothing of it can be tracked).

    A rebuild withdraws the issue's approval: the content an editor approved is replaced. The
    subject and preheader overrides are left as they are; the build has rendered with them.
    """
    values = {
        "featured_slug": featured_slug,
        "related_slugs": list(related_slugs),
        "pick_source": pick_source,
        "status": "built",
        "status_reason": None,
        "subject": subject,
        "preheader": preheader,
        "html": html,
        "text": text,
        "archive_html": archive_html,
        "snapshot": snapshot,
        "links": None if links is None else list(links),
        "built_at": now,
        "updated_at": now,
        "approved_at": None,
        "approved_by": None,
    }
    with engine.begin() as conn:
        existing = get_issue(conn, week)
        if existing is None:
            conn.execute(insert(issues).values(week=str(week), created_at=now, **values))
        else:
            allowed = TRANSITIONS["built"]
            done = conn.execute(
                update(issues)
                .where(issues.c.id == existing.id, issues.c.status.in_(allowed))
                .values(**values)
            )
            if done.rowcount != 1:
                raise InvalidTransition(
                    f"issue {week} is {existing.status}; its content is frozen once sending starts"
                )
        record = get_issue(conn, week)
        assert record is not None
        replace_renditions(conn, record.id, renditions)
    return record


def save_subject(
    engine: Engine,
    week: IsoWeek,
    *,
    built_at: datetime | None,
    subject_override: str | None,
    preheader_override: str | None,
    content: Mapping[str, str] | None,
    now: datetime,
) -> IssueRecord:
    """Store an editor's subject and preheader for `week` (None: the default) and, for a built
    issue, `content` re-rendered with them (`subject`, `preheader`, `html`, `text`,
    `archive_html`); withdraw the approval, since the approved mail changed.

    One conditional UPDATE: only while sending has not started, and only over the build the
    caller rendered from (`built_at`), so a rebuild in between is not overwritten with a
    render of the old content. InvalidTransition says which of the two happened.
    """
    values: dict[str, Any] = {
        "subject_override": subject_override,
        "preheader_override": preheader_override,
        "approved_at": None,
        "approved_by": None,
        "updated_at": now,
        **(content or {}),
    }
    unchanged = issues.c.built_at.is_(None) if built_at is None else issues.c.built_at == built_at
    stmt = update(issues).where(
        issues.c.week == str(week),
        issues.c.status.in_(TRANSITIONS["built"]),
        issues.c.send_started_at.is_(None),
        unchanged,
    )
    with engine.begin() as conn:
        done = conn.execute(stmt.values(**values))
        record = get_issue(conn, week)
    if done.rowcount != 1:
        if record is None:
            raise InvalidTransition(f"there is no issue for {week}")
        if record.send_started_at is not None or not record.can_rebuild:
            raise InvalidTransition(
                f"issue {week} is {record.status}; its subject is frozen once sending starts"
            )
        raise InvalidTransition(f"issue {week} was rebuilt meanwhile; try again")
    assert record is not None
    return record


def transition(
    engine: Engine | Connection,
    week: IsoWeek,
    to: IssueStatus,
    reason: str | None = None,
    *,
    now: datetime,
    approved_only: bool = False,
) -> IssueRecord:
    """Move `week`'s issue to `to` if the state machine allows it from where it is now.

    `approved_only` (a first move to sending under DIGEST_REQUIRE_APPROVAL): only if the row
    still carries an approval, or its send had already started. Checked in the same UPDATE, so
    a rebuild or subject edit that withdraws the approval a moment before cannot slip through
    with content nobody approved; NotApproved says so.
    """
    values: dict[str, Any] = {"status": to, "status_reason": reason, "updated_at": now}
    if to == "sent":
        values["sent_at"] = now
    stmt = update(issues).where(issues.c.week == str(week), issues.c.status.in_(TRANSITIONS[to]))
    if approved_only:
        stmt = stmt.where(
            or_(issues.c.approved_at.is_not(None), issues.c.send_started_at.is_not(None))
        )
    result = _execute(engine, stmt.values(**values))
    if result.rowcount != 1:
        current = get_issue(engine, week)
        if current is None:
            raise InvalidTransition(f"there is no issue for {week}")
        if approved_only and current.status in TRANSITIONS[to]:
            raise NotApproved(f"issue {week} is not approved (its approval was withdrawn)")
        raise InvalidTransition(f"issue {week} cannot go from {current.status} to {to}")
    if to == "sending":
        # The send's start is the subscriber cut-off: set once, on the first move to sending.
        _execute(
            engine,
            update(issues)
            .where(issues.c.week == str(week), issues.c.send_started_at.is_(None))
            .values(send_started_at=now),
        )
    record = get_issue(engine, week)
    assert record is not None
    return record


def claim_send(
    engine: Engine,
    week: IsoWeek,
    owner: str | Owner,
    lease: timedelta,
    *,
    now: datetime,
    judge_holder: Callable[[Owner | None], Liveness] | None = None,
) -> Claim:
    """Take the right to send `week`'s issue for `lease`; a false Claim when another holds it.

    A lease, not a lock: a sender killed with SIGKILL cannot release it, so it lapses by itself
    and the next run takes over. A live sender renews it between batches (this same call).

    With `judge_holder` (a first claim, not a renewal), a lease still running is taken over at
    once when its holder is provably gone (`digest.owner.judge`: same host, and that boot or
    that process is no more). The takeover is a compare-and-swap on the holder's exact
    `claimed_by` and `claimed_until` as observed, so of two claimants racing for a dead owner's
    lease only one matches, and an owner that renewed meanwhile (judged wrongly) keeps it.
    """
    values = {"claimed_until": now + lease, **_owner_values(owner)}
    free = or_(
        issues.c.claimed_by.is_(None),
        issues.c.claimed_by == values["claimed_by"],
        issues.c.claimed_until < now,
    )
    claim = update(issues).where(issues.c.week == str(week), free).values(**values)
    if _execute(engine, claim).rowcount == 1:
        return Claim(True)
    holder = lease_holder(engine, week)
    if holder is None:  # released between the two statements (or there is no such issue)
        return Claim(_execute(engine, claim).rowcount == 1)
    if judge_holder is None:
        return Claim(False, holder)
    verdict = judge_holder(holder.owner)
    if not verdict.gone:
        return Claim(False, holder, verdict)
    until = (
        issues.c.claimed_until.is_(None)
        if holder.until is None
        else issues.c.claimed_until == holder.until
    )
    taken = _execute(
        engine,
        update(issues)
        .where(issues.c.week == str(week), issues.c.claimed_by == holder.token, until)
        .values(**values),
    )
    if taken.rowcount != 1:
        # Another claimant swapped it first (or the holder moved on): theirs now, not ours.
        return Claim(False, lease_holder(engine, week))
    log_event(
        log,
        "send_lease_taken_over",
        level=logging.WARNING,
        week=str(week),
        holder=holder.describe(),
        lease_until=holder.until.isoformat() if holder.until else None,
        reason=verdict.reason,
    )
    return Claim(True, holder, verdict)


def release_send(engine: Engine, week: IsoWeek, owner: str | Owner) -> None:
    token = owner.token if isinstance(owner, Owner) else owner
    _execute(
        engine,
        update(issues)
        .where(issues.c.week == str(week), issues.c.claimed_by == token)
        .values(claimed_by=None, claimed_until=None, claimed_owner=None),
    )


# Approval (DIGEST_REQUIRE_APPROVAL): an issue's content is approved while it is built or held,
# never after sending starts, so what an editor approved is what goes out.
_APPROVABLE: tuple[IssueStatus, ...] = ("built", "held")


def approve_issue(engine: Engine, week: IsoWeek, *, by: str, now: datetime) -> IssueRecord:
    """Mark `week`'s built or held issue approved by `by` (a held one moves back to built).

    One conditional UPDATE, so an issue that started sending (or was rebuilt into nothing)
    meanwhile is refused rather than approved after the fact.
    """
    stmt = (
        update(issues)
        .where(
            issues.c.week == str(week),
            issues.c.status.in_(_APPROVABLE),
            issues.c.html.is_not(None),
        )
        .values(status="built", status_reason=None, approved_at=now, approved_by=by, updated_at=now)
    )
    return _moved(engine, week, stmt, "approved")


def hold_issue(
    engine: Engine, week: IsoWeek, reason: str, *, now: datetime, unless_approved: bool = False
) -> IssueRecord:
    """Move `week`'s built (or held) issue to held with `reason`, withdrawing any approval.

    `unless_approved`: the send-time hold of an unapproved issue; an approval that lands just
    before it wins (the UPDATE matches only a row still without one), and InvalidTransition
    then says the issue is approved.
    """
    where = [issues.c.week == str(week), issues.c.status.in_(TRANSITIONS["held"])]
    if unless_approved:
        where.append(issues.c.approved_at.is_(None))
    stmt = (
        update(issues)
        .where(*where)
        .values(
            status="held", status_reason=reason, approved_at=None, approved_by=None, updated_at=now
        )
    )
    return _moved(engine, week, stmt, "held")


def _moved(engine: Engine, week: IsoWeek, stmt: Any, what: str) -> IssueRecord:
    """Run one conditional UPDATE of `week`'s row; InvalidTransition says why it matched none."""
    with engine.begin() as conn:
        done = conn.execute(stmt).rowcount == 1
        record = get_issue(conn, week)
    if record is None:
        raise InvalidTransition(f"there is no issue for {week}")
    if not done:
        state = "approved" if record.approved and record.status == "built" else record.status
        raise InvalidTransition(f"issue {week} is {state}; it cannot be {what} now")
    return record


def lease_holder(engine: Engine | Connection, week: IsoWeek) -> LeaseHolder | None:
    """Who holds `week`'s send lease now (None: nobody, or no such issue)."""
    row = _execute(
        engine,
        select(issues.c.claimed_by, issues.c.claimed_until, issues.c.claimed_owner).where(
            issues.c.week == str(week)
        ),
    ).first()
    if row is None or row[0] is None:
        return None
    return LeaseHolder(row[0], row[1], _recorded_owner(row[0], row[2]))


def _record(row: Any) -> IssueRecord:
    """An `issues` row as the model's record."""
    data = dict(row._mapping)
    data["week"] = parse_week(data["week"])
    data["related_slugs"] = tuple(data["related_slugs"] or ())
    data["links"] = None if data.get("links") is None else tuple(data["links"])
    data["claimed_owner"] = _recorded_owner(data["claimed_by"], data.get("claimed_owner"))
    return IssueRecord(**data)


def _recorded_owner(token: str | None, data: object) -> Owner | None:
    """The process facts stored with the lease, if they are the current holder's.

    A digest from before claimed_owner existed neither writes nor clears it: taking a lapsed
    lease, it leaves the previous (perhaps dead) holder's facts beside its own token. Judging
    those would take a live sender's lease, so facts that do not match the token count as none.
    """
    owner = Owner.from_json(data)
    return owner if owner is not None and owner.token == token else None


def describe_lease(holder: LeaseHolder, liveness: Liveness | None, now: datetime) -> str:
    """One clause for `digest status` and a busy send: who holds the lease, and for how long.

    Never just "sending": the operator needs to know whether waiting helps and until when.
    """
    who = holder.describe()
    until = holder.until.strftime("%Y-%m-%d %H:%M:%S UTC") if holder.until else "unknown"
    if holder.lapsed(now):
        return f"held by {who} until {until}, which has passed"
    if liveness is None:
        return f"held by {who} until {until}"
    if liveness.gone:
        return f"held by {who}, which is no longer running ({liveness.reason})"
    if liveness.state == "running":
        return f"held by {who}, which is running, until {until} (it renews while it sends)"
    if liveness.state == "elsewhere" and holder.owner is not None:
        return (
            f"held by host {holder.owner.host} until {until} (pid {holder.owner.pid} there; "
            "a process on another machine cannot be checked from here, so its lease is waited out)"
        )
    return f"held by {who} until {until} (whether it still runs cannot be told: {liveness.reason})"


def _owner_values(owner: str | Owner) -> dict[str, Any]:
    """The columns a claim writes: the token, and the checkable owner when there is one (a bare
    token is an owner nobody can check, so its lease is always waited out)."""
    if isinstance(owner, Owner):
        return {"claimed_by": owner.token, "claimed_owner": owner.to_json()}
    return {"claimed_by": owner, "claimed_owner": None}


def _execute(engine: Engine | Connection, statement: Any) -> Any:
    """Run one statement in its own transaction, or in the caller's when given a Connection."""
    if isinstance(engine, Connection):
        return engine.execute(statement)
    with engine.begin() as conn:
        result = conn.execute(statement)
        if result.returns_rows:
            rows = result.fetchall()
            return _Rows(rows)
        return result


class _Rows(list):  # type: ignore[type-arg]
    """Fetched rows that still answer `.first()`, so callers need not care who ran the query."""

    def first(self) -> Any:
        return self[0] if self else None
