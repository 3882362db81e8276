"""The mail a send makes of a stored issue: which issues can be sent, and each reader's copy.

One place builds a reader's links and headers, so the issue, a test send, the check's sample and
the welcome mail all carry the same unsubscribe and preference links as the real send.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from functools import lru_cache

from sqlalchemy import Engine

from digest.config import Settings
from digest.core import reader_links as subscriber_links
from digest.core.headers import safe_display_name
from digest.core.mails import PLACEHOLDERS, Message, Recipient
from digest.core.tracking import (
    MarkedBodies,
    click_marker,
    click_tokens,
    mark_links,
    tracking_key,
)
from digest.core.urls import Urls
from digest.model.issue import IssueRecord
from digest.model.weeks import IsoWeek
from digest.store.issues import get_issue

__all__ = [
    "SENDABLE",
    "SendError",
    "click_substitutions",
    "issue_message",
    "issue_recipient",
    "sendable_issue",
    "subscriber_id",
    "subscriber_recipient",
]

# The statuses an issue with rendered content can be sent (or resumed, or re-tried) in.
SENDABLE = ("built", "sending", "paused", "failed", "sent")


class SendError(Exception):
    """The issue cannot be sent as asked (missing, not built, or a bad test address)."""


def sendable_issue(engine: Engine, week: IsoWeek) -> IssueRecord:
    """`week`'s issue if it can be sent; SendError says why not (and what to run first)."""
    issue = get_issue(engine, week)
    if issue is None:
        raise SendError(f"there is no issue for {week}; build it first (`digest build`)")
    if issue.status not in SENDABLE:
        raise SendError(f"issue {week} is {issue.status}; only a built issue can be sent")
    if issue.html is None or issue.text is None or issue.subject is None:
        raise SendError(f"issue {week} has no rendered content; build it first (`digest build`)")
    return issue


def subscriber_recipient(
    settings: Settings,
    subscriber_id: int,
    email: str,
    name: str | None,
    *,
    extra: Mapping[str, str] | None = None,
    tracking_opt_out: bool = False,
) -> Recipient:
    """A subscriber as a recipient of any list mail (the weekly issue, the welcome mail): their
    own unsubscribe and preference links in the placeholders, and RFC 8058 one-click headers.

    `extra`: more markers of this mail (an issue's click links, `issue_recipient`).
    `tracking_opt_out`: the reader said no to tracking; it rides on the Recipient so the
    transport asks its provider for no pixel in the request that holds them.
    Raises HeaderError for an address no mail header can hold; the send records that reader
    refused and goes on with the rest.
    """
    # A name stored before today's rules (an encoded-word, a bidi override) is left out of the
    # header, subject and greeting instead of stopping the batch: the reader still gets the mail.
    name = safe_display_name(name)
    unsubscribe_url, preferences_url = subscriber_links.list_links(settings, subscriber_id, email)
    list_unsubscribe = f"<{unsubscribe_url}>"
    if settings.unsubscribe_mailto:
        mailbox = settings.unsubscribe_mailto.removeprefix("mailto:")
        list_unsubscribe += f", <mailto:{mailbox}?subject=unsubscribe>"
    substitutions = {
        _UNSUBSCRIBE: unsubscribe_url,
        _PREFERENCES: preferences_url,
        _NAME: name or "",
        _NAME_HTML: html.escape(name) if name else "",
    }
    if extra:
        substitutions.update(extra)
    return Recipient(
        email=email,
        name=name,
        substitutions=substitutions,
        # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" to the https URL.
        headers={"List-Unsubscribe": list_unsubscribe, "List-Unsubscribe-Post": _ONE_CLICK},
        custom_args={"subscriber_id": str(subscriber_id)},
        tracking_opt_out=tracking_opt_out,
    )


_UNSUBSCRIBE = PLACEHOLDERS["unsubscribe_url"]
_PREFERENCES = PLACEHOLDERS["preferences_url"]
_NAME = PLACEHOLDERS["name"]
_NAME_HTML = PLACEHOLDERS["name_html"]
_ONE_CLICK = "List-Unsubscribe=One-Click"


def issue_recipient(
    settings: Settings,
    issue: IssueRecord,
    subscriber_id: int,
    email: str,
    name: str | None,
    *,
    tracking_opt_out: bool,
) -> Recipient:
    """A reader of `issue`'s weekly mail: `subscriber_recipient` with the issue's click links
    (`click_substitutions`). Raises HeaderError as that does."""
    clicks = click_substitutions(settings, issue, subscriber_id, tracked=not tracking_opt_out)
    return subscriber_recipient(
        settings, subscriber_id, email, name, extra=clicks, tracking_opt_out=tracking_opt_out
    )


def click_substitutions(
    settings: Settings, issue: IssueRecord, subscriber_id: int, *, tracked: bool
) -> dict[str, str]:
    """The values of `issue`'s click markers for one reader: their own /r/<token> per link when
    `tracked`, else each link's own target, so their mail is the untracked one byte for byte.
    Empty when the issue's mail carries no markers (tracking off, or an issue without links)."""
    marked = _marked(settings, issue)
    if marked is None or issue.links is None:
        return {}
    if not tracked:
        values = {click_marker(i): link for i, link in enumerate(issue.links)}
        for i, written in marked.html_forms.items():
            values[click_marker(i, html=True)] = written
        return values
    key, prefix = tracking_key(settings), Urls.from_settings(settings).click("")
    markers = _click_markers(len(issue.links))
    tokens = click_tokens(key, issue.id, len(markers), subscriber_id)
    values = {marker: prefix + token for marker, token in zip(markers, tokens, strict=True)}
    for i in marked.html_forms:
        values[click_marker(i, html=True)] = values[markers[i]]
    return values


@lru_cache(maxsize=8)
def _click_markers(count: int) -> tuple[str, ...]:
    return tuple(click_marker(i) for i in range(count))


def _marked(settings: Settings, issue: IssueRecord) -> MarkedBodies | None:
    """`issue`'s mail with its tracked links as markers, or None when no link is tracked: click
    tracking off (the mail goes as built), or an issue built without links."""
    if not settings.track_clicks or not issue.links or issue.html is None or issue.text is None:
        return None
    return _marked_bodies(issue.html, issue.text, issue.links)


@lru_cache(maxsize=8)
def _marked_bodies(html: str, text: str, links: tuple[str, ...]) -> MarkedBodies:
    # Once per issue, not per batch or reader: a send asks for every recipient.
    return mark_links(html, text, links)


def issue_message(
    settings: Settings,
    issue: IssueRecord,
    recipients: Sequence[Recipient],
    key: str | None,
    *,
    subject_prefix: str = "",
) -> Message:
    """`issue` as one `Message` to `recipients`, named `key` at the provider (None: a test send,
    which no ledger batch stands behind)."""
    if issue.html is None or issue.text is None or issue.subject is None:
        raise SendError(f"issue {issue.week} has no rendered content; build it first")
    body_html, body_text = issue.html, issue.text
    marked = _marked(settings, issue)
    if marked is not None:
        body_html, body_text = marked.html, marked.text
    custom_args = {"issue_week": str(issue.week)}
    if key is not None:
        custom_args["batch_key"] = key
    return Message(
        subject=subject_prefix + issue.subject,
        html=body_html,
        text=body_text,
        recipients=recipients,
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
        categories=("digest", f"digest-{issue.week}"),
        custom_args=custom_args,
        batch_key=key,
    )


def subscriber_id(recipient: Recipient) -> int:
    """The subscriber a recipient built by `subscriber_recipient` stands for."""
    return int(recipient.custom_args["subscriber_id"])
