"""Storage of SendGrid's webhook events: the events ledger, the suppressions and the opens.

Bounces, drops, spam reports and unsubscribes are kept (once each, by provider id) and suppress
their subscriber; deliveries and deferrals are kept for the numbers; opens and clicks only when
digest tracks them. `digest.web.webhooks` verifies a batch before it comes here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from digest.config import Settings
from digest.core.tracking import reader_key, tracking_key
from digest.logs import get_logger, log_event
from digest.store import subscribers as subscriber_store
from digest.store.db import events, issues
from digest.store.engagement import record_on

__all__ = [
    "KEPT_EVENTS",
    "SUPPRESSING_EVENTS",
    "TRACKING_EVENTS",
    "WebhookResult",
    "handle_events",
]

log = get_logger(__name__)

Suppression = Literal["unsubscribed", "bounced", "complained"]

# The events that suppress a subscriber; deliveries and deferrals are kept for `digest stats`
# (not tracking: SendGrid reports them whatever digest tracks); opens and clicks are reader
# behaviour and kept only when the matching DIGEST_TRACK_* is on (`TRACKING_EVENTS`).
# Processed, spam-check and the like change nothing and are not kept.
SUPPRESSING_EVENTS = frozenset(
    {"bounce", "dropped", "spamreport", "unsubscribe", "group_unsubscribe"}
)
TRACKING_EVENTS = {"open": "track_opens", "click": "track_clicks"}


@dataclass(frozen=True, slots=True)
class _Tracking:
    """What a batch may count, from the settings: which tracking events are kept, the
    reader-key key (opens on only) and whether rows name the reader."""

    kinds: frozenset[str] = frozenset()
    key: bytes | None = None
    per_reader: bool = False

    @classmethod
    def of(cls, settings: Settings | None) -> _Tracking:
        if settings is None:
            return cls()
        return cls(
            kinds=frozenset(k for k, flag in TRACKING_EVENTS.items() if getattr(settings, flag)),
            key=tracking_key(settings) if settings.track_opens else None,
            per_reader=settings.tracking_detail == "per-reader",
        )


KEPT_EVENTS = SUPPRESSING_EVENTS | {"delivered", "deferred"} | frozenset(TRACKING_EVENTS)
# SendGrid drops a message for reasons about the address (suppress it) or about the message
# (spam content, an invalid header, a quota) — those say nothing about the subscriber.
_DROP_REASONS: dict[str, Suppression] = {
    "bounced address": "bounced",
    "invalid": "bounced",
    "unsubscribed address": "unsubscribed",
    "spam reporting address": "complained",
}


@dataclass(frozen=True, slots=True)
class WebhookResult:
    received: int  # events in the batch
    stored: int  # new events written to the events table
    duplicates: int  # seen before (same sg_event_id): ignored
    suppressed: int  # subscribers whose status this batch changed
    ignored: int  # events digest does not act on (or does not track), or that name no address
    counted: int = 0  # opens that counted a new reader (human or machine) into engagement


def _suppression(event: Mapping[str, Any]) -> Suppression | None:
    kind = event.get("event")
    if kind == "bounce":
        # "blocked" is a temporary refusal (greylisting, a full mailbox); only hard bounces count.
        return None if str(event.get("type", "bounce")).lower() == "blocked" else "bounced"
    if kind == "dropped":
        return _DROP_REASONS.get(str(event.get("reason", "")).strip().lower())
    if kind == "spamreport":
        return "complained"
    if kind in ("unsubscribe", "group_unsubscribe"):
        return "unsubscribed"
    return None


def _detail(event: Mapping[str, Any]) -> str | None:
    parts = [
        f"{key}={event[key]}"
        for key in ("type", "reason", "status", "bounce_classification")
        if event.get(key) not in (None, "")
    ]
    return "; ".join(parts)[:1000] or None


def _occurred_at(event: Mapping[str, Any], now: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(event["timestamp"]), UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return now


def _subscriber_id(conn: Connection, event: Mapping[str, Any]) -> int | None:
    """The subscriber an event is about: by our custom arg when it matches the address, else by
    address (custom args are missing from some events, e.g. bounces via Return-Path)."""
    email = event.get("email")
    if not isinstance(email, str) or not email:
        return None
    raw_id = event.get("subscriber_id")
    if raw_id is not None:
        try:
            found = subscriber_store.get_subscriber(conn, int(raw_id))
        except (TypeError, ValueError):
            found = None
        # Ids can be reused after an erase: trust one only when the address agrees.
        if found is not None and found.email.lower() == email.strip().lower():
            return found.id
    found = subscriber_store.get_subscriber(conn, email)
    return found.id if found is not None else None


def handle_events(
    engine: Engine,
    batch: Iterable[Mapping[str, Any]],
    now: datetime,
    *,
    settings: Settings | None = None,
) -> WebhookResult:
    """Store new events (deduplicated by `sg_event_id`), mark suppressed subscribers and count
    opens into engagement when `settings.track_opens` (settings None: digest's defaults, which
    track nothing — deliveries and suppressions only).

    Idempotent: SendGrid re-posts a batch it did not see acknowledged, and a re-posted event
    changes nothing — an open is counted in the transaction that stores its event, so it is
    counted exactly when its event is new. Two deliveries racing on one event are settled by
    the unique provider id.
    """
    items = [dict(e) for e in batch if isinstance(e, Mapping) and _storable(e)]
    for attempt in range(2):
        try:
            return _handle(engine, _Tracking.of(settings), items, now)
        except IntegrityError:
            if attempt:  # pragma: no cover - a third copy racing in is not worth a loop
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _storable(event: Mapping[str, Any]) -> bool:
    """Whether the event's text can be stored: a lone surrogate (JSON's "\\udc00") cannot be
    encoded as UTF-8, and one such event must not fail the batch SendGrid would then re-post
    for a day; it is dropped instead (SendGrid never sends one)."""
    try:
        json.dumps(event, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, TypeError, ValueError):
        return False
    return True


def _handle(
    engine: Engine, tracking: _Tracking, items: list[dict[str, Any]], now: datetime
) -> WebhookResult:
    stored = duplicates = suppressed = ignored = counted = 0
    with engine.begin() as conn:
        ids = [str(e["sg_event_id"]) for e in items if e.get("sg_event_id")]
        known = set(
            conn.execute(select(events.c.provider_id).where(events.c.provider_id.in_(ids))).scalars()
        ) if ids else set()  # fmt: skip
        weeks: dict[str, int | None] = {}
        for event in items:
            kind = event.get("event")
            kept = kind in tracking.kinds or (kind in KEPT_EVENTS and kind not in TRACKING_EVENTS)
            if not kept or not isinstance(event.get("email"), str):
                ignored += 1
                continue
            provider_id = str(event["sg_event_id"])[:200] if event.get("sg_event_id") else None
            if provider_id is not None and provider_id in known:
                duplicates += 1
                continue
            subscriber_id = _subscriber_id(conn, event)
            week = event.get("issue_week")
            if isinstance(week, str) and week not in weeks:
                weeks[week] = conn.execute(
                    select(issues.c.id).where(issues.c.week == week)
                ).scalar_one_or_none()
            issue_id = weeks.get(week) if isinstance(week, str) else None
            occurred_at = _occurred_at(event, now)
            # An open or a click is reader behaviour: its row names the reader only when
            # per-reader detail was chosen (deliveries and suppressions always do).
            named = kind not in TRACKING_EVENTS or tracking.per_reader
            conn.execute(
                insert(events).values(
                    provider_id=provider_id,
                    subscriber_id=subscriber_id if named else None,
                    issue_id=issue_id,
                    kind=str(kind)[:32],
                    detail=_detail(event),
                    occurred_at=occurred_at,
                    received_at=now,
                )
            )
            if provider_id is not None:
                known.add(provider_id)
            stored += 1
            if kind == "open" and tracking.key is not None and issue_id is not None:
                counted += _count_open(conn, event, tracking, issue_id, subscriber_id, occurred_at)
            status = _suppression(event)
            if status is None or subscriber_id is None:
                continue
            before = subscriber_store.get_subscriber(conn, subscriber_id)
            after = subscriber_store.mark_status(conn, subscriber_id, status, now)
            if before is not None and after is not None and before.status != after.status:
                suppressed += 1
                log_event(
                    log,
                    "subscriber_suppressed",
                    subscriber_id=subscriber_id,
                    status=after.status,
                    event=kind,
                )
    return WebhookResult(len(items), stored, duplicates, suppressed, ignored, counted)


def _count_open(
    conn: Connection,
    event: Mapping[str, Any],
    tracking: _Tracking,
    issue_id: int,
    subscriber_id: int | None,
    at: datetime,
) -> int:
    """Count a SendGrid open into engagement: 1 when it made a new (reader, machine?) row.

    `sg_machine_open` is SendGrid's word that a machine fetched the pixel (Apple Mail Privacy
    Protection prefetching every image): counted as `opens_machine`, never as the reader. An
    open of a reader who opted out is not counted (their mail carries no pixel; one that comes
    anyway is a forwarded copy or an old mail).
    """
    if subscriber_id is None or tracking.key is None:
        return 0
    reader = subscriber_store.get_subscriber(conn, subscriber_id)
    if reader is None or reader.tracking_opt_out:
        return 0
    machine = event.get("sg_machine_open")
    new = record_on(
        conn,
        issue_id=issue_id,
        kind="open",
        link_index=-1,
        reader_key=reader_key(tracking.key, issue_id, subscriber_id),
        machine=machine is True or str(machine).lower() == "true",
        subscriber_id=subscriber_id if tracking.per_reader else None,
        now=at,
    )
    return int(new)
