"""The preference centre: /preferences/{token}, the page (GET, changes nothing) and one POST each
(name and time zone, pause, tracking, subscribe again, unsubscribe, my data).

The signed token is the only key: it never expires and works only while it names the
subscriber's current address, so a link in an old mail stays theirs alone. Every page here is in
the reader's language (their choice, else the newsletter's: `views.reader_settings`).
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from digest.config import Settings
from digest.core import i18n, reader_times, zones
from digest.core.i18n import N_, translations
from digest.model.subscriber import InvalidSubscriber, Subscriber
from digest.readers import preferences, signup
from digest.store import db
from digest.web.background import send_confirmation_later
from digest.web.deps import EngineDep, SettingsDep, token_reader
from digest.web.forms import invalid_message, invalid_reason, mask, storable_text
from digest.web.limits import FORM_LIMITS, GetAlsoHead
from digest.web.views import (
    BadLink,
    bad_link,
    message,
    page,
    reader_settings,
    refusal_text,
    resubscribe_notice,
)

__all__ = ["router"]

router = APIRouter(route_class=GetAlsoHead, form_limits=FORM_LIMITS)

# What the pages say, looked up in the reader's language where it is shown.
_ERASED = N_(
    "Everything we kept about you is deleted, and nothing more is sent to this address. "
    "Thanks for reading."
)
_ERASED_HEADING = N_("Your data is erased")

_SAVED = N_("Saved: your name and time zone.")  # the summary above the form says when issues come
_UNSUBSCRIBED = N_("Unsubscribed: this address will get no more issues.")
_WELCOME_BACK = N_("Welcome back: your subscription is on again, as it was.")
_RESUMED = N_("Resumed: the next issue comes as usual.")

# The form's two values and what the page says after each.
_TRACKING_CHOICES = {
    "refuse": N_("Saved: your mails from now on carry no tracking."),
    "allow": N_("Saved: your mails may be counted again, as described below."),
}


async def _reader(  # async: no I/O of its own, so no trip to a worker thread
    found: Annotated[Subscriber | None, Depends(token_reader("preferences"))],
) -> Subscriber:
    if found is None:
        raise BadLink("this link is not valid")
    return found


_Reader = Annotated[Subscriber, Depends(_reader)]


@router.get("/preferences/{token}", response_class=HTMLResponse)
def preferences_page(
    request: Request, token: str, settings: SettingsDep, found: _Reader
) -> Response:
    return _preferences(request, settings, token, found)


@router.post("/preferences/{token}", response_class=HTMLResponse)
def preferences_save(
    request: Request,
    token: str,
    settings: SettingsDep,
    engine: EngineDep,
    found: _Reader,
    name: Annotated[str, Form()] = "",
    timezone: Annotated[str, Form()] = "",
) -> Response:
    now = db.utcnow()
    try:
        saved = preferences.update_profile(
            engine,
            found.id,
            name=storable_text("name", name),
            timezone=storable_text("timezone", timezone),
            now=now,
        )
    except InvalidSubscriber as exc:
        error = invalid_message(exc, reader_settings(settings, found).locale)
        return _preferences(request, settings, token, found, error=error)
    return _preferences(request, settings, token, saved, notice=_text(settings, saved, _SAVED))


@router.post("/preferences/{token}/pause", response_class=HTMLResponse)
def preferences_pause(
    request: Request,
    token: str,
    settings: SettingsDep,
    engine: EngineDep,
    found: _Reader,
    weeks: Annotated[str, Form()] = "",
) -> Response:
    now = db.utcnow()
    try:
        # isdigit() alone takes "²" (int() then raises) and 5,000-digit numbers (int() refuses
        # those too): both were 500s. Anything else is 0, which pause() refuses clearly.
        text = weeks.strip()
        count = int(text) if text.isascii() and text.isdigit() and len(text) <= 4 else 0
        paused = preferences.pause(engine, found.id, count, now=now)
    except InvalidSubscriber as exc:
        error = invalid_reason(exc, reader_settings(settings, found).locale)
        return _preferences(request, settings, token, found, error=error)
    shown = reader_settings(settings, paused)
    until = reader_times.pause_end(shown, paused, now)
    notice = translations(shown.locale).gettext(
        "Paused: no issues until %(until)s. You can resume any time."
    ) % {"until": until}
    return _preferences(request, settings, token, paused, notice=notice)


@router.post("/preferences/{token}/resume", response_class=HTMLResponse)
def preferences_resume(
    request: Request, token: str, settings: SettingsDep, engine: EngineDep, found: _Reader
) -> Response:
    resumed = preferences.resume(engine, found.id, now=db.utcnow())
    notice = _text(settings, resumed, _RESUMED)
    return _preferences(request, settings, token, resumed, notice=notice)


@router.post("/preferences/{token}/tracking", response_class=HTMLResponse)
def preferences_tracking(
    request: Request,
    token: str,
    settings: SettingsDep,
    engine: EngineDep,
    found: _Reader,
    tracking: Annotated[str, Form()] = "",
) -> Response:
    if tracking not in _TRACKING_CHOICES:
        error = _text(
            settings, found, N_("Choose whether your mails may be counted (allow or refuse).")
        )
        return _preferences(request, settings, token, found, error=error)
    allow = tracking == "allow"
    saved = preferences.set_tracking(engine, found.id, allow=allow, now=db.utcnow())
    notice = _text(settings, saved, _TRACKING_CHOICES[tracking])
    return _preferences(request, settings, token, saved, notice=notice)


@router.post("/preferences/{token}/language", response_class=HTMLResponse)
def preferences_language(
    request: Request,
    token: str,
    settings: SettingsDep,
    engine: EngineDep,
    found: _Reader,
    language: Annotated[str, Form()] = "",
) -> Response:
    try:
        saved = preferences.choose_language(engine, found.id, language, now=db.utcnow())
    except InvalidSubscriber as exc:
        error = invalid_message(exc, reader_settings(settings, found).locale)
        return _preferences(request, settings, token, found, error=error)
    names = dict(i18n.locale_choices())
    # Said, as the whole page is, in the language just chosen.
    notice = translations(reader_settings(settings, saved).locale).gettext(
        "Saved: the next issues come in %(language)s."
    ) % {"language": names[saved.language or settings.locale]}
    return _preferences(request, settings, token, saved, notice=notice)


@router.post("/preferences/{token}/unsubscribe", response_class=HTMLResponse)
def preferences_unsubscribe(
    request: Request, token: str, settings: SettingsDep, engine: EngineDep, found: _Reader
) -> Response:
    gone = preferences.unsubscribe(engine, found.id, now=db.utcnow())
    notice = _text(settings, gone or found, _UNSUBSCRIBED)
    return _preferences(request, settings, token, gone or found, notice=notice)


@router.post("/preferences/{token}/resubscribe", response_class=HTMLResponse)
def preferences_resubscribe(
    request: Request,
    token: str,
    background: BackgroundTasks,
    settings: SettingsDep,
    engine: EngineDep,
    found: _Reader,
) -> Response:
    try:
        result = signup.resubscribe(engine, settings, found, now=db.utcnow(), send=False)
    except signup.NotResubscribable as exc:
        error = refusal_text(reader_settings(settings, found), exc)
        return _preferences(request, settings, token, found, error=error)
    if result.subscriber.status == "active":
        notice = _text(settings, result.subscriber, _WELCOME_BACK)
    else:  # a new double opt-in: the confirmation mail goes out after the answer
        background.add_task(send_confirmation_later, engine, settings, result)
        notice = resubscribe_notice(reader_settings(settings, result.subscriber), result)
    return _preferences(request, settings, token, result.subscriber, notice=notice)


@router.post("/preferences/{token}/export")
def preferences_export(
    request: Request, settings: SettingsDep, engine: EngineDep, found: _Reader
) -> Response:
    data = preferences.export_data(engine, found.id)
    if data is None:
        return bad_link(request, settings, "this link is not valid")
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False) + "\n",
        media_type="application/json",
        headers={
            "Content-Disposition": 'attachment; filename="my-digest-data.json"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/preferences/{token}/erase", response_class=HTMLResponse)
def preferences_erase(
    request: Request,
    token: str,
    settings: SettingsDep,
    engine: EngineDep,
    found: _Reader,
    confirm: Annotated[str, Form()] = "",
) -> Response:
    if confirm != "yes":  # the first press only asks: erasing cannot be undone
        return page(
            request,
            reader_settings(settings, found),
            "preferences_erase",
            address=mask(found.email),
            action=_action(request, token),
        )
    shown = reader_settings(settings, found)  # their language, read before the row goes
    preferences.erase_data(engine, found.id)
    gettext = translations(shown.locale).gettext
    return message(request, shown, gettext(_ERASED_HEADING), gettext(_ERASED))


def _text(settings: Settings, reader: Subscriber, text: str) -> str:
    """`text` (a string marked with `N_`) in `reader`'s language."""
    return translations(reader_settings(settings, reader).locale).gettext(text)


