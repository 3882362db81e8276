"""Looking at an issue before and after it goes out: `build`, `preview`, `check`, `deliveries`,
and an editor's `issue subject`.

Nothing here sends to subscribers (`digest send` is in digest.cli.sending).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from digest.cli._common import console, db, err, fail, invocation, week_argument, week_option


def build_command(
    ctx: typer.Context,
    week: Annotated[
        str | None, typer.Option("--week", help="ISO week, e.g. 2026-W48 (default: this week).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the files to.")] = Path(
        "build"
    ),
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build again, until sending has started.")
    ] = False,
) -> None:
    """Build the week's issue; write the mail, its archive page, the archive index and feed."""
    from digest.campaign.build import build_site
    from digest.config import GLOSSARY_PATH
    from digest.core.checks import QualityError
    from digest.core.render import RenderError
    from digest.store.issues import InvalidTransition, get_issue

    inv = invocation(ctx)
    wk = inv.week_or_this(week)
    conf, gloss, eng = inv.settings(), inv.glossary(), inv.engine()
    before = get_issue(eng, wk)
    try:
        output = build_site(eng, conf, gloss, wk, out, now=db.utcnow(), rebuild=rebuild)
    except (QualityError, RenderError, InvalidTransition, ValueError) as exc:
        fail(str(exc))
        return
    record = output.record
    if before is not None and before.built_at == record.built_at:
        console.print(f"{wk}: already {record.status}: {record.featured_slug} (--rebuild to redo)")
    else:
        console.print(f"{wk}: built: {record.featured_slug} ({record.pick_source})")
    console.print(f"subject: {record.subject}", markup=False, soft_wrap=True)
    console.print(f"html: {len((record.html or '').encode()) / 1024:.1f} KB")
    # The glossary site is a page per term: named as one folder, not hundreds of lines.
    site = out / GLOSSARY_PATH.strip("/")
    pages = [path for path in output.files if path.is_relative_to(site)]
    for path in output.files:
        if not path.is_relative_to(site):
            console.print(str(path), markup=False, soft_wrap=True)
    if pages:
        console.print(
            f"{site}/: {len(pages)} glossary pages (index.html and <slug>/index.html per term)",
            markup=False,
            soft_wrap=True,
        )


