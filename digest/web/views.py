"""The HTML answers the routes share: one template context, the page, message and bad-link pages.

Every page of the web, error pages included, is rendered through `page`, so each template gets
the same base context (`page_context`) and every page is `Cache-Control: no-store`.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from digest.config import Settings
from digest.core import render
from digest.core.reader_mails import template_family
from digest.readers.signup import NotResubscribable, Subscription
from digest.web.forms import mask

__all__ = [
    "BadLink",
    "bad_link",
    "message",
    "page",
    "page_context",
    "refusal_text",
    "refused_again",
    "resubscribe_notice",
]


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
    """The one-message page; rendered once per message and settings, then only given this
    request's nonce ("check your inbox" answers every sign-up: rendering it each time cost
    as much as storing the sign-up)."""
    env = _environment(settings.templates_dir, os.getcwd())
    context = render.base_context(settings)
    key = (env, heading, text, error, tuple(sorted((k, repr(v)) for k, v in context.items())))
    found = _messages.get(key)
    if found is None or not all(t.is_up_to_date for t in found[1]):
        name = "web/message.html.j2"
        html = env.get_template(name).render(
            {**context, "csp_nonce": _NONCE, "heading": heading, "message": text, "error": error}
        )
        found = (html, template_family(env, (name,)))
        if len(_messages) > 256:  # the messages are a handful; bad-link reasons a few more
            _messages.clear()
        _messages[key] = found
    html = found[0].replace(_NONCE, request.state.csp_nonce)
    return HTMLResponse(html, status_code, headers={"Cache-Control": "no-store"})


# A stand-in for the nonce no page can hold by chance, replaced by each request's own.
_NONCE = "nonce" + secrets.token_hex(12)
_messages: dict[tuple[object, ...], tuple[str, tuple[jinja2.Template, ...]]] = {}


def bad_link(request: Request, settings: Settings, reason: str) -> HTMLResponse:
    return message(
        request,
        settings,
        "This link does not work",
        reason[:1].upper() + reason[1:] + ".",
        error=True,
        status_code=400,
    )


def refusal_text(settings: Settings, refusal: NotResubscribable) -> str:
    """Why a "subscribe again" cannot be done, and for an address the provider stopped, who to
    write to (a link cannot undo a bounce or a complaint)."""
    text = refusal.reason[:1].upper() + refusal.reason[1:] + "."
    if refusal.why != "erased":
        text += f" To have it restored, write to {settings.reply_to or settings.sender_email}."
    return text


def refused_again(request: Request, settings: Settings, refusal: NotResubscribable) -> HTMLResponse:
    """The answer (409) to a "subscribe again" that cannot be done, saying why; the subscribe
    form is offered only to an erased address (it leaves a bounced or complained one be)."""
    answer = page(
        request,
        settings,
        "message",
        heading="This address cannot be subscribed again here",
        message=refusal_text(settings, refusal),
        error=True,
        home_link=refusal.why == "erased",
    )
    answer.status_code = 409
    return answer


def resubscribe_notice(subscription: Subscription) -> str:
    """What a "subscribe again" that started a new double opt-in says: where the link went."""
    address = mask(subscription.subscriber.email)
    if subscription.mail is not None:
        return (
            f"We sent a confirmation link to {address}. Open it to get the newsletter again; "
            "nothing arrives until you do."
        )
    return (
        f"A confirmation link went to {address} a little while ago. Open it to get the "
        "newsletter again; nothing arrives until you do."
    )
