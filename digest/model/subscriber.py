"""The subscriber as stored, its statuses, and THE table of which status may become which.

The store builds its WHERE clauses from `TRANSITIONS`, so a subscription's rules are read here,
in one place, instead of in the conditions of half a dozen UPDATE statements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

__all__ = [
    "PAUSABLE",
    "STATUSES",
    "SUPPRESSED",
    "TRANSITIONS",
    "AlreadySuppressed",
    "InvalidSubscriber",
    "Subscriber",
    "SubscriberEvent",
    "SubscriberStatus",
    "allowed_from",
    "imported",
    "next_status",
    "outcome",
    "reported",
]

SubscriberStatus = Literal["pending", "active", "unsubscribed", "bounced", "complained"]
STATUSES: tuple[str, ...] = get_args(SubscriberStatus)
# Addresses that asked to stop or cannot take mail: nothing but their owner's fresh, confirmed
# consent (or an operator's erase) brings them back; imports never do.
SUPPRESSED = frozenset({"unsubscribed", "bounced", "complained"})
# Only an active subscription can be paused: a pause of a pending or suppressed one means nothing.
PAUSABLE = frozenset({"active"})

SubscriberEvent = Literal[
    "subscribe",  # someone asks for the newsletter: a double opt-in starts
    "confirm",  # the confirm link of that opt-in is followed
    "unsubscribe",  # the reader's own unsubscribe: the link, List-Unsubscribe, the preference centre
    "vouch",  # the operator adds the address as confirmed (`digest subscribers add --confirmed`)
    # what the mail provider reports (the event webhook)
    "report_unsubscribed",
    "report_bounced",
    "report_complained",
    # a CSV import row with this status (`digest subscribers import`)
    "import_pending",
    "import_active",
    "import_unsubscribed",
    "import_bounced",
    "import_complained",
]

# (status now, event) -> status after it. `None` as the status now is an address with no row
# yet. A pair that is not here leaves the subscriber exactly as they are: the event is a no-op
# for them (an active address subscribing again, a bounced one unsubscribing, ...).
TRANSITIONS: Mapping[tuple[SubscriberStatus | None, SubscriberEvent], SubscriberStatus] = {
    # A new or unsubscribed address starts a (new) double opt-in. A pending one stays pending
    # (it may be owed another confirmation mail); active, bounced and complained stay as they are.
    (None, "subscribe"): "pending",
    ("unsubscribed", "subscribe"): "pending",
    # Only a pending opt-in is confirmed: an old confirm link must not undo an unsubscribe.
    ("pending", "confirm"): "active",
    # Bounced and complained keep their stronger status.
    ("pending", "unsubscribe"): "unsubscribed",
    ("active", "unsubscribe"): "unsubscribed",
    # The operator vouches for consent, but never over a suppression (`AlreadySuppressed`).
    (None, "vouch"): "active",
    ("pending", "vouch"): "active",
    # The provider's word is taken over anything but a complaint: a complaint is final.
    ("pending", "report_unsubscribed"): "unsubscribed",
    ("active", "report_unsubscribed"): "unsubscribed",
    ("bounced", "report_unsubscribed"): "unsubscribed",
    ("pending", "report_bounced"): "bounced",
    ("active", "report_bounced"): "bounced",
    ("unsubscribed", "report_bounced"): "bounced",
    ("pending", "report_complained"): "complained",
    ("active", "report_complained"): "complained",
    ("unsubscribed", "report_complained"): "complained",
    ("bounced", "report_complained"): "complained",
    # A new address takes the file's status. An existing one moves forward only: pending ->
    # active, pending or active -> suppressed; never active -> pending, and a suppressed address
    # is never brought back (nor is its name or time zone touched: see `SUPPRESSED`).
    (None, "import_pending"): "pending",
    (None, "import_active"): "active",
    ("pending", "import_active"): "active",
    (None, "import_unsubscribed"): "unsubscribed",
    ("pending", "import_unsubscribed"): "unsubscribed",
    ("active", "import_unsubscribed"): "unsubscribed",
    (None, "import_bounced"): "bounced",
    ("pending", "import_bounced"): "bounced",
    ("active", "import_bounced"): "bounced",
    (None, "import_complained"): "complained",
    ("pending", "import_complained"): "complained",
    ("active", "import_complained"): "complained",
}


def next_status(
    current: SubscriberStatus | None, event: SubscriberEvent
) -> SubscriberStatus | None:
    """The status `event` gives a subscriber in `current` (None: no row yet); None when the
    event leaves them as they are."""
    return TRANSITIONS.get((current, event))


def allowed_from(event: SubscriberEvent) -> frozenset[SubscriberStatus]:
    """The stored statuses `event` changes: what an UPDATE's WHERE clause admits."""
    return _ALLOWED_FROM[event]


def outcome(event: SubscriberEvent) -> SubscriberStatus:
    """The status `event` leads to; each event leads to one, wherever it starts."""
    return _OUTCOME[event]


def imported(status: SubscriberStatus) -> SubscriberEvent:
    """The event of an import row that gives `status`."""
    return _IMPORTED[status]


def reported(status: SubscriberStatus) -> SubscriberEvent:
    """The event of the provider reporting `status` (unsubscribed, bounced or complained)."""
    try:
        return _REPORTED[status]
    except KeyError:
        raise ValueError(
            f"the provider reports unsubscribed, bounced or complained: {status!r}"
        ) from None


class InvalidSubscriber(ValueError):
    """An address, name or time zone that cannot be stored; the message says which and why."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.reason = message


class AlreadySuppressed(Exception):
    """The address unsubscribed, bounced or complained; only its owner can subscribe it again."""


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One subscriber as stored; `email` is the normalised, lower-cased address."""

    id: int
    email: str
    name: str | None
    status: SubscriberStatus
    source: str
    timezone: str | None
    paused_until: datetime | None
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    confirm_sent_at: datetime | None
    updated_at: datetime
    # Said no to click/open tracking (DIGEST_TRACK_*): their mails carry none.
    tracking_opt_out: bool = False
    # The language they chose (a locale digest has a catalogue for); None: the newsletter's.
    language: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Subscriber:
        """A database row (anything with a `_mapping` of the table's columns) as a Subscriber."""
        return cls(**dict(row._mapping))


def _derive() -> tuple[
    dict[SubscriberEvent, frozenset[SubscriberStatus]], dict[SubscriberEvent, SubscriberStatus]
]:
    events: tuple[SubscriberEvent, ...] = get_args(SubscriberEvent)
    allowed: dict[SubscriberEvent, frozenset[SubscriberStatus]] = {}
    outcomes: dict[SubscriberEvent, SubscriberStatus] = {}
    for event in events:
        ends = {to for (_, on), to in TRANSITIONS.items() if on == event}
        if len(ends) != 1:
            raise AssertionError(f"event {event!r} must lead to one status, not {sorted(ends)}")
        outcomes[event] = ends.pop()
        allowed[event] = frozenset(
            start for start, on in TRANSITIONS if on == event and start is not None
        )
    return allowed, outcomes


_ALLOWED_FROM, _OUTCOME = _derive()
_IMPORTED: Mapping[SubscriberStatus, SubscriberEvent] = {
    "pending": "import_pending",
    "active": "import_active",
    "unsubscribed": "import_unsubscribed",
    "bounced": "import_bounced",
    "complained": "import_complained",
}
_REPORTED: Mapping[SubscriberStatus, SubscriberEvent] = {
    "unsubscribed": "report_unsubscribed",
    "bounced": "report_bounced",
    "complained": "report_complained",
}
