"""GET and HEAD /r/<token>: a tracked link of a weekly mail, redirected and (when on) counted.

Never an open redirect: the only target is the link the token's issue stored at build, and any
other token is a 404 that points nowhere. The redirect works forever, counting or not; what
counts as a machine, and why, is in docs/engagement.md ("Clicks").
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from digest.config import Settings
from digest.core.i18n import translations
from digest.core.tracking import ClickToken, is_scanner, read_click_token, reader_key
from digest.core.tracking import tracking_keys as make_tracking_keys
from digest.store import db, engagement
from digest.store.issues import issue_links
from digest.store.subscribers import get_subscriber
from digest.web.deps import EngineDep, SettingsDep
from digest.web.views import message

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()


@router.api_route("/r/{token}", methods=["GET", "HEAD"])
def follow_click(
    token: str, request: Request, settings: SettingsDep, engine: EngineDep
) -> Response:
    keys = make_tracking_keys(settings)
    click = read_click_token(keys, token)
    links = issue_links(engine, click.issue_id) if click is not None else None
    if click is None or links is None or not 0 <= click.link_index < len(links):
        return message(
            request,
            settings,
            translations(settings.locale).gettext("This link does not work"),
            translations(settings.locale).gettext(
                "This link is not one of ours, or it was changed on its way to you."
            ),
            error=True,
            status_code=404,
        )
    # HEAD is what link checkers and scanners send first; it never counts.
    if request.method == "GET" and settings.track_clicks:
        try:
            _count(engine, settings, keys[0], click, request.headers.get("user-agent"))
        except SQLAlchemyError:
            # The reader still gets where they were going; a lost count is only a number.
            log.exception("a click of issue %s could not be counted", click.issue_id)
    # 303: the browser follows with a GET. No caching, so every click reaches us.
    return RedirectResponse(
        links[click.link_index], status_code=303, headers={"Cache-Control": "no-store"}
    )


def _count(
    engine: Engine, settings: Settings, key: bytes, click: ClickToken, user_agent: str | None
) -> None:
    subscriber = get_subscriber(engine, click.subscriber_id)
    if subscriber is None or subscriber.tracking_opt_out:
        return  # erased, or said no to tracking since this mail went out
    now = db.utcnow()
    reader = reader_key(key, click.issue_id, click.subscriber_id)
    engagement.record(
        engine,
        issue_id=click.issue_id,
        kind="click",
        link_index=click.link_index,
        reader_key=reader,
        machine=_machine(engine, settings, click, reader, user_agent, now),
        subscriber_id=click.subscriber_id if settings.tracking_detail == "per-reader" else None,
        now=now,
    )


def _machine(
    engine: Engine,
    settings: Settings,
    click: ClickToken,
    reader: str,
    user_agent: str | None,
    now: datetime,
) -> bool:
    """A scanner's User-Agent (or none), or a burst: another of this reader's links of the
    issue fetched within `click_burst_seconds` (a gateway opening every link). Time since the
    delivery never decides: an outbox mail may be read the moment it arrives."""
    if is_scanner(user_agent):
        return True
    previous = engagement.last_click_at(engine, click.issue_id, reader, other_than=click.link_index)
    return previous is not None and now - previous <= timedelta(
        seconds=settings.click_burst_seconds
    )
