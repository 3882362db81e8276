"""The HTML answers the routes share: one template context, the page, message and bad-link pages.

Every page of the web, error pages included, is rendered through `page`, so each template gets
the same base context (`page_context`) and every page is `Cache-Control: no-store`. A page is in
the newsletter's language (`settings.locale`), or in the locale it is given: a page reached from
a reader's token link speaks that reader's language (`reader_settings`).
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
from digest.core.i18n import N_, SOURCE_LOCALE, reader_locale, translations
from digest.core.reader_mails import template_family
from digest.model.subscriber import Subscriber
from digest.readers.signup import NotResubscribable, Subscription
from digest.web.forms import mask

__all__ = [
    "BadLink",
    "bad_link",
    "message",
    "page",
    "page_context",
    "reader_settings",
    "refusal_text",
    "refused_again",
    "resubscribe_notice",
]


class BadLink(Exception):
    """A token link that cannot be acted on; the app answers it with `bad_link`'s page (400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def reader_settings(settings: Settings, reader: Subscriber | None) -> Settings:
    """The settings a page for `reader` renders with: in the language they chose, else (no
    choice, a catalogue since removed, or no reader known) in the newsletter's."""
    if reader is None:
        return settings
    return settings.for_locale(reader_locale(reader.language))


def page_context(request: Request, settings: Settings, /, **context: Any) -> dict[str, Any]:
    """What every web template is rendered with: the base context every mail and page shares
    (`render.base_context`, in `settings.locale`), the request's CSP nonce, and the page's own
    values."""
    return {**render.base_context(settings), "csp_nonce": request.state.csp_nonce, **context}


@lru_cache(maxsize=16)
def _environment(templates_dir: Path, cwd: str) -> jinja2.Environment:
    """`render.environment`, remembered by folder as given (and the working folder it is
    relative to): finding its roots resolves two paths, a cost on every page otherwise."""
    return render.environment(templates_dir)


def page(
    request: Request,
    settings: Settings,
    name: str,
    /,
    *,
    locale: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """The page `web/<name>.html.j2` in `locale` (None: `settings.locale`), never cached: pages
    behind token links are someone's own."""
    settings = settings.for_locale(locale)
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
    locale: str | None = None,
) -> HTMLResponse:
    """The one-message page in `locale` (None: `settings.locale`; `heading` and `text` come
    already in it); rendered once per message, language and settings, then only given this
    request's nonce ("check your inbox" answers every sign-up: rendering it each time cost
    as much as storing the sign-up)."""
    settings = settings.for_locale(locale)
    env = _environment(settings.templates_dir, os.getcwd())
    context = render.base_context(settings)
    key = (
        env,
        settings.locale,
        heading,
        text,
        error,
        tuple(sorted((k, repr(v)) for k, v in context.items())),
    )
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

# Why a link does not work, as the token code and the sign-up say it (digest.core.tokens,
# digest.readers.signup), and the sentence a reader reads for it, in any language.
_LINK_REASONS = {
    "this link is not valid": N_("This link is not valid."),
    "this link has expired": N_("This link has expired."),
    "no signing key exists yet, so no link can verify": N_(
        "No signing key exists yet, so no link can verify."
    ),
    "this subscription was cancelled after the link was sent; subscribe again to get a new link": (
        N_(
            "This subscription was cancelled after the link was sent; subscribe again to get "
            "a new link."
        )
    ),
}


def bad_link(request: Request, settings: Settings, reason: str) -> HTMLResponse:
    """The page (400) of a link that cannot be acted on, saying why in the newsletter's language
    (whose link it is cannot be known). A reason without a sentence of its own is shown as it
    is in English, and as a general sentence in another language."""
    gettext = translations(settings.locale).gettext
    known = _LINK_REASONS.get(reason)
    if known is not None:
        text = gettext(known)
    elif settings.locale == SOURCE_LOCALE:
        text = reason[:1].upper() + reason[1:] + "."
    else:
        text = gettext("This link cannot be used.")
    return message(
        request, settings, gettext("This link does not work"), text, error=True, status_code=400
    )


def refusal_text(settings: Settings, refusal: NotResubscribable) -> str:
    """Why a "subscribe again" cannot be done, in `settings.locale`, and for an address the
    provider stopped, who to write to (a link cannot undo a bounce or a complaint)."""
    gettext = translations(settings.locale).gettext
    address = settings.reply_to or settings.sender_email
    if refusal.why == "bounced":
        return gettext(
            "Mail to this address bounced, so the mail provider stopped our sending to it; a "
            "link cannot undo that. To have it restored, write to %(address)s."
        ) % {"address": address}
    if refusal.why == "complained":
        return gettext(
            "One of our mails to this address was reported as spam, so we stopped sending to it "
            "for good; a link cannot undo that. To have it restored, write to %(address)s."
        ) % {"address": address}
    return gettext(
        "This address is no longer on our list at all, so there is nothing to restore; "
        "subscribe with the form to start again."
    )


def refused_again(request: Request, settings: Settings, refusal: NotResubscribable) -> HTMLResponse:
    """The answer (409) to a "subscribe again" that cannot be done, saying why; the subscribe
    form is offered only to an erased address (it leaves a bounced or complained one be)."""
    answer = page(
        request,
        settings,
        "message",
        heading=translations(settings.locale).gettext(
            "This address cannot be subscribed again here"
        ),
        message=refusal_text(settings, refusal),
        error=True,
        home_link=refusal.why == "erased",
    )
    answer.status_code = 409
    return answer


def resubscribe_notice(settings: Settings, subscription: Subscription) -> str:
    """What a "subscribe again" that started a new double opt-in says, in `settings.locale`:
    where the link went."""
    gettext = translations(settings.locale).gettext
    address = mask(subscription.subscriber.email)
    if subscription.mail is not None:
        return gettext(
            "We sent a confirmation link to %(address)s. Open it to get the newsletter again; "
            "nothing arrives until you do."
        ) % {"address": address}
    return gettext(
        "A confirmation link went to %(address)s a little while ago. Open it to get the "
        "newsletter again; nothing arrives until you do."
    ) % {"address": address}
