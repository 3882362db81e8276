"""A batch run's ledger writes and the counts they add up to: each batch marked sent or failed,
its refused readers, a release, an uncertain batch given up (`digest.delivery.ledger` writes).

A base of `BatchRun` (digest.delivery.batches), which holds the attributes declared here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import Engine

from digest.core.mails import Recipient
from digest.delivery import ledger
from digest.delivery.crew import Seat
from digest.delivery.transport import Transport
from digest.model.issue import IssueRecord

__all__ = ["Recording"]


class Recording:
    """The recording half of a batch run: every write adds its rows to the run's counts."""

    engine: Engine
    issue: IssueRecord
    transport: Transport
    seat: Seat
    clock: Callable[[], datetime]
    retry: bool
    sent: int
    failed: int
    refused: int
    uncertain: int
    done: int

    def _mark(
        self, batch: int, status: str, *, error: str | None, message_id: str | None = None
    ) -> None:
        count = ledger.mark_batch(
            self.engine, self.issue, batch, status,
            error=error, sent_at=self.clock(), message_id=message_id, by=self.seat.token,
        )  # fmt: skip
        if status == "sent":
            self.sent += count
        elif status == "failed":
            self.failed += count
        self.done += count

    def _record_refused(
        self, batch: int, refused: Mapping[str, str], recipients: Sequence[Recipient]
    ) -> None:
        count = ledger.record_refused(
            self.engine, self.issue, batch, refused, recipients, self.transport.name,
            by=self.seat.token,
        )  # fmt: skip
        self.refused += count
        self.done += count

    def _release(self, batch: int) -> None:
        if self.retry:
            # The rows were failed before this retry and certainly did not go out now either.
            self._mark(batch, "failed", error="the provider stayed unavailable during a retry")
            return
        ledger.release_batch(self.engine, self.issue, batch, by=self.seat.token)

    def _give_up_uncertain(self, batch: int, why: str) -> None:
        count = ledger.skip_uncertain(self.engine, self.issue, batch, why, by=self.seat.token)
        self.uncertain += count
        self.done += count
