"""Starting out: `digest init` (a new newsletter folder) and `digest demo` (the pipeline, now).

Both work on a fresh checkout with the embedded defaults: no API key, SQLite, the outbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from digest.cli._common import console, db, fail, invocation
from digest.model.weeks import current_week

DEMO_READERS = (
    ("ada@example.com", "Ada"),
    ("grace@example.com", "Grace"),
    ("alan@example.com", "Alan"),
)


def init_command(
    directory: Annotated[Path, typer.Argument(help="Folder for the newsletter; made if missing.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Add what is missing to a folder that is not empty; never overwrites."
        ),
    ] = False,
) -> None:
    """Start a newsletter in DIRECTORY: starter terms/, digest.toml, templates/, .gitignore."""
    import shlex

    from digest.scaffold import ScaffoldError, scaffold

    try:
        done = scaffold(directory, force=force)
    except ScaffoldError as exc:
        fail(str(exc))
        return
    except OSError as exc:  # a read-only or full disk: say which path, not a traceback
        fail(f"cannot write {exc.filename or directory}: {exc.strerror or exc}")
        return
    for path in done.created:
        console.print(f"created {path}", markup=False, soft_wrap=True)
    for path in done.kept:
        console.print(f"kept {path} (already there)", markup=False, soft_wrap=True)
    console.print(
        f"next: cd {shlex.quote(str(directory))} && digest demo", markup=False, soft_wrap=True
    )


def demo_command(ctx: typer.Context) -> None:
    """Seed three demo readers, then build and send this week's issue (the weekly job, now).

    On the embedded defaults that means SQLite under subscribers/ and .eml files in outbox/,
    so a fresh checkout shows the whole pipeline without an API key. Safe to run again: the
    readers are added once and an issue is never sent twice.
    """
    import contextlib

    from digest.campaign.lifecycle import run_weekly
    from digest.model.subscriber import AlreadySuppressed
    from digest.store.issues import get_issue
    from digest.store.subscribers import add_confirmed

    inv = invocation(ctx)
    conf = inv.settings()
    if not conf.terms_dir.is_dir():  # before engine(): no database left in the wrong folder
        fail(
            f"no glossary here: {conf.terms_dir} is not a folder (in {Path.cwd()}); run "
            "'digest init DIR' to start a newsletter and 'digest demo' inside DIR, or point "
            "--terms / DIGEST_TERMS_DIR at a glossary"
        )
    eng = inv.engine()
    now = db.utcnow()
    for email, name in DEMO_READERS:
        with contextlib.suppress(AlreadySuppressed):
            add_confirmed(eng, email, name=name, source="demo", now=now)
    week = current_week(now, conf.zone)
    result = run_weekly(conf, week, now=now)
    issue = get_issue(eng, week)
    featured = issue.featured_slug if issue else "-"
    console.print(f"{week}: featured {featured}; issue {result.status}", markup=False)
    if result.summary is not None:
        s = result.summary
        console.print(
            f"sent {s.sent:,}, skipped {s.skipped:,}, failed {s.failed:,} "
            f"({s.total_sent:,} sent in all) in {s.duration:.2f}s",
            markup=False,
        )
    if conf.transport == "outbox":
        files = sorted(Path(conf.outbox_dir).glob("*.eml"))
        console.print(f"{len(files)} message(s) in {conf.outbox_dir}/", markup=False)
    if issue is None or issue.status not in ("sent", "sending"):
        reason = issue.status_reason if issue else "no issue was built"
        fail(f"the issue was not sent: {reason}")
