"""Who is at the desk: the session cookie, the CSRF tokens, and the dependencies routes take.

The cookie holds a random session id, signed (the database keeps only the id's hash): a cookie
not made by this deployment is refused before any lookup, and rotating the secret key logs every
editor out. The CSRF token of a form is an HMAC of that id, so it is bound to the session and useless in any other. The login
form, before any session, uses a double submit: a random cookie and its signed copy in the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response
from itsdangerous import BadSignature, Signer
from starlette.datastructures import FormData

from digest.config import Settings
from digest.model.editor import Editor
from digest.store import db
from digest.store.editors import session_editor
from digest.web.deps import EngineDep, SettingsDep
from digest.web.limits import FORM_LIMITS, FormLimits

__all__ = [
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "AdminDep",
    "CsrfRefused",
    "DeskForbidden",
    "DeskUser",
    "EditorDep",
    "LoginRequired",
    "checked_form",
    "clear_session_cookie",
    "desk_root",
    "login_nonce",
    "login_token",
    "login_token_ok",
    "login_url",
    "safe_next",
    "session_cookie",
    "set_login_cookie",
    "set_session_cookie",
]

SESSION_COOKIE = "digest_desk"
LOGIN_COOKIE = "digest_desk_login"


class LoginRequired(Exception):
    """No valid session: the app answers with a 303 to the login page, coming back to `next`."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class DeskForbidden(Exception):
    """Logged in, but this is not theirs to do (an editor on an admin's page): 403."""


class CsrfRefused(Exception):
    """A POST without the form's token, or with another session's: 403, and nothing changed."""


@dataclass(frozen=True, slots=True)
class DeskUser:
    editor: Editor
    session_id: str
    csrf_token: str


def desk_root(request: Request) -> str:
    """Where the desk is: /admin below the app's root path."""
    return f"{request.scope.get('root_path', '')}/admin"


def _csrf_token(settings: Settings, session_id: str) -> str:
    key = settings.signing_key().encode()
    return hmac.new(key, b"desk-csrf:" + session_id.encode(), hashlib.sha256).hexdigest()


def current_editor(request: Request, settings: SettingsDep, engine: EngineDep) -> DeskUser:
    """The logged-in editor; a missing, unknown or expired session raises LoginRequired.

    Each request moves the session's expiry on (`desk_session_max_age` of inactivity ends it).
    """
    session_id = session_cookie(request, settings) or ""
    editor = None
    if session_id:
        editor = session_editor(
            engine, session_id, now=db.utcnow(), max_age=settings.desk_session_max_age
        )
    if editor is None:
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(wanted if request.method == "GET" else desk_root(request) + "/")
    return DeskUser(editor, session_id, _csrf_token(settings, session_id))


EditorDep = Annotated[DeskUser, Depends(current_editor)]


async def admin_editor(user: EditorDep) -> DeskUser:
    if not user.editor.is_admin:
        raise DeskForbidden("Only an admin may do this.")
    return user


AdminDep = Annotated[DeskUser, Depends(admin_editor)]


async def checked_form(
    request: Request, user: DeskUser, limits: FormLimits = FORM_LIMITS
) -> FormData:
    """The posted form once its `csrf_token` is this session's; CsrfRefused otherwise."""
    form = await request.form(**limits)
    sent = form.get("csrf_token")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, user.csrf_token):
        raise CsrfRefused()
    return form


def _session_signer(settings: Settings) -> Signer:
    return Signer(settings.signing_key(), salt="digest.desk.session")


def session_cookie(request: Request, settings: Settings) -> str | None:
    """The session id the request's cookie carries, if this deployment signed it."""
    signed = request.cookies.get(SESSION_COOKIE)
    if not signed:
        return None
    try:
        return _session_signer(settings).unsign(signed).decode("ascii")
    except (BadSignature, UnicodeDecodeError):
        return None


def set_session_cookie(
    response: Response, settings: Settings, request: Request, value: str
) -> None:
    """The session cookie, (re)set on every desk page so its expiry slides with the session's."""
    response.set_cookie(
        SESSION_COOKIE,
        _session_signer(settings).sign(value).decode("ascii"),
        max_age=settings.desk_session_max_age,
        expires=settings.desk_session_max_age,
        path=desk_root(request),
        secure=settings.base_url.startswith("https://"),
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, settings: Settings, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path=desk_root(request),
        secure=settings.base_url.startswith("https://"),
        httponly=True,
        samesite="lax",
    )


# ----- the login form's token, before there is a session


def _login_signer(settings: Settings) -> Signer:
    return Signer(settings.signing_key(), salt="digest.desk.login")


def login_nonce(request: Request) -> tuple[str, bool]:
    """The login cookie's value, and whether it is new (then the page must set it)."""
    current = request.cookies.get(LOGIN_COOKIE, "")
    if 20 <= len(current) <= 100 and current.isascii():
        return current, False
    return secrets.token_urlsafe(24), True


def login_token(settings: Settings, nonce: str) -> str:
    return _login_signer(settings).sign(nonce).decode()


def login_token_ok(settings: Settings, nonce: str, token: object) -> bool:
    if not nonce or not isinstance(token, str) or not token.isascii():
        return False
    try:
        signed = _login_signer(settings).unsign(token).decode()
    except BadSignature:
        return False
    return hmac.compare_digest(signed, nonce)


def set_login_cookie(response: Response, settings: Settings, request: Request, nonce: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        path=desk_root(request),
        secure=settings.base_url.startswith("https://"),
        httponly=True,
        samesite="lax",
    )


def safe_next(request: Request, value: object) -> str:
    """Where to go after logging in: `value` if it is a desk page of this site, else the
    dashboard. Never another host (`//evil.example`, `https://…`, `/\\evil`), so the login page
    cannot be made into an open redirect."""
    root = desk_root(request)
    home = root + "/"
    if not isinstance(value, str) or not value or len(value) > 2000:
        return home
    if any(c in value for c in "\\\r\n\t\0") or not value.isascii() or value.startswith("//"):
        return home
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return home
    if parts.path != root and not parts.path.startswith(root + "/"):
        return home
    if ".." in parts.path.split("/"):
        return home
    return value


def login_url(request: Request, next_path: str) -> str:
    return f"{desk_root(request)}/login?next={quote(next_path, safe='/')}"
