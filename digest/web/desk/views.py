"""How the desk answers: its pages (templates/desk/), the 303 to the login page, the 403s, and
the coming weeks several pages show.

Every desk page goes through `desk_page`, so each carries the editor, their CSRF token and the
sliding session cookie, and none is ever cached.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine

from digest.campaign.plan import PlannedWeek, coming_weeks, usable_glossary
from digest.config import Settings
from digest.core import render
from digest.model.weeks import IsoWeek
from digest.store import db
from digest.web.desk.session import (
    CsrfRefused,
    DeskForbidden,
    DeskUser,
    LoginRequired,
    desk_root,
    login_url,
    set_session_cookie,
)

__all__ = ["coming", "desk_page", "install_error_pages", "local_time"]

_NAV = (
    ("dashboard", "Dashboard", ""),
    ("queue", "Queue", "queue"),
    ("issues", "Issues", "issues"),
    ("terms", "Terms", "terms"),
    ("subscribers", "Subscribers", "subscribers"),
    ("stats", "Numbers", "stats"),
)


def desk_page(
    request: Request,
    settings: Settings,
    user: DeskUser | None,
    name: str,
    /,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """The page `desk/<name>.html.j2`; with `user`, the session cookie is set again (sliding)."""
    template = render.environment(settings.templates_dir).get_template(f"desk/{name}.html.j2")
    root = desk_root(request)
    html = template.render(
        {
            **render.base_context(settings),
            "csp_nonce": request.state.csp_nonce,
            "desk": root,
            "nav": [(key, label, f"{root}/{path}") for key, label, path in _NAV],
            "active": context.pop("active", name),
            "user": user,
            "csrf_token": user.csrf_token if user else "",
            "zone": settings.timezone,
            "notice": context.pop("notice", None),
            "error": context.pop("error", None),
            **context,
        }
    )
    answer = HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
    if user is not None:
        set_session_cookie(answer, settings, request, user.session_id)
    return answer


def local_time(settings: Settings, when: datetime | None) -> str:
    """A moment as editors read it: in the configured zone, to the minute, zone named."""
    if when is None:
        return "—"
    return f"{when.astimezone(settings.zone):%a %d %b %Y %H:%M} {settings.timezone}"


def coming(
    engine: Engine, settings: Settings, *, start: IsoWeek | None, weeks: int
) -> list[PlannedWeek]:
    """The plan's coming weeks over the usable glossary; none when no term is usable (the
    dashboard's glossary health then says why), rather than a page that fails."""
    glossary, _errors = usable_glossary(settings)
    try:
        return coming_weeks(engine, settings, glossary, start=start, weeks=weeks, now=db.utcnow())
    except ValueError:
        return []


def install_error_pages(app: FastAPI) -> None:
    """The desk's three refusals: no session (303 to login), not yours (403), no CSRF (403)."""

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(login_url(request, exc.next_path), status_code=303)

    @app.exception_handler(DeskForbidden)
    async def forbidden(request: Request, exc: DeskForbidden) -> Response:
        settings: Settings = request.app.state.settings
        return desk_page(
            request,
            settings,
            None,
            "refused",
            status_code=403,
            heading="Not allowed",
            message=f"{exc} Ask an admin of this desk.",
        )

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        settings: Settings = request.app.state.settings
        return desk_page(
            request,
            settings,
            None,
            "refused",
            status_code=403,
            heading="This form has expired",
            message="Nothing was changed. Go back, reload the page and try again.",
        )
