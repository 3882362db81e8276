"""What a reader types, made fit to store: the address, the display name, the time zone, the
language.

Pure checks shared by the web form, the CLI and the CSV import, so every door refuses the same
input with the same words (`InvalidSubscriber` names the field and says why). A fixed reason is
marked for the catalogue (`N_`), so a page can say it in its reader's language.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from digest.core.headers import display_name_problem
from digest.core.i18n import N_, available_locales
from digest.model.subscriber import InvalidSubscriber

__all__ = ["TIMEZONE_MAX", "clean_language", "clean_name", "clean_timezone", "normalise_email"]

TIMEZONE_MAX = 64


def normalise_email(raw: str) -> str:
    """The address as stored: validated (syntax only, no DNS), normalised, lower-cased.

    An internationalised domain is kept in Unicode (`dave@exämple.com`, typed either way) and
    goes out in punycode (`digest.core.headers.ascii_address`). A non-ASCII local part is refused
    here: it needs SMTPUTF8 end to end, SendGrid drops such mail silently, and an address
    digest accepted but cannot deliver would look subscribed and never get a mail.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidSubscriber("email", N_("an email address is required"))
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        message = str(exc)
        if "before the @-sign" in message and not text.partition("@")[0].isascii():
            message = N_(
                "addresses with non-ASCII characters before the @ (SMTPUTF8) cannot be "
                "delivered by digest's mail services; please use an ASCII address"
            )
        raise InvalidSubscriber("email", message) from None
    return checked.normalized.lower()


def clean_name(raw: str | None) -> str | None:
    """An optional display name: trimmed, and refused when it breaks `digest.core.headers`' rules.

    Names go into mail headers (To:), subjects and greetings, so anything that could break a
    header or hide text is refused rather than silently stripped: controls, line breaks, bidi
    overrides and RFC 2047 encoded-words (which mail software would decode into them).
    """
    if raw is None:
        return None
    name = raw.strip()
    if not name:
        return None
    problem = display_name_problem(name)
    if problem is not None:
        raise InvalidSubscriber("name", problem)
    return name


def clean_timezone(raw: str | None) -> str | None:
    """An IANA zone name such as `Europe/Amsterdam`, or None when empty."""
    zone = (raw or "").strip()
    if not zone:
        return None
    if len(zone) > TIMEZONE_MAX:
        raise InvalidSubscriber("timezone", f"at most {TIMEZONE_MAX} characters")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSubscriber("timezone", f"unknown IANA time zone {zone!r}") from None
    return zone


def clean_language(raw: str | None) -> str | None:
    """A language digest has a catalogue for (`nl`), or None when empty.

    Case does not matter, and a regional tag is read for its language (`nl-BE`, `NL_nl` → `nl`):
    a CSV from another tool names languages so. A language without a catalogue is refused
    rather than stored, since the reader would silently get another language.
    """
    value = (raw or "").strip()
    if not value:
        return None
    available = {code.lower(): code for code in available_locales()}
    whole = value.replace("-", "_").lower()
    for candidate in (whole, whole.partition("_")[0]):
        if candidate in available:
            return available[candidate]
    raise InvalidSubscriber(
        "language", f"no catalogue for {value[:20]!r}; one of {', '.join(available.values())}"
    )
