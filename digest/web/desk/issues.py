"""/admin/issues and /admin/issues/<week>: the coming and past issues; one issue's preview as a
sample reader gets it, its subject and preheader, a test copy, approve / hold, build, send now.

Every change goes through the campaign layer (editing, approval, lifecycle), which also writes
the audit log; the preview is the send's own message with the links filled in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from digest.campaign import approval, editing
from digest.campaign.engagement import issue_stats
from digest.campaign.lifecycle import prepare
from digest.campaign.plan import usable_glossary
from digest.config import Settings
from digest.core.checks import QualityError
from digest.core.mails import fill_markers
from digest.core.render import RenderError
from digest.delivery import make_transport
from digest.delivery.personalise import SendError, issue_message, issue_recipient
from digest.model.issue import IssueRecord
from digest.model.weeks import IsoWeek, current_week, parse_week
from digest.store import audit, db
from digest.store.deliveries import issue_deliveries
from digest.store.issues import get_issue, list_issues
from digest.web.deps import EngineDep, SettingsDep
from digest.web.desk.numbers import issue_panel, percent
from digest.web.desk.sending import SendRunner
from digest.web.desk.session import DeskUser, EditorDep, checked_form
from digest.web.desk.views import coming, desk_page, local_time
from digest.web.limits import FORM_LIMITS, GetAlsoHead

__all__ = ["preview_html", "router"]

router = APIRouter(route_class=GetAlsoHead, form_limits=FORM_LIMITS)

_COMING = 8
_PAST = 30
# Who the preview is addressed to: never a real reader, whose links would be theirs alone.
_SAMPLE = ("sample@example.org", "Sample Reader")


def preview_html(settings: Settings, issue: IssueRecord) -> str:
    """The issue's HTML as the send builds it for one (stand-in) reader, links filled in."""
    # Untracked: an editor's click in the preview must not count as a reader's.
    reader = issue_recipient(settings, issue, 0, *_SAMPLE, tracking_opt_out=True)
    message = issue_message(settings, issue, [reader], None)
    return fill_markers(message.html, reader.substitutions)


