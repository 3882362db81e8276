"""The public pages: the home page (subscribe form, schedule and a sample issue), confirm and
unsubscribe links with "subscribe again" (the archive and the feeds have their own modules).

Safe against mail scanners and curious clients: no GET (or HEAD) changes anything, token links
answer with a button (POST), and subscribe answers the same whether or not an address is known.
The home page and its answers are in the newsletter's language; a page reached from a reader's
token link (confirm, unsubscribe, subscribe again) in that reader's (`views.reader_settings`).
"""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from limits import RateLimitItemPerMinute
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from digest.config import Settings
from digest.core import i18n, reader_times
from digest.core.i18n import N_, translations
from digest.core.tokens import BadToken
from digest.model.subscriber import InvalidSubscriber, Subscriber
from digest.readers import signup
from digest.readers.latest import LatestIssue, latest_issue
from digest.store import db
from digest.web.background import send_confirmation_later, send_welcome_later
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
from digest.web.views import (
    bad_link,
    message,
    page,
    reader_settings,
    refused_again,
    resubscribe_notice,
)

__all__ = ["router"]

# Every GET also answers HEAD; FastAPI counts each body as it arrives and stops at the limit
# `create_app` includes the router with (a 413 from its error pages).
router = APIRouter(route_class=GetAlsoHead, form_limits=FORM_LIMITS)

# What the pages say, looked up in the page's language where it is shown.
_CHECK_INBOX = N_(
    "Thanks! If this address is not subscribed yet, a confirmation link is on its way. "
    "Open it to start receiving the newsletter."
)
_CONFIRMED = N_("Your subscription is confirmed.")
_WELCOME_BACK = N_("Welcome back: your subscription is on again, as it was.")
_SUBSCRIBED = N_("You are subscribed")
_SUBSCRIBED_AGAIN = N_("You are subscribed again")
_CHECK_INBOX_HEADING = N_("Check your inbox")
# A reason of the bad-link page (views.bad_link has its sentence), as signup.confirm says it.
_CANCELLED = (
    "this subscription was cancelled after the link was sent; subscribe again to get a new link"
)
_TOO_MANY = N_("Too many subscribe requests from your network; try again in a minute.")


@router.get("/", response_class=HTMLResponse)
def subscribe_form(request: Request, settings: SettingsDep, engine: EngineDep) -> Response:
    latest = latest_issue(engine, settings)
    return _subscribe_page(request, settings, latest, email="", name="", error=None)


def _subscribe_page(
    request: Request, settings: Settings, latest: LatestIssue | None, **form: str | None
) -> Response:
    """The home page: the form (with what was typed, and why it was refused), the schedule in
    words, and the latest issue as a sample of what arrives (None: none, or not looked up)."""
    schedule = reader_times.schedule_words(settings, db.utcnow())
    return page(request, settings, "subscribe", schedule=schedule, latest=latest, **form)


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
                language=i18n.accepted_locale(request.headers.get("accept-language")),
            )
        )
    except InvalidSubscriber as exc:
        text = invalid_message(exc, settings.locale)
        if wants_json:
            return JSONResponse({"error": text, "field": exc.field}, status_code=422)
        latest = await run_in_threadpool(latest_issue, engine, settings)
        answer = _subscribe_page(
            request,
            settings,
            latest,
            email=printable(fields["email"]),
            name=printable(fields["name"]),
            error=text,
        )
        answer.status_code = 422
        return answer
    # Sent after the answer has gone out, so how long a send takes (or whether one happens
    # at all) cannot be read off the response time.
    background.add_task(send_confirmation_later, engine, settings, result)
    gettext = translations(settings.locale).gettext
    if wants_json:
        return JSONResponse({"status": "ok", "message": gettext(_CHECK_INBOX)})
    return message(request, settings, gettext(_CHECK_INBOX_HEADING), gettext(_CHECK_INBOX))


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
    too_many = translations(settings.locale).gettext(_TOO_MANY)
    if wants_json:
        return JSONResponse({"error": too_many}, status_code=429, headers=headers)
    # No sample: a client refused for asking too often costs no database read.
    answer = _subscribe_page(request, settings, None, email="", name="", error=too_many)
    answer.status_code = 429
    answer.headers.update(headers)
    return answer


