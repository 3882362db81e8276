"""The HTML answers the routes share: one template context, the page, message and bad-link pages.

Every page of the web, error pages included, is rendered through `page`, so each template gets
the same base context (`page_context`) and every page is `Cache-Control: no-store`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from digest.config import Settings
from digest.core import render

__all__ = ["UNSUBSCRIBED", "BadLink", "bad_link", "message", "page", "page_context"]

# Said by the unsubscribe link and by the preference centre's unsubscribe button alike.
UNSUBSCRIBED = "This address will get no more issues. You can subscribe again any time."


class BadLink(Exception):
    """A token link that cannot be acted on; the app answers it with `bad_link`'s page (400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def page_context(request: Request, settings: Settings, /, **context: Any) -> dict[str, Any]:
    """What every web template is rendered with: the base context every mail and page shares
    (`render.base_context`), the request's CSP nonce, and the page's own values."""
    return {**render.base_context(settings), "csp_nonce": request.state.csp_nonce, **context}


@lru_cache(maxsize=16)
def _environment(templates_dir: Path, cwd: str) -> jinja2.Environment:
    """`render.environment`, remembered by folder as given (and the working folder it is
    relative to): finding its roots resolves two paths, a cost on every page otherwise."""
    return render.environment(templates_dir)


def page(request: Request, settings: Settings, name: str, /, **context: Any) -> HTMLResponse:
    """The page `web/<name>.html.j2`, never cached: pages behind token links are someone's own."""
    template = _environment(settings.templates_dir, os.getcwd()).get_template(f"web/{name}.html.j2")
    html = template.render(page_context(request, settings, **context))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def message(
    request: Request,
    settings: Settings,
    heading: str,
    text: str,
    *,
    error: bool = False,
    status_code: int = 200,
) -> HTMLResponse:
    answer = page(request, settings, "message", heading=heading, message=text, error=error)
    answer.status_code = status_code
    return answer


def bad_link(request: Request, settings: Settings, reason: str) -> HTMLResponse:
    return message(
        request,
        settings,
        "This link does not work",
        reason[:1].upper() + reason[1:] + ".",
        error=True,
        status_code=400,
    )
