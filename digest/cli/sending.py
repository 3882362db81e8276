"""Sending an issue: `digest send` (with --dry-run, --to, --retry-failed, --force) and
`digest issue` (approve, hold, resume, cancel).

The `issue` commands act on one issue's send, so they share its exit codes and its signal wiring
here. Building before a send is the campaign's rule (`lifecycle.prepare`); whether it may go
(approval, an early week) is `campaign.approval`'s.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer

from digest.cli._common import (
    Invocation,
    console,
    db,
    err,
    fail,
    invocation,
    send_exit_code,
    week_argument,
    week_option,
)
from digest.cli._signals import stop_on
from digest.model.weeks import IsoWeek

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from digest.config import Settings

issue_app = typer.Typer(
    help="One issue's life: approve or hold it, set its subject, resume a stopped send, cancel.",
    no_args_is_help=True,
)

# Exit status of a send refused before anything went out: it needs approval, or it is for a
# week still to come and --force was not given. Distinct from 1 (failed): nothing happened.
REFUSED = 3


def send_command(
    ctx: typer.Context,
    week: Annotated[
        str | None, typer.Option("--week", help="ISO week, e.g. 2026-W17 (default: this week).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Count who would get it, size the first request; send nothing."
        ),
    ] = False,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="ADDRESS",
            help="Send one test copy (subject prefixed [TEST]) to ADDRESS; recorded in the "
            "audit log as a test send, never in the delivery ledger.",
        ),
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Send again only to readers whose delivery failed; the issue's state stays.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Send a future week's issue now, early. Never skips approval."
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar, even on a terminal.")
    ] = False,
) -> None:
    """Send the week's issue to every subscriber once (building it first if needed).

    Safe to run again: a paused or interrupted send resumes where it stopped, and nobody gets the
    issue twice. Ctrl-C finishes the current batch and pauses. An issue that needs approval
    (DIGEST_REQUIRE_APPROVAL, or held) is refused until `digest issue approve WEEK`; a future
    week's issue needs --force. Exit status: 0 sent, 2 paused or busy in another process (run
    again), 1 failed, 3 refused before sending (needs approval, or early without --force).
    """
    from digest.campaign.approval import ApprovalError, check_send, send_test_copy
    from digest.campaign.lifecycle import send
    from digest.cli.progress import progress_bar
    from digest.delivery import make_transport
    from digest.delivery.personalise import SendError
    from digest.delivery.samples import plan_send
    from digest.delivery.transport import TransportError
    from digest.store.audit import cli_actor
    from digest.store.issues import get_issue

    if dry_run and to:
        fail("--dry-run and --to do not go together: a test send sends one mail")
    if retry_failed and (dry_run or to or force):
        fail("--retry-failed goes alone: it re-sends the failed deliveries of an issue")
    if force and (dry_run or to):
        fail("--force is for a real send: --dry-run and --to never send early to the readers")
    inv = invocation(ctx)
    conf = inv.settings()
    wk = week_option("--week", week) or inv.this_week()
    eng = inv.engine()
    try:
        transport = make_transport(conf, eng)
    except ValueError as exc:
        fail(str(exc))
        return
    if retry_failed:
        _retry_failed(eng, conf, wk)
        return
    if not (to or dry_run):
        try:  # an early week is refused before it is built, not after
            check_send(conf, get_issue(eng, wk), wk, now=db.utcnow(), force=force)
        except ApprovalError as exc:
            fail(str(exc), REFUSED)
    _build_if_needed(inv, eng, conf, wk)
    try:
        if to:
            result = send_test_copy(
                eng, conf, transport, wk, to, actor=cli_actor(), now=db.utcnow()
            )
            console.print(
                f"{wk}: test copy sent to {to} via {transport.name}"
                + (f" (message id {result.message_id})" if result.message_id else "")
                + "; recorded in the audit log",
                markup=False,
                soft_wrap=True,
            )
            return
        if dry_run:
            plan_ = plan_send(eng, conf, transport, wk, now=db.utcnow())
            console.print(
                f"{wk}: {plan_.recipients:,} subscriber{'s' * (plan_.recipients != 1)} would get "
                f"this issue via {transport.name} ({plan_.already_done:,} already handled), in "
                f"{plan_.batches:,} batch{'es' * (plan_.batches != 1)} of up to "
                f"{plan_.batch_size:,}; first request {plan_.first_batch_bytes:,} bytes",
                markup=False,
                soft_wrap=True,
            )
            return
    except (SendError, TransportError) as exc:
        fail(str(exc))
        return

    with stop_on(signal.SIGINT, signal.SIGTERM) as stop:
        try:
            with progress_bar(f"sending {wk}", unit="readers", quiet=quiet) as bar:
                summary = send(
                    eng,
                    conf,
                    transport,
                    wk,
                    now=db.utcnow,
                    stop=stop,
                    progress=bar.update,
                    force=force,
                )
        except ApprovalError as exc:  # held or unapproved since the check above
            fail(str(exc), REFUSED)
            return
        except SendError as exc:
            fail(str(exc))
            return
    if summary.took_over:  # a killed sender's lease, taken over without waiting for it
        console.print(f"{wk}: {summary.took_over}", markup=False, soft_wrap=True)
    counts = f"sent {summary.sent:,}, skipped {summary.skipped:,}, failed {summary.failed:,}"
    if summary.refused:
        counts += f", refused {summary.refused:,} (`digest deliveries ADDRESS` says why)"
    if summary.uncertain:
        counts += f", uncertain {summary.uncertain:,} (not re-sent; see docs/delivery.md)"
    console.print(
        f"{wk}: {counts} in {summary.duration:.1f} s "
        f"({summary.batches} batch{'es' * (summary.batches != 1)}, {summary.api_calls} "
        f"request{'s' * (summary.api_calls != 1)}); {summary.total_sent:,} sent in all",
        markup=False,
        soft_wrap=True,
    )
    code = send_exit_code(summary.status)
    if code == 0:
        console.print(f"{wk}: sent" + (f" ({summary.reason})" if summary.reason else ""))
        return
    if code == 1:
        fail(f"{wk}: failed: {summary.reason}", code)
    again = f"run `digest send --week {wk}` again"
    if summary.status == "busy":
        # The holder is alive, on another host, or cannot be checked: its lease decides.
        again = f"{again} once that process has finished or its lease has run out"
    err.print(f"{wk}: {summary.status}: {summary.reason}; {again}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def _retry_failed(eng: Engine, conf: Settings, wk: IsoWeek) -> None:
    """`digest send --retry-failed`: re-send failed rows only; exit codes as `digest send`."""
    from digest.delivery import make_transport
    from digest.delivery.personalise import SendError
    from digest.delivery.runner import retry_failed

    with stop_on(signal.SIGINT) as stop:
        try:
            summary = retry_failed(
                eng, conf, make_transport(conf, eng), wk, now=db.utcnow, stop=stop
            )
        except SendError as exc:
            fail(str(exc))
            return
    console.print(
        f"{wk}: retried failed deliveries: sent {summary.sent:,}, skipped {summary.skipped:,}, "
        f"failed {summary.failed:,}; {summary.total_sent:,} sent in all ({summary.reason})",
        markup=False,
        soft_wrap=True,
    )
    if code := send_exit_code(summary.status):
        raise typer.Exit(code)


def _build_if_needed(inv: Invocation, eng: Engine, conf: Settings, wk: IsoWeek) -> None:
    """The campaign's build-before-send rule (`lifecycle.prepare`), with the CLI's glossary
    loader (it prints every term error) and the build's own errors shown as they are."""
    from digest.campaign.lifecycle import prepare

    try:
        prepared = prepare(eng, conf, wk, now=db.utcnow(), glossary=inv.glossary)
    except typer.Exit:
        raise
    except Exception as exc:  # the build's own errors say what is wrong; show them as they are
        fail(f"cannot build the issue for {wk}: {exc}")
        return
    if prepared.built:
        console.print(f"{wk}: built")