@router.get("/admin/issues")
def issues_page(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    planned = coming(engine, settings, start=None, weeks=_COMING)
    shown = {p.week for p in planned}
    # Past: every other issue, this week's sent one too (the plan starts after it).
    past = [i for i in list_issues(engine, limit=_PAST + _COMING) if i.week not in shown]
    return desk_page(request, settings, user, "issues", coming=planned, past=past[:_PAST])


@router.get("/admin/issues/{week}")
def issue_page(
    request: Request, week: str, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    view = request.query_params.get("view", "desktop")
    return _page(request, settings, engine, user, _week(week), view=view)


@router.post("/admin/issues/{week}/subject")
async def issue_subject(
    request: Request, week: str, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    form = await checked_form(request, user)
    iso = _week(week)

    def change() -> str:
        editing.set_subject(
            engine,
            settings,
            iso,
            subject=_text(form.get("subject")),
            preheader=_text(form.get("preheader")),
            actor=user.editor.email,
            now=db.utcnow(),
        )
        return "Saved the subject and preheader."

    return await _act(request, settings, engine, user, iso, change)


@router.post("/admin/issues/{week}/approve")
async def issue_approve(
    request: Request, week: str, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    await checked_form(request, user)
    iso = _week(week)

    def change() -> str:
        now = db.utcnow()
        issue = approval.approve(engine, settings, iso, actor=user.editor.email, now=now)
        # The same words as `digest issue approve`: whether it goes at its time or needs a send.
        return f"Approved {iso}: {approval.after_approval(settings, issue, now)}."

    return await _act(request, settings, engine, user, iso, change)


@router.post("/admin/issues/{week}/hold")
async def issue_hold(
    request: Request, week: str, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    form = await checked_form(request, user)
    iso = _week(week)

    def change() -> str:
        reason = _text(form.get("reason")).strip() or None
        approval.hold(
            engine, settings, iso, actor=user.editor.email, now=db.utcnow(), reason=reason
        )
        return f"Held {iso}: it is not sent until an editor approves it."

    return await _act(request, settings, engine, user, iso, change)


@router.post("/admin/issues/{week}/test")
async def issue_test(
    request: Request, week: str, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    await checked_form(request, user)
    iso = _week(week)
    to = user.editor.email

    def change() -> str:
        approval.send_test_copy(
            engine, settings, make_transport(settings, engine), iso, to, actor=to, now=db.utcnow()
        )
        return f"A test copy of {iso} went to {to}."

    return await _act(request, settings, engine, user, iso, change)


@router.post("/admin/issues/{week}/build")
async def issue_build(
    request: Request, week: str, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    await checked_form(request, user)
    iso = _week(week)

    def change() -> str:
        now = db.utcnow()
        done = prepare(
            engine, settings, iso, now=now, glossary=lambda: usable_glossary(settings)[0]
        )
        if done.built:
            audit.record(
                engine, actor=user.editor.email, action="issue.build", target=str(iso),
                detail=done.issue.featured_slug, now=now,
            )  # fmt: skip
            return f"Built {iso} with {done.issue.featured_slug}."
        return f"{iso} was built already."

    return await _act(request, settings, engine, user, iso, change)


@router.post("/admin/issues/{week}/send")
async def issue_send(
    request: Request, week: str, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    form = await checked_form(request, user)
    iso = _week(week)
    issue = await run_in_threadpool(get_issue, engine, iso)
    if issue is None or issue.html is None:
        return await _refuse(request, settings, engine, user, iso, "Build the issue first.")
    if approval.needs_approval(settings, issue):
        text = f"{iso} needs approval before it is sent: approve it first."
        return await _refuse(request, settings, engine, user, iso, text)
    if form.get("confirm") != "yes":  # the first press only asks
        early = iso > current_week(db.utcnow(), settings.zone)
        return await run_in_threadpool(
            lambda: _page(request, settings, engine, user, iso, confirm_send=True, early=early)
        )
    runner: SendRunner = _runner(request)
    if not runner.start(settings, iso, actor=user.editor.email, force=True):
        text = "Another send is running from the desk; wait until it has finished."
        return await _refuse(request, settings, engine, user, iso, text, status_code=409)
    await run_in_threadpool(
        lambda: audit.record(
            engine, actor=user.editor.email, action="issue.send", target=str(iso), now=db.utcnow()
        )
    )
    notice = f"Sending {iso} has started; reload this page to follow it."
    return await run_in_threadpool(
        lambda: _page(request, settings, engine, user, iso, notice=notice)
    )


def _runner(request: Request) -> SendRunner:
    runner: SendRunner = request.app.state.desk_sends  # made by install_desk, one per app
    return runner


async def _act(
    request: Request,
    settings: Settings,
    engine: Engine,
    user: DeskUser,
    week: IsoWeek,
    change: Callable[[], str],
) -> Response:
    """Run one change in a worker thread; the issue's page with its notice or its refusal."""
    try:
        notice = await run_in_threadpool(change)
    except (editing.EditError, approval.ApprovalError, SendError, QualityError, RenderError) as exc:
        return await _refuse(request, settings, engine, user, week, str(exc))
    return await run_in_threadpool(
        lambda: _page(request, settings, engine, user, week, notice=notice)
    )


async def _refuse(
    request: Request,
    settings: Settings,
    engine: Engine,
    user: DeskUser,
    week: IsoWeek,
    text: str,
    *,
    status_code: int = 422,
) -> Response:
    error = text[:1].upper() + text[1:]
    return await run_in_threadpool(
        lambda: _page(request, settings, engine, user, week, error=error, status_code=status_code)
    )


def _page(
    request: Request,
    settings: Settings,
    engine: Engine,
    user: DeskUser,
    week: IsoWeek,
    *,
    view: str = "desktop",
    status_code: int = 200,
    **context: Any,
) -> Response:
    context.setdefault("confirm_send", False)
    context.setdefault("early", False)
    issue = get_issue(engine, week)
    planned = None
    if issue is None:
        found = coming(engine, settings, start=week, weeks=1)
        planned = found[0] if found else None
    latest = _runner(request).latest
    return desk_page(
        request,
        settings,
        user,
        "issue",
        status_code=status_code,
        active="issues",
        week=week,
        issue=issue,
        planned=planned,
        preview=preview_html(settings, issue) if issue is not None and issue.html else None,
        view="phone" if view == "phone" else "desktop",
        counts=issue_deliveries(engine, week) if issue is not None else None,
        # Numbers once the send began (sending, paused, failed or sent): issue_stats' own rule.
        numbers=(
            issue_panel(issue, issue_stats(engine, settings, week))
            if issue is not None and issue.send_started_at is not None
            else None
        ),
        percent=percent,
        tests=audit.recent(engine, target=str(week), action_prefix="issue.test_send", limit=10),
        history=audit.recent(engine, target=str(week), limit=20),
        desk_send=latest if latest is not None and latest.week == week else None,
        require_approval=settings.require_approval,
        subject_warn=settings.subject_warn_length,
        when=lambda at: local_time(settings, at),
        **context,
    )


def _week(text: str) -> IsoWeek:
    try:
        return parse_week(text)
    except ValueError:
        raise StarletteHTTPException(404) from None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
