"""/admin/terms: the glossary to browse and search, each term's history (the weeks it was
featured) and the problems of the files that could not be read (left out of selection).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from digest.campaign.plan import usable_glossary
from digest.store.issues import featured_history
from digest.web.deps import EngineDep, SettingsDep
from digest.web.desk.session import EditorDep
from digest.web.desk.views import desk_page
from digest.web.limits import FORM_LIMITS, GetAlsoHead

__all__ = ["router"]

router = APIRouter(route_class=GetAlsoHead, form_limits=FORM_LIMITS)


@router.get("/admin/terms")
def terms_page(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    glossary, errors = usable_glossary(settings)
    query = request.query_params.get("q", "").strip()[:200]
    wanted = query.casefold()
    terms = [
        t
        for t in sorted(glossary, key=lambda t: t.title.casefold())
        if not wanted or any(wanted in name.casefold() for name in (t.slug, *t.names))
    ]
    featured: dict[str, list[str]] = {}
    for week, slug in featured_history(engine):
        featured.setdefault(slug, []).append(str(week))
    return desk_page(
        request, settings, user, "terms", q=query, terms=terms, featured=featured, errors=errors
    )


@router.get("/admin/terms/{slug}")
def term_page(
    request: Request, slug: str, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    glossary, errors = usable_glossary(settings)
    term = glossary.get(slug)
    own_errors = [e for e in errors if e.path.stem == slug]
    if term is None and not own_errors:
        raise StarletteHTTPException(404)
    weeks = [str(week) for week, featured in featured_history(engine) if featured == slug]
    return desk_page(
        request, settings, user, "term", active="terms", slug=slug, term=term, weeks=weeks,
        errors=own_errors,
    )  # fmt: skip