@issue_app.command("approve")
def issue_approve(
    ctx: typer.Context, week: Annotated[str, typer.Argument(help="ISO week, e.g. 2026-W17.")]
) -> None:
    """Approve a built or held issue's content so it may be sent (DIGEST_REQUIRE_APPROVAL).

    Says when it goes out; one held past its send time is sent by `digest run` within 15
    minutes while its fire is in the grace window, else by `digest send --week WEEK`.
    """
    from digest.campaign.approval import ApprovalError, after_approval, approve
    from digest.store.audit import cli_actor

    wk = week_argument(week)
    inv = invocation(ctx)
    conf = inv.settings()
    now = db.utcnow()
    try:
        issue = approve(inv.engine(), conf, wk, actor=cli_actor(), now=now)
    except ApprovalError as exc:
        fail(str(exc))
        return
    console.print(
        f"{wk}: approved by {issue.approved_by}; {after_approval(conf, issue, now)}",
        markup=False,
        soft_wrap=True,
    )


@issue_app.command("hold")
def issue_hold(
    ctx: typer.Context,
    week: Annotated[str, typer.Argument(help="ISO week, e.g. 2026-W17.")],
    reason: Annotated[
        str | None, typer.Option(help="Why, in one line; shown by `digest status`.")
    ] = None,
) -> None:
    """Hold a built issue: nothing sends it until it is approved again.

    Any approval is withdrawn; the reason is shown by `digest status`.
    """
    from digest.campaign.approval import ApprovalError, hold
    from digest.store.audit import cli_actor

    wk = week_argument(week)
    inv = invocation(ctx)
    try:
        issue = hold(
            inv.engine(), inv.settings(), wk, actor=cli_actor(), now=db.utcnow(), reason=reason
        )
    except ApprovalError as exc:
        fail(str(exc))
        return
    console.print(
        f"{wk}: held ({issue.status_reason}); `digest issue approve {wk}` releases it",
        markup=False,
        soft_wrap=True,
    )


