"""The editors' desk at /admin/: login, dashboard, queue, issues, terms, subscribers, numbers.

`install_desk` adds its routers and its refusals (303 to login, 403) to the app; every page but the
login needs a session, and every change a POST with the session's CSRF token (docs/desk.md).
"""

from __future__ import annotations

from fastapi import FastAPI

from digest.config import Settings
from digest.web.desk import dashboard, issues, login, queue, stats, subscribers, terms
from digest.web.desk.sending import SendRunner
from digest.web.desk.subscribers import IMPORT_PATH, MAX_IMPORT_BYTES
from digest.web.desk.views import install_error_pages

__all__ = ["IMPORT_PATH", "MAX_IMPORT_BYTES", "install_desk"]


def install_desk(app: FastAPI, settings: Settings) -> None:
    """The desk's pages with the pages' body limit; the CSV import with its own, larger one."""
    for module in (login, dashboard, queue, issues, terms, subscribers, stats):
        app.include_router(module.router, max_body_size=settings.max_request_bytes)
    app.include_router(subscribers.import_router, max_body_size=MAX_IMPORT_BYTES)
    install_error_pages(app)
    app.state.desk_sends = SendRunner()  # "send now" runs one send at a time per app
