"""The desk's "send now": one send at a time, in a background thread, never inside a request.

A send takes minutes for a large list; the request only starts it and the issue page shows how
it went. A second press while a send runs is refused, whatever week it is for.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from digest.campaign.lifecycle import send_week
from digest.config import Settings
from digest.model.weeks import IsoWeek

__all__ = ["DeskSend", "SendRunner"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeskSend:
    """The latest send started from the desk: its week, who started it, and how it ended."""

    week: IsoWeek
    started_by: str
    running: bool
    outcome: str | None = None  # the status after the send, or the error that stopped it


class SendRunner:
    """Starts `lifecycle.send_week` in a thread; at most one runs per app."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._latest: DeskSend | None = None

    @property
    def latest(self) -> DeskSend | None:
        return self._latest

    def start(self, settings: Settings, week: IsoWeek, *, actor: str, force: bool) -> bool:
        """Start sending `week`; False (nothing started) while another send runs."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._latest = DeskSend(week, actor, running=True)
            self._thread = threading.Thread(
                target=self._run, args=(settings, week, actor, force), name=f"desk-send-{week}"
            )
            self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the running send (tests, and a shutting-down app)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self, settings: Settings, week: IsoWeek, actor: str, force: bool) -> None:
        try:
            outcome = send_week(settings, week, force=force).status
        except Exception as exc:  # shown on the issue page; the thread must not die silently
            log.warning("desk send of %s stopped: %s: %s", week, type(exc).__name__, exc)
            outcome = f"not sent: {exc}"
        with self._lock:
            self._latest = DeskSend(week, actor, running=False, outcome=outcome)
