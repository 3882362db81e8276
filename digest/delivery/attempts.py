"""One batch's request at the transport: sent with retries and backoff, and the provider asked
before any request that may already have gone out is sent again.

The ledger's bookkeeping stays with the runner; this only says what became of the request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from digest.config import Settings
from digest.core.mails import Message
from digest.delivery.in_flight import RateLimitPause
from digest.delivery.transport import RetryableError, SendResult, Transport
from digest.logs import get_logger, log_event

__all__ = ["BatchAttempts", "RecordsRefusals", "Uncertain", "refused_in_batch", "stop_aware_sleep"]

log = get_logger("digest.delivery.attempts")


class Uncertain(Exception):
    """The transport cannot tell whether a batch went out, and the policy says do not resend."""


@runtime_checkable
class RecordsRefusals(Protocol):
    """A transport that can say which recipients of a batch it already took it refused.

    A run that dies after the transport took a batch but before the ledger heard loses the
    `SendResult` and with it `refused`; the run that resumes the batch asks this instead, so
    those readers are recorded `refused` rather than `sent`. The outbox reads the batch's
    manifest; SendGrid applies its address rule again. A transport without it has every
    reader of a batch it took recorded as sent, as before refusals existed.
    """

    def refused_in_batch(self, message: Message) -> Mapping[str, str]: ...


def refused_in_batch(transport: Transport, message: Message) -> Mapping[str, str]:
    """The readers of a batch the transport took that it refused (none if it cannot say)."""
    if isinstance(transport, RecordsRefusals):
        return transport.refused_in_batch(message)
    return {}


def stop_aware_sleep(stop: threading.Event | None) -> Callable[[float], None]:
    """How a run waits between retries: on `stop`, so a SIGTERM cuts the wait short."""
    if stop is None:
        return time.sleep
    event = stop

    def wait(seconds: float) -> None:
        event.wait(seconds)

    return wait


@dataclass
class BatchAttempts:
    """Sending `message` (batch `key`) until the transport takes it, refuses it, or gives up.

    `run` returns the transport's result, or raises the last RetryableError (the retries ran
    out, `stop` was set, or a rate limit resets too far off), a PermanentError, or Uncertain.
    After a RetryableError, `maybe_delivered` says whether the request may have gone out all
    the same; `calls` counts the requests made either way.

    `pause` is the rate-limit pause the run's batches share (several in flight): a 429 with a
    reset time holds it for all, and each attempt first waits out whatever pause it has not
    waited out yet. After `stop` has cut a wait short no further request is made.
    """

    transport: Transport
    settings: Settings
    message: Message
    key: str
    week: str
    renew: Callable[[], None]  # called before each attempt: raises when the lease is lost
    stop: threading.Event | None
    sleep: Callable[[float], None]
    pause: RateLimitPause | None = None
    calls: int = 0
    maybe_delivered: bool = False
    # The end of the shared pause this batch has already waited out (its own 429's, or one
    # another batch held), so a pause is never waited out twice.
    _waited_until: float = field(default=0.0, init=False)
    _last_error: RetryableError | None = field(default=None, init=False)

    def run(self) -> SendResult:
        attempts = stop_after_attempt(self.settings.max_retries + 1)
        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=lambda state: attempts(state) or self._should_stop(state),
            wait=self._wait,
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(self._attempt)

    def _attempt(self) -> SendResult:
        self._keep_to_the_pause()
        if self._stopped():
            # `stop` was set while this batch waited (to try again, or for a slot's pause):
            # no request is made after it.
            raise self._last_error or RetryableError("stopped before the batch was sent")
        self.renew()
        if self.maybe_delivered:
            went_out = self.transport.lookup_batch(self.key)
            if went_out:
                return SendResult(refused=refused_in_batch(self.transport, self.message))
            if went_out is None and self.settings.ambiguous_batches == "skip":
                raise Uncertain()
            self.maybe_delivered = False
        self.calls += 1
        try:
            return self.transport.send(self.message)
        except RetryableError as exc:
            self.maybe_delivered = self.maybe_delivered or exc.maybe_delivered
            self._last_error = exc
            log_event(
                log,
                "batch_retry",
                week=self.week,
                batch_key=self.key,
                error=str(exc),
                retry_after=exc.retry_after,
            )
            raise

    def _keep_to_the_pause(self) -> None:
        """Wait out the shared rate-limit pause, if one was held that this batch has not."""
        if self.pause is None:
            return
        until = self.pause.until
        if until > self._waited_until:
            self._waited_until = until
            left = self.pause.left(until)
            if left > 0:
                self.sleep(left)

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _wait(self, state: RetryCallState) -> float:
        """A 429's reset time when given (held for every batch in flight); otherwise
        exponential backoff with full jitter, this batch's own."""
        exc = state.outcome.exception() if state.outcome else None
        if self._stopped():
            return 0.0  # `_should_stop` ends the attempts: nothing to wait for
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            if self.pause is None or exc.retry_after > self.settings.retry_max_delay:
                # Too far off to wait (`_should_stop` pauses the run): nobody else holds for it.
                return exc.retry_after
            self._waited_until = self.pause.hold(exc.retry_after)
            return self.pause.left(self._waited_until)
        jitter = wait_random_exponential(
            multiplier=self.settings.retry_base_delay, max=self.settings.retry_max_delay
        )
        return float(jitter(state))

    def _should_stop(self, state: RetryCallState) -> bool:
        if self._stopped():
            return True
        exc = state.outcome.exception() if state.outcome else None
        # A rate limit that resets further off than our longest wait: pause instead of hanging.
        return (
            isinstance(exc, RetryableError)
            and exc.retry_after is not None
            and exc.retry_after > self.settings.retry_max_delay
        )