def _gui_browser() -> bool:
    """Whether webbrowser would open a window. Without a display it falls back to console
    browsers (lynx, w3m) that take over the terminal, so then the path is printed instead."""
    if os.environ.get("BROWSER"):
        return True
    if os.name == "posix" and not sys.platform.startswith("darwin"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def preview_command(
    ctx: typer.Context,
    week: Annotated[
        str | None,
        typer.Option(
            "--week",
            help="ISO week, e.g. 2026-W48 (default: the next issue to go out: this week's, "
            "or the first later week not sent yet).",
        ),
    ] = None,
) -> None:
    """Render an issue into a temporary folder and open it, as a sample reader gets it;
    nothing is stored."""
    import tempfile
    import webbrowser

    from digest.campaign.build import next_issue_week, preview_issue, write_build
    from digest.core.render import RenderError

    inv = invocation(ctx)
    conf, gloss, eng = inv.settings(), inv.glossary(), inv.engine()
    if week is not None:
        wk = week_argument(week)
    else:
        this = inv.this_week()
        wk = next_issue_week(eng, this)
        why = "this week's issue" if wk == this else f"the next issue; {this} was sent"
        console.print(f"previewing {wk} ({why})", markup=False)
    try:
        rendered, problems = preview_issue(eng, conf, gloss, wk, now=db.utcnow())
    except (RenderError, ValueError) as exc:
        fail(str(exc))
        return
    out = Path(tempfile.mkdtemp(prefix=f"digest-preview-{wk}-"))
    write_build(out, rendered, conf)
    for problem in problems:
        err.print(f"warning: {problem}", markup=False, soft_wrap=True)
    console.print(f"{wk}: {rendered.subject}", markup=False, soft_wrap=True)
    email = out / "email.html"
    if _gui_browser() and webbrowser.open(email.as_uri()):
        console.print(f"opened {email}", markup=False, soft_wrap=True)
    else:
        console.print(f"preview: {email}", markup=False, soft_wrap=True)


def subject_command(
    ctx: typer.Context,
    week: Annotated[str, typer.Argument(help="ISO week, e.g. 2026-W48.")],
    subject: Annotated[
        str | None, typer.Argument(help='The new subject line ("": back to the default).')
    ] = None,
    preheader: Annotated[
        str | None,
        typer.Option("--preheader", help='The inbox preview line ("": back to the default).'),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Subject and preheader back to the default.")
    ] = False,
) -> None:
    """Set one issue's subject line (and preheader) until sending starts; rebuilds keep it.

    The stored mail is rendered again with it and any approval is withdrawn. The default is the
    term file's own `subject:` / `preheader:`, else `<Title> — <newsletter name>` and the
    term's summary. Without SUBJECT, --preheader or --reset: show the current lines.
    """
    from digest.campaign.editing import EditError, set_subject
    from digest.store.audit import cli_actor
    from digest.store.issues import get_issue

    wk = week_argument(week)
    inv = invocation(ctx)
    conf, eng = inv.settings(), inv.engine()
    if reset and (subject is not None or preheader is not None):
        fail("--reset puts both lines back to the default; give it without SUBJECT or --preheader")
    before = get_issue(eng, wk)
    if subject is None and preheader is None and not reset:
        if before is None:
            fail(f"there is no issue for {wk}; build it first (`digest build --week {wk}`)")
            return
        _print_lines("subject", before.subject, before.subject_override, before.preheader)
        return
    if reset:
        subject, preheader = "", ""
    try:
        after = set_subject(
            eng,
            conf,
            wk,
            subject=subject,
            preheader=preheader,
            actor=cli_actor(),
            now=db.utcnow(),
        )
    except EditError as exc:
        fail(str(exc))
        return
    assert before is not None  # set_subject refuses a week without an issue
    console.print(
        f"old subject: {before.subject or '(not built yet)'}", markup=False, soft_wrap=True
    )
    _print_lines("new subject", after.subject, after.subject_override, after.preheader)
    if before.approved:
        console.print(f"{wk}: approval withdrawn; approve it again before it is sent", markup=False)


def _print_lines(
    label: str, subject: str | None, override: str | None, preheader: str | None
) -> None:
    """The issue's lines as the mail has them; before its build, only the editor's override."""
    if subject is None:
        shown = override or "the default, once built"
        console.print(f"{label}: {shown} (not built yet)", markup=False, soft_wrap=True)
        return
    console.print(f"{label}: {subject}", markup=False, soft_wrap=True)
    if preheader is not None:
        console.print(f"preheader: {preheader}", markup=False, soft_wrap=True)


def check_command(
    ctx: typer.Context,
    week: Annotated[
        str | None, typer.Option("--week", help="ISO week, e.g. 2026-W17 (default: this week).")
    ] = None,
) -> None:
    """Check the week's built issue as `digest send` will; exit 1 listing every problem.

    The mail (size, lang, absolute links, image alt text, text contrast, the text part), its
    archive page, the first batch's real messages (List-Unsubscribe headers, markers, signed
    links), the RSS, Atom and JSON feeds, and with DKIM set a signed sample mail (its TXT record
    is printed), and with SMTP a session with the relay (nothing sent). Notes (texts under WCAG AA's contrast but at 3:1 or more, a mail close to
    Gmail's clip size, a long subject) are printed and do not fail it.
    """
    from digest.campaign.preflight import check_issue
    from digest.delivery.dkim import sample_check
    from digest.delivery.smtp import relay_check

    inv = invocation(ctx)
    wk = inv.week_or_this(week)
    notes: list[str] = []
    problems = check_issue(inv.engine(), inv.settings(), wk, now=db.utcnow(), notes=notes)
    for note in notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    for ok, lines in (
        sample_check(inv.settings(), now=db.utcnow()),  # DKIM: the TXT record to publish
        relay_check(inv.settings()),  # SMTP: the relay answers, TLS and login as a send's
    ):
        if ok:  # nothing to say without DKIM or SMTP; a failure is a problem
            for line in lines:
                console.print(line, markup=False, soft_wrap=True)
        else:
            problems += lines
    for problem in problems:
        console.print(f"- {problem}", markup=False, soft_wrap=True)
    if problems:
        fail(f"{wk}: {len(problems)} problem{'s' * (len(problems) != 1)}")
    console.print(f"{wk}: no problems found", markup=False)


def deliveries_command(
    ctx: typer.Context,
    email: Annotated[
        str | None, typer.Argument(help="A reader's address: what they received and when.")
    ] = None,
    week: Annotated[
        str | None, typer.Option("--week", help="ISO week, e.g. 2026-W17 (default: this week).")
    ] = None,
) -> None:
    """The delivery log: an issue's deliveries by status, or one reader's history.

    Without EMAIL: counts for the week's issue (bounced = readers with a bounce or drop event
    for it, or who got it and are bounced now). With EMAIL: each issue they were due, its
    status, when it went out, the provider's message id and events (--week: only that week).
    """
    from digest.store.deliveries import issue_deliveries, reader_log, unsent_readers

    wk = week_option("--week", week)
    inv = invocation(ctx)
    eng = inv.engine()
    if email is None:
        wk = wk or inv.this_week()
        counts = issue_deliveries(eng, wk)
        if counts is None:
            fail(f"there is no issue for {wk}")
            return
        console.print(f"{wk}: issue {counts.issue_status}", markup=False)
        shown = [("sent", counts.sent), ("failed", counts.failed), ("skipped", counts.skipped)]
        shown += [("bounced", counts.bounced)]
        if counts.refused:
            shown.append(("refused", counts.refused))
        if counts.claimed:
            shown.append(("in flight", counts.claimed))
        for label, n in shown:
            console.print(f"{label:<13}{n:>8}", markup=False)
        unsent, total = unsent_readers(eng, wk)
        if unsent:  # each reader the send could not reach, with the provider's (relay's) words
            console.print("not sent:", markup=False)
        for address, status, error in unsent:
            line = f"  {address or '(erased)'}  {status}  ({error or 'no reason recorded'})"
            console.print(line, markup=False, soft_wrap=True)
        if total > len(unsent):
            console.print(f"  … and {total - len(unsent)} more", markup=False)
        return
    history = reader_log(eng, email)
    if history is None:
        fail(f"no subscriber {email.strip()!r}")
        return
    sub = history.subscriber
    console.print(f"{sub.email}: {sub.status}", markup=False)
    rows = [d for d in history.deliveries if wk is None or d.week == wk]
    if not rows:
        console.print("no deliveries" + (f" for {wk}" if wk else ""))
    for d in rows:  # one line each, never cut: message ids are for pasting into the provider
        line = f"{d.week}  {d.status:<7}  "
        line += f"{d.sent_at:%Y-%m-%d %H:%M} UTC" if d.sent_at else "not sent"
        if d.message_id:
            line += f"  id {d.message_id}"
        if d.events:
            line += "  events: " + ", ".join(
                f"{e.kind} {e.occurred_at:%Y-%m-%d %H:%M}" for e in d.events
            )
        if d.error:
            line += f"  ({d.error})"
        console.print(line, markup=False, soft_wrap=True)
    loose = [e for e in history.events if e.week is None]
    for event in loose:
        detail = f" ({event.detail})" if event.detail else ""
        console.print(
            f"event: {event.kind} {event.occurred_at:%Y-%m-%d %H:%M}{detail}",
            markup=False,
            soft_wrap=True,
        )
