"""What every request goes through before and around a route: body limits, HEAD, headers.

Plain ASGI middlewares (not BaseHTTPMiddleware), so background tasks still run after the response
has gone out; and the one 413 answer, whether a body was declared too large or counted so.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, TypedDict

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.routing import Match

__all__ = [
    "FORM_LIMITS",
    "DeclaredBodyLimit",
    "FormLimits",
    "GetAlsoHead",
    "SecurityHeaders",
    "allowed_methods",
    "content_policy",
    "script_hash",
    "too_large",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# No page takes a file: with max_files 0 a file part is refused at its header, never spooled to
# disk. Our largest form has three fields. Each part is bounded by the body limit already.
class FormLimits(TypedDict, total=False):
    """FastAPI's (private) form-limits shape, so both the routers and `request.form` take it."""

    max_fields: int
    max_files: int
    max_part_size: int


FORM_LIMITS: FormLimits = {"max_files": 0, "max_fields": 8}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def too_large(limit: int) -> JSONResponse:
    """The one answer to a body over the limit, whichever route and whether declared or counted.

    `Connection: close`, because the rest of the body is never read: the connection cannot carry
    another request.
    """
    return JSONResponse(
        {"error": f"The request body is too large: this address accepts at most {limit:,} bytes."},
        status_code=413,
        headers={"Connection": "close"},
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at this request's path.

    Starlette's 405 names the methods of the first route whose path matched; a path served by a
    GET route and a POST route allows both.
    """
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


class GetAlsoHead(APIRoute):
    """A route that answers HEAD wherever it answers GET, with the same status and headers.

    Starlette's own routes do this; FastAPI's do not, so every page answered HEAD with 405, and
    link checkers and mail scanners send HEAD first. The GET handlers change nothing, so neither
    can HEAD; Starlette's responses leave the body out for HEAD.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.methods is not None and "GET" in self.methods:
            self.methods.add("HEAD")


class DeclaredBodyLimit:
    """Answers 413 at once to a request whose Content-Length is above its route's limit.

    FastAPI's `max_body_size` counts a body as it is received and stops at the limit, which
    covers chunked bodies; but a declared length it checks only when the route reads the body or
    answers, so a route that reads none (confirm, unsubscribe) would act first and then answer
    413. Here nothing runs and nothing is read. Before routing, so the limit is found by path:
    `per_path` for the few routes with their own (the SendGrid webhook), else `default`.
    """

    def __init__(self, app: ASGIApp, default: int, per_path: Mapping[str, int]) -> None:
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
                await too_large(limit)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds security headers to every response and a fresh CSP nonce to every request.

    A plain ASGI middleware (not BaseHTTPMiddleware), so background tasks still run after the
    response has gone out. A response that sets its own Content-Security-Policy keeps it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        policy = content_policy(f"'nonce-{nonce}'")
        csp = (b"content-security-policy", policy.encode())
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                own = message.get("headers", [])
                # A response with its own policy keeps it (the RSS feed's lets its stylesheet
                # load): a second header would be enforced as well, and block what it allows.
                keeps = any(name.lower() == csp[0] for name, _ in own)
                message["headers"] = [*own, *extra] if keeps else [*own, csp, *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def content_policy(scripts: str) -> str:
    """The Content-Security-Policy of every page, with `scripts` as its script-src: a nonce for
    pages made per request, hashes for cached pages and the feed's stylesheet (a nonce in a
    cached page would be replayed, and a file cannot carry one)."""
    return (
        "default-src 'none'; "
        f"script-src {scripts}; "
        "style-src 'unsafe-inline'; "
        "img-src 'self' https: data:; "
        "form-action 'self'; "
        "base-uri 'none'; "
        "frame-ancestors 'none'"
    )


def script_hash(script: str) -> str:
    """The CSP source that lets exactly this inline script run."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return f"'sha256-{digest}'"
