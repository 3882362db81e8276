"""/admin/queue: the editors' queue — add a term, pin one to a week, move up and down, remove —
with the CLI's rules and messages (store.queue's QueueError), each change in the audit log.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from digest.campaign.plan import usable_glossary
from digest.config import Settings
from digest.model.weeks import IsoWeek, current_week, parse_week
from digest.store import audit, db
from digest.store.queue import (
    AlreadyFeatured,
    QueueError,
    add_to_queue,
    list_queue,
    move_in_queue,
    pin,
    remove_from_queue,
)
from digest.web.deps import EngineDep, SettingsDep
from digest.web.desk.session import DeskUser, EditorDep, checked_form
from digest.web.desk.views import coming, desk_page
from digest.web.limits import FORM_LIMITS, GetAlsoHead

__all__ = ["router"]

router = APIRouter(route_class=GetAlsoHead, form_limits=FORM_LIMITS)

_PLAN_WEEKS = 8


@router.get("/admin/queue")
def queue_page(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    return _page(request, settings, engine, user)


@router.post("/admin/queue")
async def queue_add(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    form = await checked_form(request, user)

    def add() -> str:
        glossary, _ = usable_glossary(settings)
        week = _week(form, "week")
        now = db.utcnow()
        entry = add_to_queue(
            engine,
            glossary,
            _text(form, "slug"),
            week=week,
            note=_text(form, "note") or None,
            force=form.get("force") == "yes",
            this_week=current_week(now, settings.zone),
            now=now,
        )
        detail = f"position {entry.position}" + (f", pinned to {entry.week}" if entry.week else "")
        audit.record(
            engine, actor=user.editor.email, action="queue.add", target=entry.slug,
            detail=detail, now=now,
        )  # fmt: skip
        pinned = f", pinned to {entry.week}" if entry.week else ""
        return f"Queued {entry.slug} at position {entry.position}{pinned}."

    return await _change(request, settings, engine, user, add)


@router.post("/admin/queue/pin")
async def queue_pin(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    form = await checked_form(request, user)

    def do_pin() -> str:
        week = _week(form, "week")
        if week is None:
            raise QueueError("give the week to pin it to, e.g. 2026-W50")
        now = db.utcnow()
        glossary, _ = usable_glossary(settings)
        entry = pin(
            engine,
            glossary,
            _text(form, "slug"),
            week,
            this_week=current_week(now, settings.zone),
            force=form.get("force") == "yes",
            now=now,
        )
        audit.record(
            engine, actor=user.editor.email, action="queue.pin", target=entry.slug,
            detail=str(week), now=now,
        )  # fmt: skip
        return f"Pinned {entry.slug} to {week}."

    return await _change(request, settings, engine, user, do_pin)


@router.post("/admin/queue/move")
async def queue_move(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    form = await checked_form(request, user)

    def move() -> str:
        slug = _text(form, "slug")
        entries = {e.slug: e for e in list_queue(engine)}
        if slug not in entries:
            raise QueueError(f"{slug!r} is not in the queue")
        step = {"up": -1, "down": 1}.get(_text(form, "direction"))
        if step is None:
            raise QueueError("move it up or down")
        entry = move_in_queue(engine, slug, entries[slug].position + step)
        audit.record(
            engine, actor=user.editor.email, action="queue.move", target=entry.slug,
            detail=f"position {entry.position}", now=db.utcnow(),
        )  # fmt: skip
        return f"Moved {entry.slug} to position {entry.position}."

    return await _change(request, settings, engine, user, move)


@router.post("/admin/queue/remove")
async def queue_remove(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    form = await checked_form(request, user)

    def remove() -> str:
        entry = remove_from_queue(engine, _text(form, "slug"))
        audit.record(
            engine, actor=user.editor.email, action="queue.remove", target=entry.slug,
            now=db.utcnow(),
        )  # fmt: skip
        return f"Removed {entry.slug} from the queue."

    return await _change(request, settings, engine, user, remove)


async def _change(
    request: Request,
    settings: Settings,
    engine: Engine,
    user: DeskUser,
    change: Callable[[], str],
) -> Response:
    """Run one queue change in a worker thread; the page again, with its notice or its refusal."""
    try:
        notice = await run_in_threadpool(change)
    except AlreadyFeatured as exc:
        error = f"{exc}; tick “Feature it again” to queue it anyway."
        return _page(request, settings, engine, user, error=error, status_code=409)
    except (QueueError, ValueError) as exc:
        return _page(request, settings, engine, user, error=_sentence(str(exc)), status_code=422)
    return await run_in_threadpool(lambda: _page(request, settings, engine, user, notice=notice))


def _page(
    request: Request,
    settings: Settings,
    engine: Engine,
    user: DeskUser,
    *,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    now = db.utcnow()
    glossary, _ = usable_glossary(settings)
    entries = list_queue(engine)
    titles = {term.slug: term.title for term in glossary}
    return desk_page(
        request,
        settings,
        user,
        "queue",
        status_code=status_code,
        entries=entries,
        titles=titles,
        terms=sorted(glossary, key=lambda t: t.title.casefold()),
        plan=coming(engine, settings, start=None, weeks=_PLAN_WEEKS),
        this_week=current_week(now, settings.zone),
        notice=notice,
        error=error,
    )


def _text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _week(form: FormData, key: str) -> IsoWeek | None:
    text = _text(form, key)
    return parse_week(text) if text else None


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
