"""Storage of SendGrid's webhook events: the events ledger and the suppressions they cause.

Bounces, drops, spam reports and unsubscribes are kept (once each, by provider id) and suppress
their subscriber; `digest.web.webhooks` verifies a batch before it comes here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from digest.logs import get_logger, log_event
from digest.store import subscribers as subscriber_store
from digest.store.db import events, issues

__all__ = ["KEPT_EVENTS", "WebhookResult", "handle_events"]

log = get_logger(__name__)

Suppression = Literal["unsubscribed", "bounced", "complained"]

# The events digest acts on (and keeps); opens, clicks, deliveries and the like are not stored:
# they would grow the table by the size of the list every week and change nothing.
KEPT_EVENTS = frozenset({"bounce", "dropped", "spamreport", "unsubscribe", "group_unsubscribe"})
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
    ignored: int  # events digest does not act on, or that name no address


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
    engine: Engine, batch: Iterable[Mapping[str, Any]], now: datetime
) -> WebhookResult:
    """Store new suppression events (deduplicated by `sg_event_id`) and mark their subscribers.

    Idempotent: SendGrid re-posts a batch it did not see acknowledged, and a re-posted event
    changes nothing. Two deliveries racing on one event are settled by the unique provider id.
    """
    items = [dict(e) for e in batch if isinstance(e, Mapping) and _storable(e)]
    for attempt in range(2):
        try:
            return _handle(engine, items, now)
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


def _handle(engine: Engine, items: list[dict[str, Any]], now: datetime) -> WebhookResult:
    stored = duplicates = suppressed = ignored = 0
    with engine.begin() as conn:
        ids = [str(e["sg_event_id"]) for e in items if e.get("sg_event_id")]
        known = set(
            conn.execute(select(events.c.provider_id).where(events.c.provider_id.in_(ids))).scalars()
        ) if ids else set()  # fmt: skip
        weeks: dict[str, int | None] = {}
        for event in items:
            kind = event.get("event")
            if kind not in KEPT_EVENTS or not isinstance(event.get("email"), str):
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
            conn.execute(
                insert(events).values(
                    provider_id=provider_id,
                    subscriber_id=subscriber_id,
                    issue_id=weeks.get(week) if isinstance(week, str) else None,
                    kind=str(kind)[:32],
                    detail=_detail(event),
                    occurred_at=_occurred_at(event, now),
                    received_at=now,
                )
            )
            if provider_id is not None:
                known.add(provider_id)
            stored += 1
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
    return WebhookResult(len(items), stored, duplicates, suppressed, ignored)
