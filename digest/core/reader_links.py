"""The signed links a reader follows: confirm, unsubscribe, preferences.

A token and an address in one call: the token from `digest.core.tokens`, the address from the one
URL builder (`digest.core.urls`); the confirmation mail, the welcome mail and the weekly sender
all take their links from here.
"""

from __future__ import annotations

from functools import lru_cache

from digest.config import Settings
from digest.core.tokens import Purpose, make_token, reader_tokens
from digest.core.urls import Urls

__all__ = ["confirm_url", "list_links", "preferences_url", "unsubscribe_url"]


def confirm_url(settings: Settings, subscriber_id: int, email: str) -> str:
    """The link in the confirmation mail (expires after `confirm_max_age`)."""
    return _link(settings, "confirm", subscriber_id, email)


def unsubscribe_url(settings: Settings, subscriber_id: int, email: str) -> str:
    """The unsubscribe link and List-Unsubscribe target; it never expires, old mails keep working."""
    return _link(settings, "unsubscribe", subscriber_id, email)


def preferences_url(settings: Settings, subscriber_id: int, email: str) -> str:
    """The preference centre's link in every list mail (never expires, as unsubscribe)."""
    return _link(settings, "preferences", subscriber_id, email)


def list_links(settings: Settings, subscriber_id: int, email: str) -> tuple[str, str]:
    """(unsubscribe_url, preferences_url): the pair every list mail carries, as those two make
    them, for the cost of one (a send asks for it once per reader)."""
    unsubscribe, preferences = reader_tokens(settings, subscriber_id, email)
    unsubscribe_prefix, preferences_prefix = _list_prefixes(settings.base_url)
    return unsubscribe_prefix + unsubscribe, preferences_prefix + preferences


@lru_cache(maxsize=8)
def _list_prefixes(base_url: str) -> tuple[str, str]:
    urls = Urls(base_url, "")
    return urls.token_prefix("unsubscribe"), urls.token_prefix("preferences")


def _link(settings: Settings, purpose: Purpose, subscriber_id: int, email: str) -> str:
    return Urls.from_settings(settings).token_link(
        purpose, make_token(settings, purpose, subscriber_id, email)
    )
