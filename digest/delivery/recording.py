"""A batch run's ledger writes and the counts they add up to: each batch marked sent or failed,
its refused readers, a release, an uncertain batch given up (`digest.delivery.ledger` writes).

A base of `BatchRun` (digest.delivery.batches), which holds the attributes declared here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import Engine

from digest.config import Settings
from digest.core.mails import Message, Recipient
from digest.delivery import ledger
from digest.delivery.crew import Seat
from digest.delivery.personalise import subscriber_id
from digest.delivery.transport import SendResult, Transport
from digest.model.issue import IssueRecord

__all__ = ["Recording"]


class Recording:
    """The recording half of a batch run: every write adds its rows to the run's counts."""

    engine: Engine
    settings: Settings
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

    def _record_readers(
        self, batch: int, result: SendResult, recipients: Sequence[Recipient]
    ) -> None:
        """Settle the readers a per-reader transport answered for: refused, failed, uncertain,
        and sent with each one's own message id (the batch's `_mark` settles the rest)."""
        if result.refused:
            self._record_refused(batch, result.refused, recipients)
        if result.failed:
            count = ledger.settle_readers(
                self.engine, self.issue, batch, "failed", result.failed, recipients,
                by=self.seat.token,
            )  # fmt: skip
            self.failed += count
            self.done += count
        if result.uncertain:
            self._record_uncertain(batch, result.uncertain, recipients)
        if result.message_ids:
            self._record_sent(batch, result.message_ids, recipients)

    def _record_uncertain(
        self, batch: int, why: Mapping[str, str], recipients: Sequence[Recipient]
    ) -> None:
        reasons = {email: f"uncertain: {text}; not re-sent (DIGEST_AMBIGUOUS_BATCHES=skip)"
                   for email, text in why.items()}  # fmt: skip
        count = ledger.settle_readers(
            self.engine, self.issue, batch, "skipped", reasons, recipients, by=self.seat.token
        )
        self.uncertain += count
        self.done += count

    def _record_sent(
        self, batch: int, message_ids: Mapping[str, str], recipients: Sequence[Recipient]
    ) -> None:
        """Readers a per-reader transport took, each with the id it gave their message."""
        count = ledger.record_sent_ids(
            self.engine, self.issue, batch, message_ids, recipients,
            sent_at=self.clock(), by=self.seat.token,
        )  # fmt: skip
        self.sent += count
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

    def _settle_from_journal(
        self, batch: int, message: Message, rows: list[ledger.OpenRow]
    ) -> list[ledger.OpenRow]:
        """A per-reader transport's journal (SMTP) settles a cut-short batch reader by reader:
        accepted ones sent, ones cut off before the answer given up (DIGEST_AMBIGUOUS_BATCHES=
        skip); the rows left are for readers never tried, sent now."""
        journal_of = getattr(self.transport, "journal_of", None)
        if journal_of is None or not message.recipients:
            return rows
        accepted, unanswered = journal_of(message)
        if accepted:
            self._record_sent(batch, accepted, message.recipients)
        if self.settings.ambiguous_batches != "skip":
            unanswered = {}
        if unanswered:
            self._record_uncertain(batch, unanswered, message.recipients)
        settled = {*accepted, *unanswered}
        gone = {subscriber_id(r) for r in message.recipients if r.email in settled}
        return [row for row in rows if row[2] not in gone]
