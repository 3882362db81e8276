"""The web service: subscribe form, confirm and unsubscribe links, archive, feed, health check.

Built to be safe against mail scanners and curious clients: no GET (or HEAD) changes anything,
token links answer with a button (POST), subscribe answers the same whether or not an address is
known, every page carries security headers (a nonce CSP, no-referrer so tokens do not leak), and
no request body larger than its route needs is read (413, `max_request_bytes`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, TypedDict

from fastapi import APIRouter, BackgroundTasks, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.routing import Match

from digest import db, issues, render
from digest.config import Settings, get_settings
from digest.core import reader_times
from digest.feed import render_feed
from digest.model.subscriber import InvalidSubscriber, Subscriber
from digest.readers import preferences, signup
from digest.tokens import BadToken
from digest.weeks import parse_week

__all__ = ["create_app"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_CHECK_INBOX = (
    "Thanks! If this address is not subscribed yet, a confirmation link is on its way. "
    "Open it to start receiving the newsletter."
)
_JSON_TYPES = ("application/json",)


# No page takes a file: with max_files 0 a file part is refused at its header, never spooled to
# disk. Our largest form has three fields. Each part is bounded by the body limit already.
class _FormLimits(TypedDict, total=False):
    """FastAPI's (private) form-limits shape, so both the router and `request.form` take it."""

    max_fields: int
    max_files: int
    max_part_size: int


_FORM_LIMITS: _FormLimits = {"max_files": 0, "max_fields": 8}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


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
    # Per app, so each app (and each test) counts on its own; in memory, so several workers
    # each allow the limit (good enough against a script hammering one process).
    app.state.limiter = MovingWindowRateLimiter(MemoryStorage())
    # The pages live on a router of their own for its defaults: every GET also answers HEAD, and
    # FastAPI counts each body as it arrives and stops at the limit (a 413 from `_add_error_pages`).
    pages = APIRouter(
        route_class=_GetAlsoHead,
        max_body_size=settings.max_request_bytes,
        form_limits=_FORM_LIMITS,
    )
    _add_routes(pages, settings)
    _add_preference_routes(pages, settings)
    app.include_router(pages)
    _add_error_pages(app, settings)
    webhook_paths = _include_webhook(app, settings)
    # Added first, so it runs inside _SecurityHeaders: its 413s carry the headers too.
    app.add_middleware(
        _DeclaredBodyLimit,
        default=settings.max_request_bytes,
        per_path=dict.fromkeys(webhook_paths, settings.max_webhook_request_bytes),
    )
    app.add_middleware(_SecurityHeaders)
    return app


# --------------------------------------------------------------------------- routes


