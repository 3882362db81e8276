"""The archive's web pages: /issues/ (every public issue) and /issues/<week> (one, with its quiz).

Rendered at each request from the issue's frozen snapshot (digest.core.archive), because the
page shows what its build could not know: the next issue, and the reader's quiz answer. A GET
(or HEAD) changes nothing: `?answer=` is read, never stored or counted, so a mail scanner that
opens all three answer links leaves no trace. Public from the moment the send starts
(digest.store.archive.PUBLIC_STATES): the mail's "view in browser" link works for the first
reader who gets it. `?lang=` asks for a page in one of digest's languages (a Dutch reader's
mail links with `lang=nl`); any other value is the newsletter's own language, never an error
and never written into the page.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from digest.core.archive import Visit, archive_index, archive_page
from digest.core.i18n import available_locales
from digest.model.weeks import parse_week
from digest.store import archive, issues
from digest.web.deps import EngineDep, SettingsDep
from digest.web.limits import GetAlsoHead

__all__ = ["router"]

router = APIRouter(route_class=GetAlsoHead)


def _page_locale(lang: str | None) -> str | None:
    """The locale `?lang=` names, when digest has it; None (the newsletter's own) otherwise."""
    return lang if lang in available_locales() else None


@router.get("/issues/", response_class=HTMLResponse)
def archive_index_page(
    settings: SettingsDep, engine: EngineDep, lang: str | None = None
) -> Response:
    page = archive_index(settings, archive.public_issues(engine), _page_locale(lang))
    return HTMLResponse(page)


@router.get("/issues/{week}", response_class=HTMLResponse)
def archive_issue_page(
    week: str,
    request: Request,
    settings: SettingsDep,
    engine: EngineDep,
    answer: str | None = None,
    lang: str | None = None,
) -> Response:
    try:
        iso_week = parse_week(week)
    except ValueError:
        raise StarletteHTTPException(404) from None
    record = issues.get_issue(engine, iso_week)
    if record is None or not archive.is_public(record.status) or not record.snapshot:
        raise StarletteHTTPException(404)
    older, newer = archive.neighbours(engine, iso_week)
    visit = Visit(answer=answer, csp_nonce=request.state.csp_nonce)
    html = archive_page(
        settings, record, older=older, newer=newer, visit=visit, locale=_page_locale(lang)
    )
    return HTMLResponse(html)
