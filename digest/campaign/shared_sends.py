"""Replicas joining a send: on PostgreSQL every `digest run` looks, each
DIGEST_SEND_JOIN_INTERVAL, for an issue another replica is sending, and sends it with them
(digest.delivery.crew), so an issue goes out as fast as all replicas together can send it.
"""

from __future__ import annotations

import os
import socket
import threading

from sqlalchemy import Engine

from digest.campaign.lifecycle import WeeklyResult, send_and_log
from digest.config import Settings
from digest.delivery.crew import shares_sends
from digest.logs import get_logger, log_event
from digest.model.owner import Owner
from digest.store import db
from digest.store.issues import list_issues
from digest.store.send_crew import live_members

__all__ = ["join_shared_sends"]

_log = get_logger("digest.schedule")  # the job's logger, as lifecycle's


def join_shared_sends(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    engine: Engine | None = None,
    pid: int | None = None,
) -> list[WeeklyResult]:
    """Join every send another replica is running now (PostgreSQL; `digest run` on every
    replica calls this each DIGEST_SEND_JOIN_INTERVAL): the issue goes out as fast as all
    replicas together can send it, and a replica that dies leaves the others to finish.

    Only a send someone is running is joined — a `sending` issue with no live member is
    between two local-time zones, or was cut short and is resumed by its own rules — and with
    the same time zones as its crew, so a local-time tick's readers stay the only ones. A send
    this process (`pid`, default this one) is already part of is left to it.
    """
    owned = engine is None
    engine = db.make_engine(settings.database_url) if engine is None else engine
    me = os.getpid() if pid is None else pid
    results: list[WeeklyResult] = []
    try:
        if not shares_sends(engine) or (stop is not None and stop.is_set()):
            return []
        for issue in list_issues(engine, ["sending"]):
            crew = live_members(engine, issue.id, db.utcnow())
            if not crew or any(_is_this_process(m.lease.owner, me) for m in crew):
                continue
            log_event(_log, "send_joined", week=str(issue.week), members=len(crew))
            zones = crew[0].zones
            results.append(
                send_and_log(engine, settings, issue.week, stop, now=db.utcnow, zones=zones, force=True,
                      scheduled=True)
            )  # fmt: skip
    finally:
        if owned:
            engine.dispose()
    return results


def _is_this_process(owner: Owner | None, pid: int) -> bool:
    return owner is not None and owner.pid == pid and owner.host == socket.gethostname()
