"""Who gets an issue: the one definition of a send's audience, as SQL, counted and paged.

Pages go by keyset on the subscriber id, so a send of any size never holds its list in memory
and each page costs the same however far the send has got.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, exists, false, func, or_, select

from digest.model.issue import IssueRecord
from digest.store.db import deliveries, subscribers

__all__ = [
    "Language",
    "Zones",
    "any_unclaimed",
    "audience_page",
    "claimed_between",
    "count_unclaimed",
    "not_paused",
    "unclaimed_page",
]

# Stored `subscribers.timezone` values (None: not set) a local-time send is restricted to.
Zones = frozenset[str | None]

# One language's readers of a send with renditions (digest.delivery.languages): the rendition's
# locale (None: the issue's own), and every locale the issue has a rendition in.
Language = tuple[str | None, frozenset[str]]


def _language_condition(language: Language) -> ColumnElement[bool]:
    """The readers of one rendition: those who chose its locale; for the issue's own, everyone
    else (no choice, the newsletter's own language, or one the issue has no rendition in)."""
    locale, rendered = language
    if locale is not None:
        return subscribers.c.language == locale
    return or_(subscribers.c.language.is_(None), subscribers.c.language.not_in(sorted(rendered)))


def _audience_conditions(cutoff: datetime, zones: Zones | None = None) -> list[ColumnElement[bool]]:
    """The one place the audience is defined: active, confirmed before the send began (later
    sign-ups wait for next week) and, for a local-time send, with a stored time zone in `zones`
    (None there stands for readers without one). Paused subscribers are included: they get a
    `skipped` row."""
    conditions = [
        subscribers.c.status == "active",
        subscribers.c.confirmed_at.is_not(None),
        subscribers.c.confirmed_at <= cutoff,
    ]
    if zones is not None:
        named = sorted(z for z in zones if z is not None)
        in_zone = [subscribers.c.timezone.in_(named)] if named else []
        if None in zones:
            in_zone.append(subscribers.c.timezone.is_(None))
        conditions.append(or_(*in_zone) if in_zone else false())
    return conditions


def _unclaimed_conditions(
    issue: IssueRecord, cutoff: datetime, zones: Zones | None = None
) -> list[ColumnElement[bool]]:
    """Who may still get `issue`: the audience without a ledger row for this issue yet."""
    already = exists().where(
        deliveries.c.issue_id == issue.id, deliveries.c.subscriber_id == subscribers.c.id
    )
    return [*_audience_conditions(cutoff, zones), ~already]


def not_paused(now: datetime) -> ColumnElement[bool]:
    """Readers who are not pausing their mail at `now` (the others get a `skipped` row)."""
    return or_(subscribers.c.paused_until.is_(None), subscribers.c.paused_until <= now)


def _page(
    conditions: list[ColumnElement[bool]], after: int, limit: int, language: Language | None = None
) -> Select[Any]:
    if language is not None:
        conditions = [*conditions, _language_condition(language)]
    return (
        select(
            subscribers.c.id,
            subscribers.c.email,
            subscribers.c.name,
            subscribers.c.paused_until,
            subscribers.c.tracking_opt_out,
        )
        .where(*conditions, subscribers.c.id > after)
        .order_by(subscribers.c.id)
        .limit(limit)
    )


def unclaimed_page(
    issue: IssueRecord, cutoff: datetime, after: int, limit: int, zones: Zones | None = None
) -> Select[Any]:
    """The next page (id > after) of readers with no ledger row for `issue` yet: (id, email,
    name, paused_until, tracking_opt_out). For a look at who is next (a sample, a plan), not for claiming."""
    return _page(_unclaimed_conditions(issue, cutoff, zones), after, limit)


def audience_page(
    cutoff: datetime,
    after: int,
    limit: int,
    zones: Zones | None = None,
    language: Language | None = None,
) -> Select[Any]:
    """The next page (id > after) of the audience, ledger not consulted: the claim asks
    `claimed_between` for the page's range instead (see there). Rows as `unclaimed_page`.
    `language`: only the readers of that rendition (None: everyone, one rendition)."""
    return _page(_audience_conditions(cutoff, zones), after, limit, language)


def claimed_between(issue: IssueRecord, first: int, last: int) -> Select[Any]:
    """Subscribers between ids `first` and `last` that have a ledger row for `issue`.

    Asked separately from the page, as a range on the (issue, subscriber) unique index, so each
    page costs the same however far the send has got. As one query with NOT EXISTS,
    PostgreSQL plans an anti-join (or a hashed subplan) over every delivery recorded so far —
    once per batch, which makes a whole send quadratic.
    """
    return select(deliveries.c.subscriber_id).where(
        deliveries.c.issue_id == issue.id, deliveries.c.subscriber_id.between(first, last)
    )


def count_unclaimed(
    engine: Engine, issue: IssueRecord, cutoff: datetime, now: datetime, zones: Zones | None = None
) -> int:
    """Readers still to be claimed who would actually be sent to (not paused at `now`)."""
    query = select(func.count()).where(
        *_unclaimed_conditions(issue, cutoff, zones), not_paused(now)
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def any_unclaimed(
    engine: Engine, issue: IssueRecord, cutoff: datetime, zones: Zones | None = None
) -> bool:
    """Whether a reader of the audience has no ledger row for `issue` yet (paused ones count:
    they still get their `skipped` row): the last check before a shared send is called sent."""
    query = select(exists().where(*_unclaimed_conditions(issue, cutoff, zones)))
    with engine.connect() as conn:
        return bool(conn.execute(query).scalar_one())
