"""The web service's rate limits (sign-ups, the desk's failed logins) and where they count.

With `DIGEST_REDIS_URL` every replica counts in the same Redis, so N replicas allow the limit
once, not N times; without it each process counts in memory. What a request gets while Redis
does not answer is `DIGEST_REDIS_FAILURE`'s choice, made in one place: `RateLimits.guarded`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.concurrency import run_in_threadpool

from digest.config import Settings
from digest.core.i18n import N_, translations
from digest.logs import get_logger, log_event

__all__ = ["KEY_PREFIX", "RateLimits", "RateLimitsUnavailable", "install_rate_limits"]

log = get_logger(__name__)

T = TypeVar("T")

# Every key digest writes starts "digest:"; two newsletters sharing one Redis server each take
# their own database number in the URL (redis://host:6379/1), as the limits keys name no site.
KEY_PREFIX = "digest"
# Seconds a connect and a command may take. A refused connection fails at once; these bound a
# Redis that hangs (or a lost route): one retry on a fresh connection (a pooled one may have died
# with a restarted server) keeps a request's worst wait near half a second.
REDIS_TIMEOUT = 0.2
_UNAVAILABLE = N_("Sign-ups and logins are briefly unavailable; please try again in a moment.")
_RETRY_AFTER = "10"


class RateLimitsUnavailable(Exception):
    """The shared counters did not answer and `DIGEST_REDIS_FAILURE` is "closed": answer 503."""


def make_storage(settings: Settings) -> Storage:
    """Redis when `DIGEST_REDIS_URL` is set (shared by every replica), else this process's memory.

    `wrap_exceptions` makes every Redis error, whichever command or strategy raised it, one
    `limits.errors.StorageError`. Nothing connects here: a Redis that is down when the app
    starts is met by the first request, as one that goes down later is.
    """
    if settings.redis_url is None:
        return MemoryStorage()
    return RedisStorage(
        settings.redis_url.get_secret_value(),
        key_prefix=KEY_PREFIX,
        wrap_exceptions=True,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        # Passed on to redis.Redis, which takes it; limits types its options as scalars.
        retry=Retry(NoBackoff(), 1),  # type: ignore[arg-type]
    )


class RateLimits:
    """The app's limiters on one storage, and what a request gets when that storage fails.

    Sign-ups use the sliding-window counter (two counters per client and minute, O(1) a hit);
    the desk's login the moving window (exact over its 15 minutes, and failed logins are few).
    """

    def __init__(self, settings: Settings) -> None:
        self.storage = make_storage(settings)
        self.subscribe = SlidingWindowCounterRateLimiter(self.storage)
        self.login = MovingWindowRateLimiter(self.storage)
        self.fail_open = settings.redis_failure == "open"
        # A network round trip goes to a worker thread, so a Redis that hangs holds a thread
        # for its timeout, never the event loop; memory answers in microseconds, in the loop
        # (the hop to a thread and back would cost sign-ups more than the count itself).
        self._remote = not isinstance(self.storage, MemoryStorage)
        self._down = False

    async def guarded(self, check: Callable[[], T], *, otherwise: T) -> T:
        """`check()` (the limiter calls of one request), or `otherwise` while Redis is down.

        Fail open (the default) lets the request through uncounted: a Redis outage must not
        stop sign-ups and editors, and each process still has the database's own rules (one
        confirmation mail per address an hour). Fail closed raises `RateLimitsUnavailable`.
        The outage is logged when it starts and when it ends, not at every request.
        """
        try:
            answer = await run_in_threadpool(check) if self._remote else check()
        except StorageError as exc:
            if not self._down:
                self._down = True
                log_event(
                    log,
                    "rate_limits_redis_unreachable",
                    level=logging.WARNING,
                    error=type(exc.storage_error).__name__,
                    failure="open" if self.fail_open else "closed",
                )
            if self.fail_open:
                return otherwise
            raise RateLimitsUnavailable() from exc
        if self._down:
            self._down = False
            log_event(log, "rate_limits_redis_recovered")
        return answer

    def ping(self) -> bool:
        """Whether the storage answers (Redis PING; memory always does). Blocking: call in a
        thread."""
        return bool(self.storage.check())


def install_rate_limits(app: FastAPI, settings: Settings) -> None:
    """Put the app's `RateLimits` on `app.state` (per app, so each test counts on its own) and
    answer `RateLimitsUnavailable` with a short 503."""
    app.state.rate_limits = RateLimits(settings)

    @app.exception_handler(RateLimitsUnavailable)
    async def unavailable(request: Request, exc: RateLimitsUnavailable) -> Response:
        text = translations(settings.locale).gettext(_UNAVAILABLE)
        return PlainTextResponse(text, status_code=503, headers={"Retry-After": _RETRY_AFTER})
