"""`digest run`: the web app and the scheduler in one process, stopped cleanly by SIGTERM or
SIGINT, resuming at start a send that a previous process left cut short.

The one place signals are wired for the long-running service.
"""

from __future__ import annotations

import signal
from datetime import datetime, timedelta
from types import FrameType

import uvicorn
from sqlalchemy import Engine

from digest.campaign.lifecycle import resumable
from digest.config import Settings
from digest.core.cadence import due_week
from digest.logs import get_logger, log_event
from digest.model.schedule import parse_schedule
from digest.model.weeks import IsoWeek
from digest.owner import owner_liveness
from digest.scheduler import make_scheduler, run_soon, start_scheduler, stopping
from digest.store import db
from digest.store.issues import get_issue, lease_holder
from digest.web import create_app

__all__ = ["serve"]

_log = get_logger("digest.schedule")  # the name operators' log filters know (docs/operations.md)


def serve(settings: Settings, *, host: str, port: int, fire_now: bool = False) -> None:
    """`digest run`: the web app and the scheduler in one process until SIGTERM or SIGINT.

    On a signal uvicorn stops taking requests, the running send finishes its batch and records
    its state, and the scheduler shuts down waiting for it; the process then exits 0.
    """
    parse_schedule(settings.schedule, settings.zone)  # a bad schedule fails before anything starts
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    interrupted = _interrupted_week(engine, settings, db.utcnow())
    resume_at = _resume_time(engine, interrupted, db.utcnow()) if interrupted else None
    engine.dispose()

    stopping.clear()

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            stopping.set()  # tell the send at once, not after uvicorn has drained
            super().handle_exit(sig, frame)

    server = _Server(
        uvicorn.Config(
            create_app(settings),
            host=host,
            port=port,
            log_config=None,  # keep digest's structured handler
            # Access lines carry confirm/unsubscribe tokens in their paths: only when debugging.
            access_log=settings.log_level.upper() == "DEBUG",
        )
    )

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        # Before uvicorn runs and after it returns (it re-raises the signal it caught).
        stopping.set()
        server.should_exit = True

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    scheduler = make_scheduler(settings)
    try:
        start_scheduler(scheduler, settings)
        if fire_now or interrupted is not None:
            # A dead sender's lease is taken over at once (digest.owner), so "now" resumes it;
            # one that must be waited out (alive, on another host, not checkable) is tried
            # again the moment its lease runs out rather than left for next week's fire.
            later = resume_at if not fire_now else None
            log_event(
                _log,
                "job_run_now",
                reason="--now" if fire_now else "resuming an interrupted send",
                week=str(interrupted) if interrupted else None,
                at=later.isoformat() if later else "now",
            )
            run_soon(scheduler, later)
        log_event(_log, "service_started", host=host, port=port)
        if not stopping.is_set():
            server.run()
    finally:
        stopping.set()
        if scheduler.running:
            scheduler.shutdown(wait=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log_event(_log, "service_stopped")


def _resume_time(engine: Engine, week: IsoWeek, now: datetime) -> datetime | None:
    """When a restarted `digest run` can resume `week`'s send: None for now (nobody holds it,
    its lease lapsed, or its holder is provably gone), else just after the holder's lease ends."""
    holder = lease_holder(engine, week)
    if holder is None or holder.until is None or holder.lapsed(now):
        return None
    if owner_liveness(holder.owner).gone:
        return None
    return holder.until + timedelta(seconds=1)


def _interrupted_week(engine: Engine, settings: Settings, now: datetime) -> IsoWeek | None:
    """The due week, if its send was cut short (killed, or stopped by a signal) and is resumable.

    Only within the grace window of its fire time: an issue is not sent days late by a restart.
    """
    week = due_week(settings, now)
    if week is None:
        return None
    return week if resumable(get_issue(engine, week)) else None
