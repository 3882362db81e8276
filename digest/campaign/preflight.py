"""The check a built issue passes before it is sent (`digest check`, the build, the send).

It gathers what the pure gates in `digest.core.checks` look at — the stored mail and page, the first
batch's real per-recipient messages from the send's own code, the feed — from the database;
`send_gate` is the form a send takes it in, so delivery never needs to know this module.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from functools import partial

from sqlalchemy import Engine

from digest.config import Settings
from digest.core.checks import (
    check_email,
    check_message,
    check_page,
    check_subject,
    email_warnings,
)
from digest.core.feed import render_feeds
from digest.core.feed_checks import check_feeds
from digest.delivery.outbox import mime_bytes
from digest.delivery.personalise import SendError
from digest.delivery.runner import Preflight
from digest.delivery.samples import sample_message
from digest.logs import get_logger, log_event
from digest.model.issue import IssueRecord
from digest.model.snapshot import snapshot_problem
from digest.model.weeks import IsoWeek
from digest.store.issues import InvalidTransition, get_issue, list_issues, transition

__all__ = ["SAMPLE_SIZE", "check_issue", "send_gate"]

log = get_logger("digest.campaign.preflight")

# Recipients of the first batch whose messages are built and checked: enough to catch a
# per-subscriber fault (a name, an address) without signing a thousand tokens.
SAMPLE_SIZE = 20


def check_issue(
    engine: Engine,
    settings: Settings,
    week: IsoWeek,
    *,
    now: datetime,
    sample: int = SAMPLE_SIZE,
    notes: list[str] | None = None,
) -> list[str]:
    """Every problem that should stop `week`'s issue from going out; an empty list means fine.

    - the mail: HTML under Gmail's clip size, `lang` set, links absolute, images with alt, no
      text under 3:1 contrast, a non-trivial text part, the unsubscribe link in both parts
      (`checks.check_email`);
    - its archive page (`checks.check_page`);
    - the messages of the first batch for up to `sample` subscribers (a stand-in when there are
      none), built by the sender: List-Unsubscribe and List-Unsubscribe-Post on each, every
      marker given a value, unsubscribe and preferences links that verify, and each message as
      written out and read back by a mail client (`checks.check_message`);
    - the RSS, Atom and JSON feeds with this issue in them are valid (`feed_checks`).

    What is worth saying but must not stop the issue (a sampled reader whose address no
    transport can write: the send records them refused; a subject longer than
    `subject_warn_length`; a text under WCAG AA's contrast but at 3:1 or more, a mail close to
    the clip size: `checks.email_warnings`) is appended to `notes`.
    """
    issue = get_issue(engine, week)
    if issue is None:
        return [f"there is no issue for {week}; build it first (`digest build`)"]
    if issue.html is None or issue.text is None or issue.subject is None:
        return [f"issue {week} is {issue.status} and has no content; build it first"]
    unreadable = snapshot_problem(issue)
    if unreadable is not None:  # resends and the feed render from the snapshot
        return [unreadable]
    if notes is not None:
        notes.extend(check_subject(issue.subject, settings.subject_warn_length, str(week)))
        notes.extend(email_warnings(issue.html))
    problems = list(check_email(issue.html, issue.text))
    if issue.archive_html is not None:
        problems.extend(f"archive page: {p}" for p in check_page(issue.archive_html))
    try:
        message = sample_message(engine, settings, week, limit=sample, now=now)
    except (SendError, ValueError) as exc:  # ValueError: a header the Message refused
        problems.append(f"cannot build the messages: {exc}")
    else:
        serialise = partial(mime_bytes, now=now)
        problems.extend(check_message(settings, message, serialise=serialise, notes=notes))
    public = {r.week: r for r in list_issues(engine, statuses=["sent"], limit=settings.feed_items)}
    if notes is not None:
        notes.extend(
            f"the feed leaves out {r.week}: {why}"
            for r in public.values()
            if (why := snapshot_problem(r)) is not None
        )
    public[issue.week] = issue
    problems.extend(check_feeds(render_feeds(settings, list(public.values()), now)))
    return problems


def send_gate(engine: Engine, settings: Settings) -> Preflight:
    """`check_issue` as a send's `preflight`: the problems as one refusal reason, or None.

    A refused issue stays built, sendable once fixed, with the reason shown in `digest status`.
    """

    def gate(issue: IssueRecord, now: datetime) -> str | None:
        problems = check_issue(engine, settings, issue.week, now=now)
        if not problems:
            return None
        shown = "; ".join(problems[:5]) + ("; …" if len(problems) > 5 else "")
        reason = (
            f"the issue check found {len(problems)} problem{'s' * (len(problems) != 1)}: "
            f"{shown} (run `digest check --week {issue.week}`)"
        )
        if issue.status == "built":
            # built → built keeps it sendable and shows the reason in `digest status`; if
            # another process moved it on meanwhile, that run decides.
            with contextlib.suppress(InvalidTransition):
                transition(engine, issue.week, "built", reason, now=now)
        log_event(
            log, "send_refused", level=logging.WARNING, week=str(issue.week), problems=problems
        )
        return reason

    return gate
