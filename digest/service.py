"""`digest run`: one replica of the service, stopped cleanly by SIGTERM or SIGINT. Every replica
serves the web app; the one that leads (digest.store.leadership) also runs the scheduler.

The one place signals are wired for the long-running service. A replica's threads:

- the main thread runs uvicorn and handles the signals;
- `_Lead` ("digest-leadership") tries for the lead every DIGEST_LEADER_RETRY_INTERVAL; once it
  leads it starts the APScheduler scheduler (weekly job, local-time ticks, approval job) and
  resumes a send the last leader, or a previous process, left cut short; it checks the lock at
  the same interval and shuts the scheduler down the moment the lock is lost.

- `_Joiner` ("digest-join", PostgreSQL only) looks every DIGEST_SEND_JOIN_INTERVAL for a send
  another replica is running and joins it (digest.campaign.shared_sends): leader or not, every
  replica sends. Work for every replica goes there, never into the leader's scheduler.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime, timedelta
from types import FrameType

import uvicorn
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from digest.campaign.lifecycle import resumable
from digest.campaign.shared_sends import join_shared_sends
from digest.config import Settings
from digest.core.cadence import due_week
from digest.logs import get_logger, log_event
from digest.model.schedule import parse_schedule
from digest.model.weeks import IsoWeek
from digest.owner import owner_liveness
from digest.scheduler import make_scheduler, run_soon, start_scheduler, stopping
from digest.store import db
from digest.store.issues import get_issue, lease_holder
from digest.store.leadership import LeaderLock, leader_lock, replica_name
from digest.web import create_app

__all__ = ["serve"]

_log = get_logger("digest.schedule")  # the name operators' log filters know (docs/operations.md)


def serve(settings: Settings, *, host: str, port: int, fire_now: bool = False) -> None:
    """`digest run`: the web app, and the scheduler while this replica leads, until SIGTERM or
    SIGINT. With `fire_now` the weekly job runs once more as soon as this replica leads.

    On a signal uvicorn stops taking requests, the running send finishes its batch and records
    its state, the scheduler shuts down waiting for it, the lead is released (another replica
    takes it within its retry interval); the process then exits 0.
    """
    parse_schedule(settings.schedule, settings.zone)  # a bad schedule fails before anything starts
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
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
    lead = _Lead(
        settings, leader_lock(settings.database_url, settings.leader_retry_interval), fire_now
    )
    joiner = (
        _Joiner(settings)
        if make_url(settings.database_url).get_backend_name() == ("postgresql")
        else None
    )
    try:
        lead.start()
        if joiner is not None:
            joiner.start()
        log_event(_log, "service_started", host=host, port=port)
        if not stopping.is_set():
            server.run()
    finally:
        stopping.set()
        if lead.ident is not None:
            lead.join()  # the scheduler down (its running send finished), the lead released
        if joiner is not None and joiner.ident is not None:
            joiner.join()  # a joined send finishes its batches in flight and leaves its crew
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log_event(_log, "service_stopped")


class _Joiner(threading.Thread):
    """Every replica's part in a shared send: join what another replica is sending, every
    `send_join_interval`, until `stopping` (a send joined stops with it, as the weekly job's)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="digest-join")
        self.settings = settings

    def run(self) -> None:
        engine = db.make_engine(self.settings.database_url)
        unreachable = False
        try:
            while not stopping.wait(self.settings.send_join_interval):
                try:
                    join_shared_sends(self.settings, stop=stopping, engine=engine)
                    unreachable = False
                except SQLAlchemyError as exc:  # the database is out: try again next time
                    if not unreachable:
                        log_event(_log, "join_failed", level=logging.WARNING, error=str(exc))
                    unreachable = True
        finally:
            engine.dispose()


class _Lead(threading.Thread):
    """The scheduler's lead for this replica: tries for it, runs the scheduler while it holds
    it, and steps down the moment it is lost, every `leader_retry_interval` until `stopping`."""

    def __init__(self, settings: Settings, lock: LeaderLock, fire_now: bool) -> None:
        super().__init__(name="digest-leadership")
        self.settings = settings
        self.lock = lock
        self.fire_now = fire_now  # spent at the first election
        self.scheduler: BaseScheduler | None = None
        self._waiting = False  # "leader_waiting" is logged once per wait, not every try
        self._unreachable = False

    def run(self) -> None:
        try:
            while not stopping.is_set():
                if self.scheduler is None:
                    self._try_to_lead()
                elif not self.lock.held():
                    # Another replica may hold the lock now: stop firing jobs before anything
                    # else. A send already running goes on; its own lease keeps it single.
                    self._stop_scheduler(wait=False)
                    log_event(_log, "leader_lost", level=logging.WARNING, replica=replica_name())
                stopping.wait(self.settings.leader_retry_interval)
        finally:
            self._stop_scheduler(wait=True)  # a signal: the running send finishes its batch
            self.lock.release()

    def _try_to_lead(self) -> None:
        try:
            elected = self.lock.acquire()
        except (SQLAlchemyError, OSError) as exc:
            if not self._unreachable:  # once an outage, not every try
                log_event(_log, "leader_unreachable", level=logging.WARNING, error=str(exc))
            self._unreachable = True
            return
        self._unreachable = False
        if stopping.is_set():  # a signal meanwhile: `run` releases the lock on its way out
            return
        if not elected:
            if not self._waiting:
                log_event(_log, "leader_waiting", replica=replica_name())
            self._waiting = True
            return
        self._waiting = False
        log_event(_log, "leader_elected", replica=replica_name("leader"))
        try:
            self._lead()
        except Exception as exc:  # not leading after all: let another replica try
            log_event(_log, "leader_failed", level=logging.ERROR, error=str(exc), exc_info=True)
            self._stop_scheduler(wait=False)
            self.lock.release()

    def _lead(self) -> None:
        """Start the scheduler; the stored weekly job's missed fire (the last leader died before
        it) runs now if within misfire grace, and a send cut short is resumed."""
        settings = self.settings
        engine = db.make_engine(settings.database_url)
        try:
            interrupted = _interrupted_week(engine, settings, db.utcnow())
            resume_at = _resume_time(engine, interrupted, db.utcnow()) if interrupted else None
        finally:
            engine.dispose()
        self.scheduler = make_scheduler(settings)
        start_scheduler(self.scheduler, settings)
        fire_now, self.fire_now = self.fire_now, False
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
            run_soon(self.scheduler, later)

    def _stop_scheduler(self, *, wait: bool) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=wait)


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