def _add_routes(app: APIRouter, settings: Settings) -> None:
    rate = RateLimitItemPerMinute(max(settings.subscribe_rate_limit, 1))

    @app.get("/", response_class=HTMLResponse)
    def subscribe_form(request: Request) -> Response:
        return _page(request, settings, "subscribe", email="", name="", error=None)

    @app.post("/subscribe")
    async def subscribe(request: Request, background: BackgroundTasks) -> Response:
        wants_json = _is_json(request)
        limiter: MovingWindowRateLimiter = request.app.state.limiter
        client = request.client.host if request.client else "unknown"
        if settings.subscribe_rate_limit > 0 and not limiter.hit(rate, client):
            reset = limiter.get_window_stats(rate, client).reset_time
            retry_after = str(max(1, math.ceil(reset - time.time())))
            message = "Too many subscribe requests from your network; try again in a minute."
            headers = {"Retry-After": retry_after}
            if wants_json:
                return JSONResponse({"error": message}, status_code=429, headers=headers)
            page = _page(request, settings, "subscribe", email="", name="", error=message)
            page.status_code = 429
            page.headers.update(headers)
            return page

        try:
            fields = await (_json_fields(request) if wants_json else _form_fields(request))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        engine: Engine = request.app.state.engine
        try:
            fields = {key: _storable_text(key, value) for key, value in fields.items()}
            result = await run_in_threadpool(
                lambda: signup.subscribe(
                    engine,
                    settings,
                    fields["email"],
                    name=fields["name"],
                    timezone=fields["timezone"],
                    source="web",
                    now=db.utcnow(),
                    send=False,
                )
            )
        except InvalidSubscriber as exc:
            message = _invalid_message(exc)
            if wants_json:
                return JSONResponse({"error": message, "field": exc.field}, status_code=422)
            page = _page(
                request,
                settings,
                "subscribe",
                email=_printable(fields["email"]),
                name=_printable(fields["name"]),
                error=message,
            )
            page.status_code = 422
            return page
        # Sent after the answer has gone out, so how long a send takes (or whether one happens
        # at all) cannot be read off the response time.
        background.add_task(_send_confirmation, engine, settings, result)
        if wants_json:
            return JSONResponse({"status": "ok", "message": _CHECK_INBOX})
        return _message(request, settings, "Check your inbox", _CHECK_INBOX)

    @app.get("/confirm/{token}", response_class=HTMLResponse)
    def confirm_page(request: Request, token: str) -> Response:
        try:
            found = signup.subscriber_from_token(
                request.app.state.engine, settings, "confirm", token
            )
        except BadToken as exc:
            return _bad_link(request, settings, str(exc))
        if found is None:
            return _bad_link(request, settings, "this link is not valid")
        if found.status == "active":
            return _message(request, settings, "You are subscribed", _CONFIRMED)
        if found.status != "pending":
            return _bad_link(request, settings, _CANCELLED)
        return _page(request, settings, "confirm")

    @app.post("/confirm/{token}", response_class=HTMLResponse)
    def confirm(request: Request, token: str, background: BackgroundTasks) -> Response:
        now = db.utcnow()
        engine: Engine = request.app.state.engine
        try:
            found = signup.confirm(engine, settings, token, now=now)
        except BadToken as exc:
            return _bad_link(request, settings, str(exc))
        # confirmed_at is this request's `now` only for the request that activated the
        # subscription: pressing the button again (or a racing second press) welcomes no one.
        if found.confirmed_at == now:
            background.add_task(_send_welcome, engine, settings, found.id, now)
        return _message(request, settings, "You are subscribed", _CONFIRMED)

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(request: Request, token: str) -> Response:
        try:
            found = signup.subscriber_from_token(
                request.app.state.engine, settings, "unsubscribe", token
            )
        except BadToken as exc:
            return _bad_link(request, settings, str(exc))
        if found is None or found.status not in ("pending", "active"):
            return _message(request, settings, "You are unsubscribed", _UNSUBSCRIBED)
        return _page(request, settings, "unsubscribe", address=_mask(found.email))

    @app.post("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe(request: Request, token: str) -> Response:
        # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" (or nothing) and
        # expect 200 with no further step, so the body is not even read.
        try:
            signup.unsubscribe(request.app.state.engine, settings, token, now=db.utcnow())
        except BadToken as exc:
            return _bad_link(request, settings, str(exc))
        return _message(request, settings, "You are unsubscribed", _UNSUBSCRIBED)

    @app.get("/issues/", response_class=HTMLResponse)
    def archive_index(request: Request) -> Response:
        records = issues.list_issues(request.app.state.engine, statuses=["sent"])
        return HTMLResponse(render.archive_index(settings, records))

    @app.get("/issues/{week}", response_class=HTMLResponse)
    def archive_page(request: Request, week: str) -> Response:
        try:
            iso_week = parse_week(week)
        except ValueError:
            raise StarletteHTTPException(404) from None
        record = issues.get_issue(request.app.state.engine, iso_week)
        if record is None or record.status != "sent":
            raise StarletteHTTPException(404)
        return HTMLResponse(render.archive_page(settings, record))

    @app.get("/feed.xml")
    def feed(request: Request) -> Response:
        records = issues.list_issues(
            request.app.state.engine, statuses=["sent"], limit=settings.feed_items
        )
        return Response(
            render_feed(settings, records, db.utcnow()),
            media_type="application/rss+xml; charset=utf-8",
        )

    @app.get("/healthz")
    def healthz(request: Request) -> Response:
        try:
            ok = db.ping(request.app.state.engine)
        except Exception as exc:  # any driver error means "not healthy", never a stack trace
            log.warning("health check: database unreachable: %s", type(exc).__name__)
            ok = False
        if not ok:
            return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})


_CONFIRMED = "Your subscription is confirmed. The next issue will arrive in your inbox."
_UNSUBSCRIBED = "This address will get no more issues. You can subscribe again any time."
_CANCELLED = (
    "this subscription was cancelled after the link was sent; subscribe again to get a new link"
)


# --------------------------------------------------------------------------- request parsing


def _is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() in _JSON_TYPES


async def _form_fields(request: Request) -> dict[str, str]:
    form = await request.form(**_FORM_LIMITS)
    return {key: _text(form.get(key)) for key in ("email", "name", "timezone")}