def _action(request: Request, token: str) -> str:
    # From the root, not relative: the page is also shown at /preferences/<token>/pause etc.
    return f"{request.scope.get('root_path', '')}/preferences/{token}"


def _preferences(
    request: Request,
    settings: Settings,
    token: str,
    subscriber: Subscriber,
    *,
    notice: str | None = None,
    error: str | None = None,
) -> HTMLResponse:
    now = db.utcnow()
    newsletter_locale = settings.locale
    settings = reader_settings(settings, subscriber)  # the page, its dates and zones, in theirs
    # A legacy name (`Asia/Calcutta`, from an import or an older browser) shows as the zone it
    # means; one the picker does not offer at all (`EST5EDT`) is shown as it is, selected.
    zone = zones.canonical_zone(subscriber.timezone) if subscriber.timezone else ""
    offered = zones.canonical_zones()
    answer = page(
        request,
        settings,
        "preferences",
        subscriber=subscriber,
        address=mask(subscriber.email),
        name=subscriber.name or "",
        timezone=zone,
        zone_groups=zones.zone_groups(settings.locale),
        other_zone=zone if zone and zone not in offered else None,
        zone_aliases=zones.browser_aliases(),
        default_zone=settings.timezone,
        delivery=reader_times.delivery_time(settings, subscriber.timezone, now),
        paused_until=reader_times.pause_end(settings, subscriber, now),
        max_pause=preferences.MAX_PAUSE_WEEKS,
        undo_possible=signup.undo_possible(subscriber, now),
        # The language picker: each language in its own name (digest.core.i18n).
        languages=i18n.locale_choices(),
        reader_language=subscriber.language or "",
        default_language=dict(i18n.locale_choices())[newsletter_locale],
        action=_action(request, token),
        notice=notice,
        error=error,
    )
    if error:
        answer.status_code = 422
    return answer
