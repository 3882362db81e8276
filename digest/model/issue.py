"""A newsletter issue as data: its statuses, the moves allowed between them, and its record.

planned → built → sending → sent (or paused / failed); with approval required, a built issue
nobody approved by its send time is held instead of sent. The table here is the state machine;
`digest.store.issues` enforces it in the database, one conditional UPDATE per move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from digest.model.owner import Owner
from digest.model.snapshot import Snapshot
from digest.model.weeks import IsoWeek

__all__ = [
    "FEATURED_STATES",
    "ISSUE_STATUSES",
    "TRANSITIONS",
    "IssueRecord",
    "IssueStatus",
    "LeaseHolder",
]

IssueStatus = Literal["planned", "built", "held", "sending", "sent", "paused", "failed"]
ISSUE_STATUSES: tuple[IssueStatus, ...] = get_args(IssueStatus)

# to-state → the states it may be reached from. Rebuilding is allowed until sending starts:
# after that the content is frozen, so what went out is what the archive shows.
TRANSITIONS: Mapping[IssueStatus, frozenset[IssueStatus]] = {
    "planned": frozenset({"failed"}),
    # A held issue goes back to built when an editor approves it (or rebuilds it).
    "built": frozenset({"planned", "built", "held", "failed"}),
    # Held: built, but not approved when its send came due (or an editor held it). Never sent
    # from here; approval moves it back to built first.
    "held": frozenset({"built", "held"}),
    "sending": frozenset({"built", "paused", "failed", "sending"}),
    "sent": frozenset({"sending"}),
    "paused": frozenset({"sending"}),
    "failed": frozenset({"planned", "built", "held", "sending", "paused"}),
}
# The states of an issue that has its content: it counts as featured (selection's rotation
# reads these), and a build leaves it alone unless told to rebuild.
FEATURED_STATES: tuple[IssueStatus, ...] = ("built", "held", "sending", "sent", "paused")


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """A send lease as stored: the claim's token, when it lapses, and the process, if recorded."""

    token: str
    until: datetime | None
    owner: Owner | None

    def describe(self) -> str:
        """The holder as "pid P on host H", or its bare token if it recorded no process."""
        return self.owner.describe() if self.owner is not None else self.token

    def lapsed(self, now: datetime) -> bool:
        return self.until is None or self.until < now


@dataclass(frozen=True, slots=True)
class IssueRecord:
    id: int
    week: IsoWeek
    featured_slug: str
    related_slugs: tuple[str, ...]
    pick_source: str
    status: IssueStatus
    status_reason: str | None
    subject: str | None
    preheader: str | None
    html: str | None
    text: str | None
    archive_html: str | None
    snapshot: Snapshot | None
    claimed_by: str | None
    claimed_until: datetime | None
    created_at: datetime
    built_at: datetime | None
    send_started_at: datetime | None
    sent_at: datetime | None
    updated_at: datetime
    # The process behind `claimed_by`, when it recorded itself (see digest.owner).
    claimed_owner: Owner | None = None
    # Who approved this content and when (DIGEST_REQUIRE_APPROVAL); None: not approved.
    approved_at: datetime | None = None
    approved_by: str | None = None
    # An editor's subject / preheader for this one issue, kept across rebuilds.
    subject_override: str | None = None
    preheader_override: str | None = None
    # The weekly mail's tracked link targets in order (DIGEST_TRACK_CLICKS); /r/<token> names an
    # index here and redirects nowhere else. None: built without click tracking.
    links: tuple[str, ...] | None = None

    @property
    def lease(self) -> LeaseHolder | None:
        """Who holds this issue's send lease, as the row says."""
        if self.claimed_by is None:
            return None
        return LeaseHolder(self.claimed_by, self.claimed_until, self.claimed_owner)

    @property
    def approved(self) -> bool:
        return self.approved_at is not None

    @property
    def can_rebuild(self) -> bool:
        """Whether a build may still replace its content: only until sending starts."""
        return self.status in TRANSITIONS["built"]
