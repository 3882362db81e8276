"""The feed URLs: /feed.xml (RSS), /feed.atom, /feed.json and the browser view's /feed.xsl.

Feed readers poll, so every feed answer is cacheable and conditional: a strong ETag of the bytes,
Last-Modified of the newest issue, and 304 without a body when the reader already has them.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from email.utils import format_datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Engine
from starlette.datastructures import Headers
from starlette.staticfiles import StaticFiles

from digest.config import Settings
from digest.core.feed import (
    FEED_MAX_AGE,
    Channel,
    feed_channel,
    render_atom,
    render_json_feed,
    render_rss,
    render_stylesheet,
)
from digest.store import db, issues
from digest.web.deps import EngineDep, SettingsDep
from digest.web.limits import GetAlsoHead, content_policy, script_hash

__all__ = ["router"]

router = APIRouter(route_class=GetAlsoHead)

# Starlette's own rules for a conditional GET, as its static files answer them (RFC 9110
# 13.1: If-None-Match by weak comparison, a list or `*`, and If-Modified-Since only without
# it). `is_not_modified` reads no files; the instance exists only to reach it.
_CONDITIONS = StaticFiles(directory=".", check_dir=False)
_CACHE_CONTROL = f"public, max-age={FEED_MAX_AGE}"
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _channel(settings: Settings, engine: Engine) -> Channel:
    """The sent issues the feeds show: one query, as the RSS feed always made."""
    records = issues.list_issues(engine, statuses=["sent"], limit=settings.feed_items)
    return feed_channel(settings, records)


def _feed_answer(
    request: Request,
    body: bytes,
    media_type: str,
    updated: datetime | None,
    extra: dict[str, str] | None = None,
) -> Response:
    """`body` with its validators, or 304 with the same headers and no body when the reader's
    copy is current. A feed with items is the same bytes until a new issue goes out (its dates
    come from the issues, not the clock), so the ETag holds across requests and replicas."""
    headers = {
        "ETag": f'"{hashlib.sha256(body).hexdigest()[:32]}"',
        "Cache-Control": _CACHE_CONTROL,
        **(extra or {}),
    }
    if updated is not None:  # the newest issue's date; an empty feed has none to give
        headers["Last-Modified"] = format_datetime(updated, usegmt=True)
    if _CONDITIONS.is_not_modified(Headers(headers), request.headers):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _stylesheet_policy(settings: Settings) -> str:
    """The RSS feed's Content-Security-Policy: the app's, except that the stylesheet may load
    (browsers check an XSLT against script-src) and its one inline script may run, by hash.

    The app's nonce policy would block both: the stylesheet is a file and cannot carry the
    nonce of each response."""
    found = _SCRIPT.search(render_stylesheet(settings))
    script = found.group(1) if found else ""
    return content_policy(f"'self' {script_hash(script)}")


@router.get("/feed.xml")
def rss_feed(request: Request, settings: SettingsDep, engine: EngineDep) -> Response:
    """RSS 2.0. A browser (it asks for text/html) gets it as application/xml, the one type
    Chromium applies the stylesheet to (it shows application/rss+xml as raw text); readers
    get application/rss+xml. The same bytes either way, hence `Vary: Accept`."""
    channel = _channel(settings, engine)
    browser = "text/html" in request.headers.get("accept", "")
    media_type = "application/xml" if browser else "application/rss+xml"
    return _feed_answer(
        request,
        render_rss(channel, db.utcnow()).encode("utf-8"),
        f"{media_type}; charset=utf-8",
        channel.updated,
        {"Vary": "Accept", "Content-Security-Policy": _stylesheet_policy(settings)},
    )


@router.get("/feed.atom")
def atom_feed(request: Request, settings: SettingsDep, engine: EngineDep) -> Response:
    channel = _channel(settings, engine)
    body = render_atom(channel, db.utcnow()).encode("utf-8")
    return _feed_answer(request, body, "application/atom+xml; charset=utf-8", channel.updated)


@router.get("/feed.json")
def json_feed(request: Request, settings: SettingsDep, engine: EngineDep) -> Response:
    channel = _channel(settings, engine)
    body = render_json_feed(channel)
    return _feed_answer(request, body, "application/feed+json; charset=utf-8", channel.updated)


@router.get("/feed.xsl")
def feed_stylesheet(request: Request, settings: SettingsDep) -> Response:
    """The XSLT, as text/xsl (Chromium applies it; application/xslt+xml works as well)."""
    body = render_stylesheet(settings).encode("utf-8")
    return _feed_answer(request, body, "text/xsl; charset=utf-8", None)
