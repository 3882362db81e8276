"""`create_app`: the web service assembled from its routers, error pages and middlewares.

Every page carries security headers (a nonce CSP, no-referrer so tokens do not leak), and no
request body larger than its route needs is read (413, `max_request_bytes`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

from digest.config import Settings, get_settings
from digest.core.i18n import translations
from digest.store import db
from digest.web.archive import router as archive_router
from digest.web.desk import IMPORT_PATH, MAX_IMPORT_BYTES, install_desk
from digest.web.feeds import router as feeds_router
from digest.web.glossary import router as glossary_router
from digest.web.health import router as health_router
from digest.web.limits import (
    DeclaredBodyLimit,
    SecurityHeaders,
    allowed_methods,
    too_large,
)
from digest.web.pages import router as pages_router
from digest.web.preferences import router as preferences_router
from digest.web.rate_limits import install_rate_limits
from digest.web.redirects import router as redirects_router
from digest.web.views import BadLink, bad_link, message
from digest.web.webhooks import router as webhook_router

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app; the database engine is made and migrated when the app starts."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = db.make_engine(settings.database_url)
        await run_in_threadpool(db.upgrade, engine)
        app.state.engine = engine
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title=settings.newsletter_name,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    install_rate_limits(app, settings)
    app.include_router(health_router)  # no body, no limiter, no login
    app.include_router(pages_router, max_body_size=settings.max_request_bytes)
    app.include_router(archive_router, max_body_size=settings.max_request_bytes)
    app.include_router(feeds_router, max_body_size=settings.max_request_bytes)
    app.include_router(glossary_router, max_body_size=settings.max_request_bytes)
    app.include_router(preferences_router, max_body_size=settings.max_request_bytes)
    app.include_router(redirects_router, max_body_size=settings.max_request_bytes)
    install_desk(app, settings)
    _add_error_pages(app)
    # The webhook takes batches up to `max_webhook_request_bytes`, not the pages' limit.
    app.include_router(webhook_router, max_body_size=settings.max_webhook_request_bytes)
    webhook_paths = {route.path for route in webhook_router.routes if isinstance(route, APIRoute)}
    # Added first, so it runs inside SecurityHeaders: its 413s carry the headers too.
    app.add_middleware(
        DeclaredBodyLimit,
        default=settings.max_request_bytes,
        per_path={
            **dict.fromkeys(webhook_paths, settings.max_webhook_request_bytes),
            IMPORT_PATH: MAX_IMPORT_BYTES,
        },
    )
    app.add_middleware(SecurityHeaders)
    return app


def _add_error_pages(app: FastAPI) -> None:
    @app.exception_handler(BadLink)
    async def link_error(request: Request, exc: BadLink) -> Response:
        return bad_link(request, request.app.state.settings, exc.reason)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        settings: Settings = request.app.state.settings
        if exc.status_code == 404:  # in the newsletter's language: whose visit it is is unknown
            gettext = translations(settings.locale).gettext
            return message(
                request,
                settings,
                gettext("Not found"),
                gettext("There is no page at this address."),
                error=True,
                status_code=404,
            )
        if exc.status_code == 413:  # FastAPI stopped reading a body at the route's limit
            return too_large(request.scope.get(MAX_BODY_SIZE_SCOPE_KEY, settings.max_request_bytes))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        settings: Settings = request.app.state.settings
        gettext = translations(settings.locale).gettext
        return message(
            request,
            settings,
            gettext("Something went wrong"),
            gettext("Something went wrong on our side. Please try again later."),
            error=True,
            status_code=500,
        )
