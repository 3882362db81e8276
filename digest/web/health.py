"""/healthz and /readyz: whether this process is up, and whether it can serve requests now.

/healthz touches nothing, so a database or Redis outage never gets a healthy process
restarted; /readyz checks what a request needs (database, schema at this code's head, Redis
when configured), so a replica that cannot serve is taken out of the rotation instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from digest.store import db
from digest.web.deps import EngineDep, SettingsDep
from digest.web.limits import GetAlsoHead
from digest.web.rate_limits import RateLimits

__all__ = ["CHECK_TIMEOUT", "router"]

router = APIRouter(route_class=GetAlsoHead)

# Seconds /readyz waits for a check; the checks run side by side, so this is its longest answer.
CHECK_TIMEOUT = 2.0
# A probe's answer is about this moment: never from a cache between the prober and us.
_NO_STORE = {"Cache-Control": "no-store"}
Checks = dict[str, str]


@router.get("/healthz")
async def healthz() -> Response:
    return JSONResponse({"status": "ok"}, headers=_NO_STORE)


@router.get("/readyz")
async def readyz(request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    rate_limits: RateLimits = request.app.state.rate_limits
    database = _bounded(
        request.app, "database", lambda: _database_checks(engine), timeout=CHECK_TIMEOUT
    )
    if settings.redis_url is None:
        found = await database
        found["redis"] = "not configured"
    else:
        redis = _bounded(request.app, "redis", lambda: _redis_check(rate_limits), CHECK_TIMEOUT)
        found, redis_found = await asyncio.gather(database, redis)
        found.update(redis_found)
    ready = all(value in ("ok", "not configured") for value in found.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": found},
        status_code=200 if ready else 503,
        headers=_NO_STORE,
    )


async def _bounded(app: FastAPI, name: str, check: Callable[[], Checks], timeout: float) -> Checks:
    """`check()` in a worker thread, or "timeout" for each of its names after `timeout` seconds.

    A thread cannot be stopped: one that hangs (a database that accepts no connection and sends
    no refusal) is left to finish, and probes meanwhile wait on that same check rather than
    starting another, so a probe every second cannot pile up threads.
    """
    running: dict[str, asyncio.Task[Checks]] | None = getattr(app.state, "readiness", None)
    if running is None:
        running = app.state.readiness = {}
    task = running.get(name)
    if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
        task = running[name] = asyncio.ensure_future(run_in_threadpool(check))
    try:
        return dict(await asyncio.wait_for(asyncio.shield(task), timeout))
    except TimeoutError:
        names = ("database", "migrations") if name == "database" else (name,)
        return dict.fromkeys(names, "timeout")


def _database_checks(engine: Engine) -> Checks:
    """The database answers `SELECT 1`, and its schema is the one this code was written for."""
    try:
        answers = db.ping(engine)
        stored = db.stored_revisions(engine)
    except Exception:  # any driver error means "unreachable"; no URL or trace in the answer
        answers = False
    if not answers:
        return {"database": "unreachable", "migrations": "not checked"}
    if stored == [db.HEAD_REVISION]:
        return {"database": "ok", "migrations": "ok"}
    return {
        "database": "ok",
        "migrations": f"at {', '.join(stored) or 'none'}, this code needs {db.HEAD_REVISION}",
    }


def _redis_check(rate_limits: RateLimits) -> Checks:
    return {"redis": "ok" if rate_limits.ping() else "unreachable"}
