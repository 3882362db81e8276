"""Signals that ask a running send to stop: one wiring for every command that sends.

A send stops between batches when its `stop` event is set, so a signal only sets the event; the
handlers that were there before come back however the command ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_on(*signals: signal.Signals) -> Iterator[threading.Event]:
    """An event set by any of `signals` while the block runs (in the main thread)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
