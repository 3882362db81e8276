"""The public pages: subscribe form, confirm and unsubscribe links (archive, feeds: own modules).

Safe against mail scanners and curious clients: no GET (or HEAD) changes anything, token links
answer with a button (POST), and subscribe answers the same whether or not an address is known.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from limits import RateLimitItemPerMinute
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from digest.config import Settings
from digest.core.tokens import BadToken
from digest.model.subscriber import InvalidSubscriber, Subscriber
from digest.readers import preferences, signup
from digest.store import db
from digest.web.deps import EngineDep, SettingsDep, token_reader
from digest.web.forms import (
    form_fields,
    invalid_message,
    is_json,
    json_fields,
    mask,
    printable,
    storable_text,
)
from digest.web.limits import FORM_LIMITS, GetAlsoHead
from digest.web.rate_limits import RateLimits
from digest.web.views import UNSUBSCRIBED, bad_link, message, page

__all__ = ["router"]

log = logging.getLogger(__name__)

# Every GET also answers HEAD; FastAPI counts each body as it arrives and stops at the limit
# `create_app` includes the router with (a 413 from its error pages).
router = APIRouter(route_class=GetAlsoHead, form_limits=FORM_LIMITS)

_CHECK_INBOX = (
    "Thanks! If this address is not subscribed yet, a confirmation link is on its way. "
    "Open it to start receiving the newsletter."
)
_CONFIRMED = "Your subscription is confirmed. The next issue will arrive in your inbox."
_CANCELLED = (
    "this subscription was cancelled after the link was sent; subscribe again to get a new link"
)
_TOO_MANY = "Too many subscribe requests from your network; try again in a minute."


@router.get("/", response_class=HTMLResponse)
def subscribe_form(request: Request, settings: SettingsDep) -> Response:
    return page(request, settings, "subscribe", email="", name="", error=None)


@router.post("/subscribe")
async def subscribe(
    request: Request, background: BackgroundTasks, settings: SettingsDep, engine: EngineDep
) -> Response:
    wants_json = is_json(request)
    refused = await _rate_limited(request, settings, wants_json)
    if refused is not None:
        return refused
    try:
        fields = await (json_fields(request) if wants_json else form_fields(request))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    try:
        fields = {key: storable_text(key, value) for key, value in fields.items()}
        result = await run_in_threadpool(
            lambda: signup.subscribe(
                engine,
                settings,
                fields["email"],
                name=fields["name"],
                timezone=fields["timezone"],
                source="web",
                now=db.utcnow(),
                send=False,
            )
        )
    except InvalidSubscriber as exc:
        text = invalid_message(exc)
        if wants_json:
            return JSONResponse({"error": text, "field": exc.field}, status_code=422)
        answer = page(
            request,
            settings,
            "subscribe",
            email=printable(fields["email"]),
            name=printable(fields["name"]),
            error=text,
        )
        answer.status_code = 422
        return answer
    # Sent after the answer has gone out, so how long a send takes (or whether one happens
    # at all) cannot be read off the response time.
    background.add_task(_send_confirmation, engine, settings, result)
    if wants_json:
        return JSONResponse({"status": "ok", "message": _CHECK_INBOX})
    return message(request, settings, "Check your inbox", _CHECK_INBOX)


async def _rate_limited(request: Request, settings: Settings, wants_json: bool) -> Response | None:
    """The 429 answer when this client has subscribed too often this minute, else None.

    Counted per app, in this process's memory or, with `DIGEST_REDIS_URL`, in Redis for every
    replica at once; while Redis is down `RateLimits.guarded` decides (uncounted, or 503).
    """
    if settings.subscribe_rate_limit <= 0:
        return None
    rate = RateLimitItemPerMinute(settings.subscribe_rate_limit)
    rate_limits: RateLimits = request.app.state.rate_limits
    limiter = rate_limits.subscribe
    client = request.client.host if request.client else "unknown"

    def refused_until() -> float | None:
        if limiter.hit(rate, "subscribe", client):
            return None
        return limiter.get_window_stats(rate, "subscribe", client).reset_time

    reset = await rate_limits.guarded(refused_until, otherwise=None)
    if reset is None:
        return None
    headers = {"Retry-After": str(max(1, math.ceil(reset - time.time())))}
    if wants_json:
        return JSONResponse({"error": _TOO_MANY}, status_code=429, headers=headers)
    answer = page(request, settings, "subscribe", email="", name="", error=_TOO_MANY)
    answer.status_code = 429
    answer.headers.update(headers)
    return answer


_ConfirmReader = Annotated[Subscriber | None, Depends(token_reader("confirm"))]
_UnsubscribeReader = Annotated[Subscriber | None, Depends(token_reader("unsubscribe"))]


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(request: Request, settings: SettingsDep, found: _ConfirmReader) -> Response:
    if found is None:
        return bad_link(request, settings, "this link is not valid")
    if found.status == "active":
        return message(request, settings, "You are subscribed", _CONFIRMED)
    if found.status != "pending":
        return bad_link(request, settings, _CANCELLED)
    return page(request, settings, "confirm")


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(
    request: Request,
    token: str,
    background: BackgroundTasks,
    settings: SettingsDep,
    engine: EngineDep,
) -> Response:
    now = db.utcnow()
    try:
        found = signup.confirm(engine, settings, token, now=now)
    except BadToken as exc:
        return bad_link(request, settings, str(exc))
    # confirmed_at is this request's `now` only for the request that activated the
    # subscription: pressing the button again (or a racing second press) welcomes no one.
    if found.confirmed_at == now:
        background.add_task(_send_welcome, engine, settings, found.id, now)
    return message(request, settings, "You are subscribed", _CONFIRMED)


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(
    request: Request, settings: SettingsDep, found: _UnsubscribeReader
) -> Response:
    if found is None or found.status not in ("pending", "active"):
        return message(request, settings, "You are unsubscribed", UNSUBSCRIBED)
    return page(request, settings, "unsubscribe", address=mask(found.email))


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe(request: Request, token: str, settings: SettingsDep, engine: EngineDep) -> Response:
    # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" (or nothing) and
    # expect 200 with no further step, so the body is not even read.
    try:
        signup.unsubscribe(engine, settings, token, now=db.utcnow())
    except BadToken as exc:
        return bad_link(request, settings, str(exc))
    return message(request, settings, "You are unsubscribed", UNSUBSCRIBED)


async def _send_confirmation(
    engine: Engine, settings: Settings, subscription: signup.Subscription
) -> None:
    """Send the confirmation mail, after the answer.

    The outbox writes one small file (no fsync), which costs less on the event loop than the
    hop to a worker thread and back did; a provider's HTTP request, and giving back the claim
    (a database write) when sending failed, go to a thread.
    """
    try:
        if settings.transport == "outbox":
            try:
                signup.send_confirmation(engine, settings, subscription, release=False)
            except Exception:
                await run_in_threadpool(signup.release_confirmation, engine, subscription)
                raise
        else:
            await run_in_threadpool(signup.send_confirmation, engine, settings, subscription)
    except Exception as exc:  # after the answer: nothing to tell the person, so tell the log
        # They saw "check your inbox"; the resend slot is freed, so submitting again retries.
        log.error("confirmation mail not sent: %s: %s", type(exc).__name__, exc)


def _send_welcome(engine: Engine, settings: Settings, subscriber_id: int, now: datetime) -> None:
    try:
        preferences.send_welcome(engine, settings, subscriber_id, now)
    except Exception as exc:  # after the answer, like the confirmation mail: tell the log
        log.error("welcome mail not sent: %s: %s", type(exc).__name__, exc)
