"""The glossary site as `digest serve` answers it: `/glossary/` and `/glossary/<slug>`.

Public pages that are the same for every reader, so they may be cached: `Cache-Control: public`
and a strong ETag of the bytes (304 to a reader who has them). The index carries no nonce (a
nonce in a cached page would be replayed); its one script is allowed by its hash instead.
"""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from digest.config import GLOSSARY_PATH, Settings
from digest.core import glossary_pages
from digest.model.glossary import Glossary
from digest.store.terms import read_glossary
from digest.web.deps import SettingsDep
from digest.web.limits import GetAlsoHead, content_policy, script_hash

__all__ = ["GLOSSARY_MAX_AGE", "router"]

router = APIRouter(route_class=GetAlsoHead)

# Seconds a browser or proxy may keep a page without asking: an edited term shows within
# five minutes, and asking again costs one 304 when nothing changed.
GLOSSARY_MAX_AGE = 300
_CACHE_CONTROL = f"public, max-age={GLOSSARY_MAX_AGE}"
# Starlette's rules for a conditional GET (If-None-Match, weak comparison), as web.feeds uses.
_CONDITIONS = StaticFiles(directory=".", check_dir=False)


def _glossary(settings: Settings) -> Glossary:
    """The valid terms, read through the term cache (a few milliseconds warm). A file with an
    error costs its own page only; the desk, `digest status` and `digest check` name it, and a
    public page logging it on every request would only fill the log."""
    glossary, _errors = read_glossary(settings.terms_dir)
    return glossary


def _index_policy(settings: Settings) -> str:
    """The index's Content-Security-Policy: the app's, with the nonce replaced by the hash of
    the search script, the only script that may run (the JSON-LD block is data, not run)."""
    return content_policy(script_hash(glossary_pages.search_script(settings)))


def _cacheable(request: Request, html: str, extra: dict[str, str] | None = None) -> Response:
    """`html` with its validators, or 304 without a body when the reader's copy is current."""
    body = html.encode("utf-8")
    headers = {
        "ETag": f'"{hashlib.sha256(body).hexdigest()[:32]}"',
        "Cache-Control": _CACHE_CONTROL,
        **(extra or {}),
    }
    if _CONDITIONS.is_not_modified(Headers(headers), request.headers):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)


@router.get(f"{GLOSSARY_PATH}/")
def glossary_index(request: Request, settings: SettingsDep) -> Response:
    html = glossary_pages.render_index(settings, _glossary(settings))
    return _cacheable(request, html, {"Content-Security-Policy": _index_policy(settings)})


@router.get(f"{GLOSSARY_PATH}/{{slug}}")
def term_page(request: Request, slug: str, settings: SettingsDep) -> Response:
    """A term's page; a term's other name or differently cased slug (`/glossary/LLM`) moves
    permanently to its page, and anything else is the app's 404."""
    glossary = _glossary(settings)
    html = glossary_pages.render_term_page(settings, glossary, slug)
    if html is not None:
        return _cacheable(request, html)
    found = glossary.lookup(slug)
    if found is None:
        raise StarletteHTTPException(404)
    target = glossary_pages.site_urls(settings).term(found.slug)
    return RedirectResponse(target, status_code=301, headers={"Cache-Control": _CACHE_CONTROL})
