"""Editors changing one issue by hand: its subject line and inbox preview (preheader).

The override belongs to the week: it is stored beside the issue, the stored mail is rendered
again from the frozen snapshot with it, and every later rebuild keeps it (`campaign.build`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from digest.campaign.build import check_rendered
from digest.config import Settings
from digest.core.render import RenderError, render_issue
from digest.core.term_rules import PREHEADER_MAX_LENGTH, SUBJECT_MAX_LENGTH, mail_line
from digest.model.issue import IssueRecord
from digest.model.snapshot import SnapshotVersionError, check_snapshot_version
from digest.model.weeks import IsoWeek
from digest.store import audit
from digest.store.issues import InvalidTransition, get_issue, save_subject

__all__ = ["EditError", "set_subject"]


class EditError(ValueError):
    """An edit an editor asked for cannot be made; the message is what they see."""


def set_subject(
    engine: Engine,
    settings: Settings,
    week: IsoWeek,
    *,
    subject: str | None,
    preheader: str | None,
    actor: str,
    now: datetime,
) -> IssueRecord:
    """Set `week`'s subject and/or preheader; return the stored issue.

    None leaves a line as it is; "" puts it back to the default (the term file's own
    `subject:` / `preheader:`, else the built-in one). A built issue's stored mail is rendered
    again so its subject, preheader, HTML and text agree, and its approval is withdrawn: the
    mail an editor approved changed. An issue not built yet keeps the lines for its build.
    Written to the audit log as "issue.subject". EditError for an unknown week, an issue whose
    sending started, or a line that is blank, too long or holds a line break.
    """
    record = get_issue(engine, week)
    if record is None:
        raise EditError(
            f"there is no issue for {week}; build it first (`digest build --week {week}`)"
        )
    if record.send_started_at is not None or not record.can_rebuild:
        raise EditError(
            f"issue {week} is {record.status}; its subject is frozen once sending starts"
        )
    new_subject = _line("subject", subject, record.subject_override, SUBJECT_MAX_LENGTH)
    new_preheader = _line("preheader", preheader, record.preheader_override, PREHEADER_MAX_LENGTH)
    content = None
    if record.snapshot and record.html is not None:
        try:
            check_snapshot_version(record)
            rendered = render_issue(
                record.snapshot, settings, subject=new_subject, preheader=new_preheader
            )
        except (SnapshotVersionError, RenderError) as exc:
            raise EditError(f"issue {week} cannot be rendered again: {exc}") from exc
        problems = check_rendered(rendered)
        if problems:
            raise EditError(
                f"issue {week} with this subject fails its checks: {'; '.join(problems)}"
            )
        content = {
            "subject": rendered.subject,
            "preheader": rendered.preheader,
            "html": rendered.html,
            "text": rendered.text,
            "archive_html": rendered.archive_html,
        }
    try:
        stored = save_subject(
            engine,
            week,
            built_at=record.built_at,
            subject_override=new_subject,
            preheader_override=new_preheader,
            content=content,
            now=now,
        )
    except InvalidTransition as exc:
        raise EditError(str(exc)) from exc
    audit.record(
        engine,
        actor=actor,
        action="issue.subject",
        target=str(week),
        detail=_detail(record, stored),
        now=now,
    )
    return stored


def _line(field: str, given: str | None, current: str | None, limit: int) -> str | None:
    """The override to store for one line: `current` when not given, None for "" (the
    default), else the given text checked by the term files' own rule for the field."""
    if given is None:
        return current
    if given == "":
        return None
    try:
        return mail_line(given, limit)
    except ValueError as exc:
        raise EditError(f"{field}: {exc}") from None


def _detail(before: IssueRecord, after: IssueRecord) -> str:
    """What changed, old → new, for the audit log: the lines as the mail has them (an issue
    not built yet has only its overrides; "default" is no override)."""
    parts = []
    for field in ("subject", "preheader"):
        old, new = (_shown(r, field) for r in (before, after))
        if old != new:
            parts.append(f"{field}: {old} → {new}")
    if before.approved and not after.approved:
        parts.append("approval withdrawn")
    return "; ".join(parts) or "unchanged"


def _shown(record: IssueRecord, field: str) -> str:
    line = getattr(record, field) or getattr(record, f"{field}_override")
    return "default" if line is None else repr(line)