_ConfirmReader = Annotated[Subscriber | None, Depends(token_reader("confirm"))]
_UnsubscribeReader = Annotated[Subscriber | None, Depends(token_reader("unsubscribe"))]


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(
    request: Request, settings: SettingsDep, engine: EngineDep, found: _ConfirmReader
) -> Response:
    if found is None:
        return bad_link(request, settings, "this link is not valid")
    if found.status == "active":
        return _subscribed(request, settings, engine, found, _SUBSCRIBED, _CONFIRMED)
    if found.status != "pending":
        return bad_link(request, settings, _CANCELLED)
    return page(request, reader_settings(settings, found), "confirm")


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
        background.add_task(send_welcome_later, engine, settings, found.id, now)
    return _subscribed(request, settings, engine, found, _SUBSCRIBED, _CONFIRMED)


def _subscribed(
    request: Request,
    settings: Settings,
    engine: Engine,
    reader: Subscriber,
    heading: str,
    text: str,
) -> Response:
    """The page after (re)joining, in the reader's language (`heading` and `text` are looked up
    in it): when issues arrive for this reader, and something to read now: the latest issue,
    the archive and the glossary."""
    settings = reader_settings(settings, reader)
    gettext = translations(settings.locale).gettext
    return page(
        request,
        settings,
        "subscribed",
        heading=gettext(heading),
        message=gettext(text),
        delivery=reader_times.delivery_time(settings, reader.timezone, db.utcnow()),
        latest=latest_issue(engine, settings),
    )


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(
    request: Request, token: str, settings: SettingsDep, found: _UnsubscribeReader
) -> Response:
    if found is None or found.status not in ("pending", "active"):
        return _unsubscribed(request, settings, token, found)
    return page(request, reader_settings(settings, found), "unsubscribe", address=mask(found.email))


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe(request: Request, token: str, settings: SettingsDep, engine: EngineDep) -> Response:
    # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" (or nothing) and
    # expect 200 with no further step, so the body is not even read.
    try:
        gone = signup.unsubscribe(engine, settings, token, now=db.utcnow())
    except BadToken as exc:
        return bad_link(request, settings, str(exc))
    return _unsubscribed(request, settings, token, gone)


def _unsubscribed(
    request: Request, settings: Settings, token: str, reader: Subscriber | None
) -> Response:
    """The page saying so, with a "subscribe again" button for whoever left by themselves (not
    for an erased address, nor one the mail provider reported bounced or complained)."""
    again = None
    if reader is not None and reader.status == "unsubscribed":
        again = {
            "action": f"{_root(request)}/unsubscribe/{token}/resubscribe",
            "at_once": signup.undo_possible(reader, db.utcnow()),
            "address": mask(reader.email),
        }
    return page(
        request,
        reader_settings(settings, reader),
        "unsubscribed",
        again=again,
        # An erased address may sign up anew; a bounced or complained one the form leaves be.
        form_works=reader is None,
    )


@router.post("/unsubscribe/{token}/resubscribe", response_class=HTMLResponse)
def resubscribe(
    request: Request,
    token: str,
    background: BackgroundTasks,
    settings: SettingsDep,
    engine: EngineDep,
    found: _UnsubscribeReader,
) -> Response:
    """Subscribe again with one click on the unsubscribed page: a POST to the same signed link,
    so neither a scanner's GET nor another site (which cannot know the token) can do it."""
    try:
        result = signup.resubscribe(engine, settings, found, now=db.utcnow(), send=False)
    except signup.NotResubscribable as exc:
        return refused_again(request, reader_settings(settings, found), exc)
    if result.subscriber.status == "active":
        return _subscribed(
            request, settings, engine, result.subscriber, _SUBSCRIBED_AGAIN, _WELCOME_BACK
        )
    background.add_task(send_confirmation_later, engine, settings, result)
    shown = reader_settings(settings, result.subscriber)
    heading = translations(shown.locale).gettext(_CHECK_INBOX_HEADING)
    text = resubscribe_notice(shown, result)
    return page(request, shown, "message", heading=heading, message=text, error=False)


def _root(request: Request) -> str:
    # From the root, not relative: the page is shown at /unsubscribe/<token> and below it.
    return str(request.scope.get("root_path", ""))
