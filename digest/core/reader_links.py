"""The signed links a reader follows: confirm, unsubscribe, preferences.

A token and an address in one call: the token from `digest.core.tokens`, the address from the one
URL builder (`digest.core.urls`); the confirmation mail, the welcome mail and the weekly sender
all take their links from here.
"""

from __future__ import annotations

from digest.config import Settings
from digest.core.tokens import Purpose, make_token
from digest.core.urls import Urls

__all__ = ["confirm_url", "preferences_url", "unsubscribe_url"]


def confirm_url(settings: Settings, subscriber_id: int, email: str) -> str:
    """The link in the confirmation mail (expires after `confirm_max_age`)."""
    return _link(settings, "confirm", subscriber_id, email)


def unsubscribe_url(settings: Settings, subscriber_id: int, email: str) -> str:
    """The unsubscribe link and List-Unsubscribe target; it never expires, old mails keep working."""
    return _link(settings, "unsubscribe", subscriber_id, email)


def preferences_url(settings: Settings, subscriber_id: int, email: str) -> str:
    """The preference centre's link in every list mail (never expires, as unsubscribe)."""
    return _link(settings, "preferences", subscriber_id, email)


def _link(settings: Settings, purpose: Purpose, subscriber_id: int, email: str) -> str:
    return Urls.from_settings(settings).token_link(
        purpose, make_token(settings, purpose, subscriber_id, email)
    )
