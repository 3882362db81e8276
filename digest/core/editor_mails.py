"""The mails digest sends its editors: the notice that an issue is built and waits for approval.

A pure builder, as `reader_mails` is for readers: the settings, the issue, the editor and the
send time come in, a plain-text `Message` goes out; finding editors and sending is the campaign's.
"""

from __future__ import annotations

import html
from datetime import datetime

from digest.config import Settings
from digest.core.headers import safe_display_name
from digest.core.mails import Message, Recipient
from digest.core.urls import Urls
from digest.model.editor import Editor
from digest.model.issue import IssueRecord

__all__ = ["approval_notice", "issue_title"]


def issue_title(issue: IssueRecord) -> str:
    """The featured term's title as the snapshot froze it (its slug for an issue without one),
    on one line: it goes into a subject."""
    title = (
        issue.snapshot["term"].get("title") if issue.snapshot and "term" in issue.snapshot else None
    )
    return " ".join(str(title or issue.featured_slug).split())


def approval_notice(
    settings: Settings, issue: IssueRecord, editor: Editor, *, send_at: datetime | None
) -> Message:
    """The notice that `issue` is built and goes out only once approved: when it is due
    (`send_at`, in the configured zone; None: no scheduled send), the desk's preview link, and
    the command that approves it from a terminal."""
    week = issue.week
    title = issue_title(issue)
    when = (
        f"It is due to go out {send_at.astimezone(settings.zone):%A %d %B %Y at %H:%M %Z}"
        + (" (that hour in each reader's own time zone)" if settings.local_time_delivery else "")
        + "."
        if send_at is not None
        else "It has no scheduled send time."
    )
    paragraphs = [
        f"Hello {editor.name or editor.email},",
        f"the {settings.newsletter_name} issue for {week} is built: {title}.",
        when
        + " It is sent only once an editor approves it; unapproved at its send time, it is held"
        " (not sent) until someone does.",
        f"Preview it and approve or hold it in the desk:\n{Urls.from_settings(settings).desk_issue(week)}",
        f"Or from a terminal:\n  digest preview --week {week}\n  digest issue approve {week}\n"
        f'  digest issue hold {week} --reason "..."',
        "You get this mail because you are an editor of this newsletter.",
    ]
    text = "\n\n".join(paragraphs) + "\n"
    body = "".join("<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>\n" for p in paragraphs)
    return Message(
        subject=f"Please approve {week}: {title}",
        html=f'<!doctype html><html lang="en"><body>\n{body}</body></html>\n',
        text=text,
        recipients=[Recipient(email=editor.email, name=safe_display_name(editor.name))],
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
        categories=["editor-notice"],
    )
