"""/admin/login and /admin/logout: the only desk pages open without a session.

A failed login answers the same page, status and words whether the address is unknown or the
password wrong; failures are counted per account and per client address, and past
`desk_login_rate_limit` in 15 minutes every try (a right one too) gets the same 429 page.
"""

from __future__ import annotations

import math
import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from limits import RateLimitItemPerMinute
from starlette.concurrency import run_in_threadpool

from digest.campaign.editors import authenticate
from digest.config import Settings
from digest.store import audit, db
from digest.store.editors import create_session, delete_session
from digest.web.deps import EngineDep, SettingsDep
from digest.web.desk.session import (
    LOGIN_COOKIE,
    CsrfRefused,
    EditorDep,
    checked_form,
    clear_session_cookie,
    desk_root,
    login_nonce,
    login_token,
    login_token_ok,
    safe_next,
    session_cookie,
    set_login_cookie,
    set_session_cookie,
)
from digest.web.desk.views import desk_page
from digest.web.limits import FORM_LIMITS, GetAlsoHead
from digest.web.rate_limits import RateLimits

__all__ = ["router"]

router = APIRouter(route_class=GetAlsoHead, form_limits=FORM_LIMITS)

WRONG = "That email address and password do not match an editor account."
THROTTLED = "Too many failed logins. Wait 15 minutes and try again."
_WINDOW_MINUTES = 15


@router.get("/admin/login")
def login_page(request: Request, settings: SettingsDep) -> Response:
    return _login_form(request, settings, email="", next_path=request.query_params.get("next"))


@router.post("/admin/login")
async def login(request: Request, settings: SettingsDep, engine: EngineDep) -> Response:
    form = await request.form(**FORM_LIMITS)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not login_token_ok(settings, nonce, form.get("csrf_token")):
        raise CsrfRefused()
    email = _field(form.get("email"))[:320]
    password = _field(form.get("password"))
    next_path = form.get("next")
    keys = _throttle_keys(request, email)
    rate_limits: RateLimits = request.app.state.rate_limits
    limiter = rate_limits.login
    rate = _rate(settings)

    def throttled_until() -> float | None:
        if all(limiter.test(rate, key) for key in keys):
            return None
        return max(limiter.get_window_stats(rate, key).reset_time for key in keys)

    reset = await rate_limits.guarded(throttled_until, otherwise=None)
    if reset is not None:
        answer = _login_form(
            request, settings, email=email, next_path=next_path, error=THROTTLED, status_code=429
        )
        answer.headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
        return answer
    now = db.utcnow()
    editor = await run_in_threadpool(lambda: authenticate(engine, email, password, now=now))
    if editor is None:

        def count_failure() -> None:
            for key in keys:
                limiter.hit(rate, key)

        await rate_limits.guarded(count_failure, otherwise=None)
        return _login_form(
            request, settings, email=email, next_path=next_path, error=WRONG, status_code=401
        )

    def start() -> str:
        # A new id at every login: a session id planted before it (fixation) is never the one
        # that gets logged in, and the old session, if any, ends.
        old = session_cookie(request, settings)
        if old:
            delete_session(engine, old)
        audit.record(engine, actor=editor.email, action="editor.login", now=now)
        return create_session(engine, editor.id, now=now, max_age=settings.desk_session_max_age)

    session_id = await run_in_threadpool(start)
    answer = RedirectResponse(safe_next(request, next_path), status_code=303)
    set_session_cookie(answer, settings, request, session_id)
    answer.delete_cookie(LOGIN_COOKIE, path=desk_root(request))
    return answer


@router.post("/admin/logout")
async def logout(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    await checked_form(request, user)
    await run_in_threadpool(delete_session, engine, user.session_id)
    answer = RedirectResponse(f"{desk_root(request)}/login", status_code=303)
    clear_session_cookie(answer, settings, request)
    return answer


def _login_form(
    request: Request,
    settings: Settings,
    *,
    email: str,
    next_path: object,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    nonce, new = login_nonce(request)
    answer = desk_page(
        request,
        settings,
        None,
        "login",
        status_code=status_code,
        email=email,
        next=safe_next(request, next_path),
        login_token=login_token(settings, nonce),
        error=error,
    )
    if new:
        set_login_cookie(answer, settings, request, nonce)
    return answer


def _rate(settings: Settings) -> RateLimitItemPerMinute:
    return RateLimitItemPerMinute(settings.desk_login_rate_limit, _WINDOW_MINUTES)


def _throttle_keys(request: Request, email: str) -> tuple[str, str]:
    client = request.client.host if request.client else "unknown"
    return (f"desk-login:account:{email.strip().lower()}", f"desk-login:client:{client}")


def _field(value: object) -> str:
    return value if isinstance(value, str) else ""
