"""Mails as data: a rendered `Message` for a batch of `Recipient`s, and the per-recipient markers.

One render serves every subscriber: each recipient carries its own substitutions and headers.
`fill_markers` is the one placeholder substitution (the outbox, SendGrid and the checks agree).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from digest.core.headers import check_header_value

__all__ = ["MARKER_RE", "PLACEHOLDERS", "Message", "Recipient", "fill_markers"]

# Per-subscriber values are left in the rendered issue as these markers and filled per recipient
# at send time (SendGrid substitutions, or string replacement in the outbox). `name_html` is the
# HTML-escaped name for the HTML part; `name` is the raw name for subject and text.
PLACEHOLDERS: dict[str, str] = {
    "unsubscribe_url": "%%unsubscribe_url%%",
    "preferences_url": "%%preferences_url%%",
    "name": "%%name%%",
    "name_html": "%%name_html%%",
}


# Any marker, known or not: the checks look for unknown ones with the same pattern.
MARKER_RE = re.compile(r"%%[A-Za-z0-9_.-]*%%")


def fill_markers(body: str, values: Mapping[str, str]) -> str:
    """`body` with each marker replaced by its value, in one pass, as SendGrid substitutes.

    One function for the outbox and the quality checks alike, so the check tests the
    substitution the mail really gets; a value is never scanned for markers again (a name
    written as `%%unsubscribe_url%%` stays that text).
    """
    return MARKER_RE.sub(lambda m: values.get(m[0], m[0]), body)


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    name: str | None = None
    # placeholder marker → value, e.g. {"%%unsubscribe_url%%": "https://…/unsubscribe/TOKEN"}
    substitutions: Mapping[str, str] = field(default_factory=dict)
    # per-recipient headers, e.g. List-Unsubscribe with this recipient's own token
    headers: Mapping[str, str] = field(default_factory=dict)
    # echoed back by the provider's events (issue week, subscriber id)
    custom_args: Mapping[str, str] = field(default_factory=dict)
    # The reader said no to tracking: no provider pixel may reach them (see delivery.sendgrid).
    tracking_opt_out: bool = False

    def __post_init__(self) -> None:
        check_header_value("to", self.email)
        if self.name is not None:
            check_header_value("name", self.name)
        for key, value in self.headers.items():
            check_header_value(key, value)


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    html: str
    text: str
    recipients: Sequence[Recipient]
    from_email: str
    from_name: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    categories: Sequence[str] = ()
    # echoed back by every recipient's events (issue week, batch key)
    custom_args: Mapping[str, str] = field(default_factory=dict)
    # Names this batch at the provider so a resumed send can ask whether it went out
    # (`Transport.lookup_batch`); None for one-off mails such as confirmations.
    batch_key: str | None = None

    def __post_init__(self) -> None:
        check_header_value("subject", self.subject)
        check_header_value("from", self.from_email)
        if self.from_name:
            check_header_value("from name", self.from_name)
        if self.reply_to:
            check_header_value("reply-to", self.reply_to)
        for key, value in self.headers.items():
            check_header_value(key, value)