async def _json_fields(request: Request) -> dict[str, str]:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # json.loads gives up on "[[[[…" with RecursionError
        raise ValueError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValueError('send a JSON object such as {"email": "ann@example.org"}')
    fields: dict[str, str] = {}
    for key in ("email", "name", "timezone"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        fields[key] = value or ""
    return fields


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _storable_text(field: str, value: str) -> str:
    """`value` if it is text every database and mail header can hold, else InvalidSubscriber.

    JSON's `"\\udc00"` escape (and a multipart part declared in a codec such as unicode_escape)
    decodes to a lone surrogate, which no UTF-8 encoder accepts: it used to pass validation and
    fail at the INSERT, a 500. A form's invalid UTF-8 (`%ED%B0%80`) arrives as U+FFFD, which
    would be stored as is; it is refused too, so the sender learns their text did not arrive.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSubscriber(
            field, "it holds a lone surrogate code point (such as \\udc00); send valid Unicode text"
        ) from None
    if "\ufffd" in value:
        raise InvalidSubscriber(
            field,
            "it holds U+FFFD, the mark of bytes that were not valid UTF-8; send the text as UTF-8",
        )
    return value


def _printable(value: str) -> str:
    """`value` with what UTF-8 cannot encode replaced, to show a refused value back safely."""
    return value.encode("utf-8", "replace").decode("utf-8")


def _invalid_message(exc: InvalidSubscriber) -> str:
    if exc.field == "email":
        return f"That email address is not valid: {exc.reason}"
    return f"The {exc.field} is not valid: {exc.reason}"


def _mask(email: str) -> str:
    """`a…@example.org`: enough to recognise one's address, not to read it off a shared link."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}…@{domain}"


# --------------------------------------------------------------------------- pages


def _page(request: Request, settings: Settings, page: str, /, **context: Any) -> HTMLResponse:
    template = render.environment(settings.templates_dir).get_template(f"web/{page}.html.j2")
    html = template.render(
        newsletter_name=settings.newsletter_name,
        base_url=settings.base_url,
        language=settings.language,
        csp_nonce=request.state.csp_nonce,
        **context,
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _message(
    request: Request,
    settings: Settings,
    heading: str,
    message: str,
    *,
    error: bool = False,
    status_code: int = 200,
) -> HTMLResponse:
    page = _page(request, settings, "message", heading=heading, message=message, error=error)
    page.status_code = status_code
    return page


def _bad_link(request: Request, settings: Settings, reason: str) -> HTMLResponse:
    return _message(
        request,
        settings,
        "This link does not work",
        reason[:1].upper() + reason[1:] + ".",
        error=True,
        status_code=400,
    )


def _add_error_pages(app: FastAPI, settings: Settings) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _message(
                request,
                settings,
                "Not found",
                "There is no page at this address.",
                error=True,
                status_code=404,
            )
        if exc.status_code == 413:  # FastAPI stopped reading a body at the route's limit
            return _too_large(
                request.scope.get(MAX_BODY_SIZE_SCOPE_KEY, settings.max_request_bytes)
            )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route whose path matched; a path served by
            # a GET route and a POST route allows both.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _message(
            request,
            settings,
            "Something went wrong",
            "Something went wrong on our side. Please try again later.",
            error=True,
            status_code=500,
        )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at this request's path."""
    allowed = []
    for method in _METHODS:
        probe = {
            "type": "http",
            "method": method,
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
            "headers": [],
        }
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _too_large(limit: int) -> JSONResponse:
    """The one answer to a body over the limit, whichever route and whether declared or counted.

    `Connection: close`, because the rest of the body is never read: the connection cannot carry
    another request.
    """
    return JSONResponse(
        {"error": f"The request body is too large: this address accepts at most {limit:,} bytes."},
        status_code=413,
        headers={"Connection": "close"},
    )


def _send_confirmation(
    engine: Engine, settings: Settings, subscription: signup.Subscription
) -> None:
    try:
        signup.send_confirmation(engine, settings, subscription)
    except Exception as exc:  # after the answer: nothing to tell the person, so tell the log
        # They saw "check your inbox"; the resend slot is freed, so submitting again retries.
        log.error("confirmation mail not sent: %s: %s", type(exc).__name__, exc)


def _send_welcome(engine: Engine, settings: Settings, subscriber_id: int, now: datetime) -> None:
    try:
        preferences.send_welcome(engine, settings, subscriber_id, now)
    except Exception as exc:  # after the answer, like the confirmation mail: tell the log
        log.error("welcome mail not sent: %s: %s", type(exc).__name__, exc)


# --------------------------------------------------------------------------- preference centre

_ERASED = (
    "Everything we kept about you is deleted, and nothing more is sent to this address. "
    "Thanks for reading."
)


def _add_preference_routes(app: APIRouter, settings: Settings) -> None:
    """/preferences/{token}: the page (GET, changes nothing) and one POST per change.

    The signed token is the only key: it never expires and works only while it names the
    subscriber's current address, so a link in an old mail stays theirs alone.
    """

    def reader(request: Request, token: str) -> Subscriber | Response:
        try:
            found = signup.subscriber_from_token(
                request.app.state.engine, settings, "preferences", token
            )
        except BadToken as exc:
            return _bad_link(request, settings, str(exc))
        if found is None:
            return _bad_link(request, settings, "this link is not valid")
        return found

    @app.get("/preferences/{token}", response_class=HTMLResponse)
    def preferences_page(request: Request, token: str) -> Response:
        found = reader(request, token)
        if isinstance(found, Response):
            return found
        return _preferences(request, settings, token, found)

    @app.post("/preferences/{token}", response_class=HTMLResponse)
    def preferences_save(
        request: Request,
        token: str,
        name: Annotated[str, Form()] = "",
        timezone: Annotated[str, Form()] = "",
    ) -> Response:
        found = reader(request, token)
        if isinstance(found, Response):
            return found
        now = db.utcnow()
        try:
            saved = preferences.update_profile(
                request.app.state.engine,
                found.id,
                name=_storable_text("name", name),
                timezone=_storable_text("timezone", timezone),
                now=now,
            )
        except InvalidSubscriber as exc:
            return _preferences(request, settings, token, found, error=_invalid_message(exc))
        when = reader_times.delivery_time(settings, saved.timezone, now)
        notice = f"Saved. A new issue arrives {when}."
        return _preferences(request, settings, token, saved, notice=notice)

    @app.post("/preferences/{token}/pause", response_class=HTMLResponse)
    def preferences_pause(
        request: Request, token: str, weeks: Annotated[str, Form()] = ""
    ) -> Response:
        found = reader(request, token)
        if isinstance(found, Response):
            return found
        now = db.utcnow()
        try:
            # isdigit() alone takes "²" (int() then raises) and 5,000-digit numbers (int() refuses
            # those too): both were 500s. Anything else is 0, which pause() refuses clearly.
            text = weeks.strip()
            count = int(text) if text.isascii() and text.isdigit() and len(text) <= 4 else 0
            paused = preferences.pause(request.app.state.engine, found.id, count, now=now)
        except InvalidSubscriber as exc:
            return _preferences(
                request, settings, token, found, error=exc.reason[:1].upper() + exc.reason[1:]
            )
        until = reader_times.pause_end(settings, paused, now)
        notice = f"Paused: no issues until {until}. You can resume any time."
        return _preferences(request, settings, token, paused, notice=notice)

    @app.post("/preferences/{token}/resume", response_class=HTMLResponse)
    def preferences_resume(request: Request, token: str) -> Response:
        found = reader(request, token)
        if isinstance(found, Response):
            return found
        resumed = preferences.resume(request.app.state.engine, found.id, now=db.utcnow())
        notice = "Resumed: the next issue comes as usual."
        return _preferences(request, settings, token, resumed, notice=notice)

    @app.post("/preferences/{token}/unsubscribe", response_class=HTMLResponse)
    def preferences_unsubscribe(request: Request, token: str) -> Response:
        found = reader(request, token)
        if isinstance(found, Response):
            return found
        gone = preferences.unsubscribe(request.app.state.engine, found.id, now=db.utcnow())
        return _preferences(request, settings, token, gone or found, notice=_UNSUBSCRIBED)

    @app.post("/preferences/{token}/export")
    def preferences_export(request: Request, token: str) -> Response:
        found = reader(request, token)
        if isinstance(found, Response):
            return found
        data = preferences.export_data(request.app.state.engine, found.id)
        if data is None:
            return _bad_link(request, settings, "this link is not valid")
        return Response(
            json.dumps(data, indent=2, ensure_ascii=False) + "\n",
            media_type="application/json",
            headers={
                "Content-Disposition": 'attachment; filename="my-digest-data.json"',
                "Cache-Control": "no-store",
            },
        )

    @app.post("/preferences/{token}/erase", response_class=HTMLResponse)
    def preferences_erase(
        request: Request, token: str, confirm: Annotated[str, Form()] = ""
    ) -> Response:
        found = reader(request, token)
        if isinstance(found, Response):
            return found
        if confirm != "yes":  # the first press only asks: erasing cannot be undone
            return _page(
                request,
                settings,
                "preferences_erase",
                address=_mask(found.email),
                action=_preferences_action(request, token),
            )
        preferences.erase_data(request.app.state.engine, found.id)
        return _message(request, settings, "Your data is erased", _ERASED)


def _preferences_action(request: Request, token: str) -> str:
    # From the root, not relative: the page is also shown at /preferences/<token>/pause etc.
    return f"{request.scope.get('root_path', '')}/preferences/{token}"


def _preferences(
    request: Request,
    settings: Settings,
    token: str,
    subscriber: Subscriber,
    *,
    notice: str | None = None,
    error: str | None = None,
) -> HTMLResponse:
    now = db.utcnow()
    zones = reader_times.time_zones()
    if subscriber.timezone and subscriber.timezone not in zones:  # a legacy name from an import
        zones = (subscriber.timezone, *zones)
    page = _page(
        request,
        settings,
        "preferences",
        subscriber=subscriber,
        address=_mask(subscriber.email),
        name=subscriber.name or "",
        timezone=subscriber.timezone or "",
        zones=zones,
        default_zone=settings.timezone,
        delivery=reader_times.delivery_time(settings, subscriber.timezone, now),
        paused_until=reader_times.pause_end(settings, subscriber, now),
        max_pause=preferences.MAX_PAUSE_WEEKS,
        action=_preferences_action(request, token),
        notice=notice,
        error=error,
    )
    if error:
        page.status_code = 422
    return page


# --------------------------------------------------------------------------- routing and limits


class _GetAlsoHead(APIRoute):
    """A route that answers HEAD wherever it answers GET, with the same status and headers.

    Starlette's own routes do this; FastAPI's do not, so every page answered HEAD with 405, and
    link checkers and mail scanners send HEAD first. The GET handlers change nothing, so neither
    can HEAD; Starlette's responses leave the body out for HEAD.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.methods is not None and "GET" in self.methods:
            self.methods.add("HEAD")


class _DeclaredBodyLimit:
    """Answers 413 at once to a request whose Content-Length is above its route's limit.

    FastAPI's `max_body_size` counts a body as it is received and stops at the limit, which
    covers chunked bodies; but a declared length it checks only when the route reads the body or
    answers, so a route that reads none (confirm, unsubscribe) would act first and then answer
    413. Here nothing runs and nothing is read. Before routing, so the limit is found by path:
    `per_path` for the few routes with their own (the SendGrid webhook), else `default`.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        default: int,
        per_path: Mapping[str, int],
    ) -> None:
        self.app = app
        self.default = default
        self.per_path = per_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"].removeprefix(scope.get("root_path", ""))
            limit = self.per_path.get(path, self.default)
            declared = Headers(scope=scope).get("content-length", "")
            # A malformed length never reaches here from uvicorn (h11 answers 400 itself).
            if declared.isdigit() and int(declared) > limit:
                await _too_large(limit)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- headers


class _SecurityHeaders:
    """Adds security headers to every response and a fresh CSP nonce to every request.

    A plain ASGI middleware (not BaseHTTPMiddleware), so background tasks still run after the
    response has gone out.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        policy = (
            "default-src 'none'; "
            f"script-src 'nonce-{nonce}'; "
            "style-src 'unsafe-inline'; "
            "img-src 'self' https: data:; "
            "form-action 'self'; "
            "base-uri 'none'; "
            "frame-ancestors 'none'"
        )
        extra = [
            (b"content-security-policy", policy.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _include_webhook(app: FastAPI, settings: Settings) -> set[str]:
    """Mount the mail provider's event webhook when `digest.delivery.webhook` is installed.

    Returns its paths: they take batches up to `max_webhook_request_bytes`, not the pages' limit.
    """
    if importlib.util.find_spec("digest.delivery.webhook") is None:
        return set()
    module = importlib.import_module("digest.delivery.webhook")
    router: APIRouter | None = getattr(module, "router", None)
    if router is None:
        return set()
    app.include_router(router, max_body_size=settings.max_webhook_request_bytes)
    return {route.path for route in router.routes if isinstance(route, APIRoute)}