@issue_app.command("resume")
def issue_resume(
    ctx: typer.Context,
    week: Annotated[str, typer.Argument(help="ISO week, e.g. 2026-W17.")],
    force: Annotated[
        bool, typer.Option("--force", help="Send a future week's issue now, early.")
    ] = False,
) -> None:
    """Send a paused issue on from where it stopped; nobody gets it twice. Ctrl-C pauses again.

    An issue that needs approval is refused, as by `digest send`. Exit status: 0 sent, 2 paused
    or busy in another process, 1 failed, 3 refused (needs approval, or early without --force).
    """
    from digest.campaign.approval import ApprovalError
    from digest.campaign.lifecycle import send_week
    from digest.delivery.personalise import SendError
    from digest.store.issues import InvalidTransition

    wk = week_argument(week)
    conf = invocation(ctx).ops_settings()
    with stop_on(signal.SIGINT) as stop:
        try:
            result = send_week(conf, wk, stop=stop, force=force)
        except ApprovalError as exc:
            fail(str(exc), REFUSED)
            return
        except (InvalidTransition, SendError) as exc:
            fail(str(exc))
            return
    summary = result.summary
    assert summary is not None
    console.print(
        f"{wk}: {summary.status} — {summary.sent} sent, {summary.skipped} skipped, "
        f"{summary.failed} failed this run; {summary.total_sent} sent in all"
        + (f" ({summary.reason})" if summary.reason else ""),
        markup=False,
    )
    if code := send_exit_code(summary.status):  # the same exit codes as `digest send`
        raise typer.Exit(code)


@issue_app.command("cancel")
def issue_cancel(
    ctx: typer.Context,
    week: Annotated[str, typer.Argument(help="ISO week, e.g. 2026-W17.")],
    reason: Annotated[str, typer.Option(help="Why; shown by `digest status`.")] = "cancelled",
) -> None:
    """Mark an issue failed so no job sends it (planned, built, held, sending or paused)."""
    from digest.store.issues import InvalidTransition, transition

    wk = week_argument(week)
    try:
        issue = transition(invocation(ctx).engine(), wk, "failed", reason, now=db.utcnow())
    except InvalidTransition as exc:
        fail(str(exc))
        return
    console.print(f"{issue.week}: failed ({issue.status_reason})", markup=False)
