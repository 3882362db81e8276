"""How a send run ends: its statuses, and which ending stands when several could.

Apart from the batch walk (`digest.delivery.batches`) so the runner, the campaign and the walk
share one vocabulary without importing the walk's machinery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["Clock", "Outcome", "SendStatus", "ended_as", "graver", "readers_failed"]

Clock = Callable[[], datetime]
# "waiting": a local-time send did the zones due so far; later zones' readers are still to come.
SendStatus = Literal["sent", "paused", "failed", "busy", "waiting"]


@dataclass
class Outcome:
    """Where a step left the run: going on (status None), or ended and why."""

    status: SendStatus | None = None  # None: keep going
    reason: str | None = None


def graver(first: Outcome | None, then: Outcome) -> Outcome | None:
    """The ending that stands when several batches in flight end the run: the first one,
    unless a later one failed the issue (a refusal outranks a pause: the operator must act)."""
    if then.status is None:
        return first
    if first is None or (then.status == "failed" and first.status != "failed"):
        return then
    return first


def ended_as(status: str, reason: str | None) -> Outcome:
    """A crew member's ending when the issue moved on without it (another member paused,
    failed or sent it): as the issue now stands."""
    if status == "sent":
        return Outcome("sent", reason)
    if status == "paused":
        return Outcome("paused", reason or "another sender paused the issue")
    if status == "failed":
        return Outcome("failed", reason or "another sender failed the issue")
    return Outcome("paused", f"the issue is {status} now: {reason or 'moved by another process'}")


def readers_failed(count: int) -> str:
    """Why a send whose every batch is settled still pauses: readers a per-reader transport
    (SMTP) kept failing after its retries, while everyone else was sent."""
    many = count != 1
    return (
        f"{count} reader{'s' * many} could not be sent to yet (the relay kept deferring them); "
        "everyone else is sent: run `digest send --retry-failed` to try them again"
    )
