"""Reading what a person typed: the subscribe fields from a form or JSON, checked storable.

A refused value is shown back printable and a stored address only masked, so neither a bad
byte nor a shared link shows more than it should. Why a value was refused is said in the page's
language: a reason marked for the catalogue (`i18n.N_`) is translated, and one that is not (an
email library's own words, a reason with a value in it) leaves a general sentence in its place.
"""

from __future__ import annotations

from fastapi import Request

from digest.core.i18n import N_, SOURCE_LOCALE, translations
from digest.model.subscriber import InvalidSubscriber
from digest.web.limits import FORM_LIMITS

__all__ = [
    "form_fields",
    "invalid_message",
    "invalid_reason",
    "is_json",
    "json_fields",
    "mask",
    "printable",
    "storable_text",
]

_JSON_TYPES = ("application/json",)
_FIELDS = ("email", "name", "timezone")


def is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() in _JSON_TYPES


async def form_fields(request: Request) -> dict[str, str]:
    form = await request.form(**FORM_LIMITS)
    return {key: _text(form.get(key)) for key in _FIELDS}


async def json_fields(request: Request) -> dict[str, str]:
    """The subscribe fields of a JSON object; ValueError, saying what is wrong, for anything else."""
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # json.loads gives up on "[[[[…" with RecursionError
        raise ValueError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValueError('send a JSON object such as {"email": "ann@example.org"}')
    fields: dict[str, str] = {}
    for key in _FIELDS:
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        fields[key] = value or ""
    return fields


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def storable_text(field: str, value: str) -> str:
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
            field,
            N_("it holds a lone surrogate code point (such as \\udc00); send valid Unicode text"),
        ) from None
    if "\ufffd" in value:
        raise InvalidSubscriber(
            field,
            N_(
                "it holds U+FFFD, the mark of bytes that were not valid UTF-8; send the text as UTF-8"
            ),
        )
    return value


def printable(value: str) -> str:
    """`value` with what UTF-8 cannot encode replaced, to show a refused value back safely."""
    return value.encode("utf-8", "replace").decode("utf-8")


# Per field: the sentence with the reason, and the one without (a reason not in the catalogue).
_INVALID = {
    "email": (
        N_("That email address is not valid: %(reason)s"),
        N_("That email address is not valid."),
    ),
    "name": (N_("The name is not valid: %(reason)s"), N_("The name is not valid.")),
    "timezone": (N_("The timezone is not valid: %(reason)s"), N_("The timezone is not valid.")),
    "language": (N_("The language is not valid: %(reason)s"), N_("The language is not valid.")),
}


def invalid_message(exc: InvalidSubscriber, locale: str = SOURCE_LOCALE) -> str:
    """What a form says about a refused value, in `locale`: which field, and why."""
    gettext = translations(locale).gettext
    reason = _reason(exc, locale)
    with_reason, without = _INVALID.get(exc.field, (None, None))
    if with_reason is None or without is None:  # a field no form of the pages has
        if reason is None:
            return gettext("This value cannot be stored.")
        if locale == SOURCE_LOCALE:
            return f"The {exc.field} is not valid: {reason}"
        return gettext("This value cannot be stored: %(reason)s") % {"reason": reason}
    if reason is None:
        return gettext(without)
    return gettext(with_reason) % {"reason": reason}


def invalid_reason(exc: InvalidSubscriber, locale: str = SOURCE_LOCALE) -> str:
    """The reason alone as a sentence in `locale` ("Only an active subscription can be paused"),
    for a form whose field needs no naming."""
    reason = _reason(exc, locale)
    if reason is None:
        return translations(locale).gettext("This value cannot be stored.")
    return reason[:1].upper() + reason[1:]


def _reason(exc: InvalidSubscriber, locale: str) -> str | None:
    """`exc`'s reason in `locale`; None when it has no translation there (English has all)."""
    if locale == SOURCE_LOCALE:
        return exc.reason
    translated = translations(locale).gettext(exc.reason)
    return translated if translated != exc.reason else None


def mask(email: str) -> str:
    """`a…@example.org`: enough to recognise one's address, not to read it off a shared link."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}…@{domain}"
