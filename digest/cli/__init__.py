"""The `digest` command: the Typer app, its global options, and the table of its commands.

Each command group lives in its own module here and only turns arguments into one library call
and the result into text; this module puts them together in the order `digest --help` lists them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from digest.cli import editors, issues, ops, project, queue, sending, stats, subscribers, terms
from digest.cli._common import Invocation

app = typer.Typer(
    help="digest: a weekly 'term of the week' newsletter built from an AI glossary.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    ctx: typer.Context,
    terms_dir: Annotated[
        Path | None,
        typer.Option("--terms", help="Terms folder (env DIGEST_TERMS_DIR, default ./terms)."),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="Settings file (env DIGEST_CONFIG, default ./digest.toml)."),
    ] = None,
) -> None:
    # The options ride on the context; each command's settings are built from them and the env
    # as it is now (not as an earlier invocation in this process left it).
    config = sys.modules.get("digest.config")  # not loaded yet: nothing cached to clear
    if config is not None:
        config.get_settings.cache_clear()
    ctx.obj = Invocation(terms=terms_dir, config=config_file)


# Top-level commands, in the order of `digest --help`; then the command groups.
app.command("plan")(queue.plan_command)
app.command("run")(ops.run_command)
app.command("status")(ops.status_command)
app.command("send")(sending.send_command)
app.command("build")(issues.build_command)
app.command("preview")(issues.preview_command)
app.command("serve")(ops.serve_command)
app.command("check")(issues.check_command)
app.command("deliveries")(issues.deliveries_command)
app.command("stats")(stats.stats_command)
app.command("init")(project.init_command)
app.command("demo")(project.demo_command)

app.add_typer(terms.app, name="terms")
app.add_typer(ops.db_app, name="db")
app.add_typer(queue.app, name="queue")
sending.issue_app.command("subject")(issues.subject_command)
app.add_typer(sending.issue_app, name="issue")
app.add_typer(subscribers.app, name="subscribers")
app.add_typer(editors.app, name="editors")
