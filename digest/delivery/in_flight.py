"""The batches a run has at the transport at once: each request on a worker thread of its own,
at most `limit` of them, while the run's own thread claims, records and keeps the lease.

Only the transport's calls (a send with its retries, a lookup) run here; every ledger statement
stays on the run's thread, so the database sees one writer per run as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

from digest.delivery.transport import SendResult, Transport

__all__ = ["InFlight", "RateLimitPause", "batches_at_once"]

T = TypeVar("T")


def batches_at_once(transport: Transport, wanted: int) -> int:
    """How many batches a run keeps at `transport` at once: `wanted` (the setting), or fewer
    when the transport says it takes fewer (an optional `max_in_flight`; absent: no limit)."""
    own = getattr(transport, "max_in_flight", None)
    if isinstance(own, int) and own >= 1:
        return max(1, min(wanted, own))
    return max(1, wanted)


class RateLimitPause:
    """One pause after a 429 that every batch in flight keeps to, not one per batch.

    A rate limit is the provider's, not a batch's: when one request hears "wait until the
    reset", the others would only hear it too, each a request later (N requests at the limit,
    N retry timers). So the first to hear it holds the pause, and every batch waits it out
    before its next request, whether it has met the 429 itself or not.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = 0.0

    def hold(self, seconds: float) -> float:
        """Pause everyone for `seconds` from now (a longer pause already held stands); its end."""
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)
            return self._until

    @property
    def until(self) -> float:
        """The end of the pause (on the clock given), 0.0 when none was ever held."""
        with self._lock:
            return self._until

    def left(self, until: float) -> float:
        """Seconds from now to `until`, at least zero."""
        return max(0.0, until - self._clock())


class InFlight(Generic[T]):
    """Up to `limit` pieces of work (one batch's requests each) running on worker threads.

    `start` hands one over with the item it belongs to; `finished` waits for at least one to
    end (or `timeout`) and returns each ended one with its future, whose `result()` gives the
    transport's answer or raises what the work raised. `close` waits for every worker: a run
    never returns with a request of its own still going.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="digest-batch")
        self._running: dict[Future[SendResult], T] = {}

    def __len__(self) -> int:
        return len(self._running)

    def has_room(self) -> bool:
        return len(self._running) < self.limit

    def start(self, item: T, work: Callable[[], SendResult]) -> None:
        assert self.has_room()
        self._running[self._pool.submit(work)] = item

    def finished(self, timeout: float) -> list[tuple[T, Future[SendResult]]]:
        """The work that has ended, oldest batch first; empty when `timeout` passed first."""
        done, _ = wait(self._running, timeout=timeout, return_when=FIRST_COMPLETED)
        ended = [(self._running.pop(future), future) for future in done]
        return sorted(ended, key=lambda pair: _order(pair[0]))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _order(item: object) -> int:
    return int(getattr(item, "batch", 0))
